"""Selecting: turn KVA attributions into the trainable nodes (the LoKI paper's Selecting stage).

``select_nodes(attributions, q, strategy)`` is the entry point; ``read_selection_file`` is the
one strict reader of the JSON it leaves (or the upstream repository's plain list of lists) that
every later stage uses.
"""

from loki_pipeline.select.naming import STRATEGIES, format_q, selection_filename
from loki_pipeline.select.selection_file import (
    Selection,
    check_fits,
    check_fits_checkpoint,
    checkpoint_shape,
    load_selection,
    read_selection,
    read_selection_file,
    save_selection,
    validate_selection,
)
from loki_pipeline.select.strategies import (
    count_nodes,
    extreme_mask,
    keep_most_frequent,
    select_from_counts,
    select_nodes,
)

__all__ = [
    "STRATEGIES",
    "Selection",
    "check_fits",
    "check_fits_checkpoint",
    "checkpoint_shape",
    "count_nodes",
    "extreme_mask",
    "format_q",
    "keep_most_frequent",
    "load_selection",
    "read_selection",
    "read_selection_file",
    "save_selection",
    "select_from_counts",
    "select_nodes",
    "selection_filename",
    "validate_selection",
]
