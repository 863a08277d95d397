"""Selecting: turn KVA attributions into the trainable nodes (the LoKI paper's Selecting stage).

``select_nodes(attributions, q, strategy)`` is the entry point; ``load_selection`` reads the
JSON it leaves (or the upstream repository's plain list of lists).
"""

from loki_pipeline.select.io import (
    inspect_kva,
    load_selection,
    read_selection,
    save_selection,
    validate_selection,
)
from loki_pipeline.select.naming import STRATEGIES, format_q, selection_filename
from loki_pipeline.select.strategies import (
    count_nodes,
    extreme_mask,
    keep_most_frequent,
    select_from_counts,
    select_nodes,
)

__all__ = [
    "STRATEGIES",
    "count_nodes",
    "extreme_mask",
    "format_q",
    "inspect_kva",
    "keep_most_frequent",
    "load_selection",
    "read_selection",
    "save_selection",
    "select_from_counts",
    "select_nodes",
    "selection_filename",
    "validate_selection",
]
