"""The exception types the pipeline raises for bad input and for failed writes.

Every check that rejects a user's config, file or argument raises ``LokiInputError`` with a
message naming the offending file or value and what was expected, before expensive work starts.
A write that fails (disk full, I/O error, quota) raises ``LokiWriteError`` naming the output and
saying that nothing was marked finished. The CLI prints both without a traceback.
"""


class LokiInputError(ValueError):
    """Bad user input: config, data file, model, selection or argument."""


class LokiWriteError(OSError):
    """An output could not be written; nothing half-written was left as if finished."""


class LokiBusyError(LokiInputError):
    """An output is being written by another run (its lock is held)."""
