"""The one exception type the pipeline raises for bad input.

Every check that rejects a user's config, file or argument raises ``LokiInputError`` with a
message naming the offending file or value and what was expected, before expensive work starts.
The CLI prints it without a traceback.
"""


class LokiInputError(ValueError):
    """Bad user input: config, data file, model, selection or argument."""
