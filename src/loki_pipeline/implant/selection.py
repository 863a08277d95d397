"""The selection file as the Implanting stage reads it: the Selecting stage's one strict reader.

``read_selection`` is :func:`loki_pipeline.select.io.read_selection_file` (the pipeline's JSON
object or the upstream list of lists, duplicates, non-integers and out-of-range indices refused),
so ``train``, ``suppress`` and ``select --check`` accept and refuse the same files with the same
messages. Kept here so the Implanting stage's public names stay where they were.
"""

from __future__ import annotations

from loki_pipeline.select.io import (
    Selection,
    check_fits,
    check_fits_checkpoint,
    checkpoint_shape,
)
from loki_pipeline.select.io import read_selection_file as read_selection

__all__ = ["Selection", "check_fits", "check_fits_checkpoint", "checkpoint_shape", "read_selection"]
