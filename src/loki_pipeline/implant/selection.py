"""Read a selection file (the Selecting stage's output) and check that it fits a model.

Two formats load: the pipeline's JSON object
``{"model", "strategy", "q", "num_layers", "nodes_per_layer", "positions": [[...], ...]}``
and the upstream repository's plain list of per-layer lists.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError


@dataclass(frozen=True)
class Selection:
    """One sorted list of trainable node (row) indices per layer, plus where it came from."""

    positions: list[list[int]]
    model: str | None = None
    strategy: str | None = None
    q: float | None = None
    num_layers: int | None = None
    nodes_per_layer: int | None = None
    path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(len(p) for p in self.positions)


def read_selection(path: str | os.PathLike) -> Selection:
    """Parse a selection file; ``LokiInputError`` if it is not one of the two formats."""
    path = Path(path)
    if not path.is_file():
        raise LokiInputError(f"selection file {path} does not exist")
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise LokiInputError(f"selection file {path} is not valid JSON: {err}") from err
    meta: dict[str, Any] = {}
    if isinstance(obj, dict):
        if "positions" not in obj:
            raise LokiInputError(f"selection file {path}: expected a 'positions' key")
        meta = {k: obj.get(k) for k in ("model", "strategy", "q", "num_layers", "nodes_per_layer")}
        positions = obj["positions"]
    else:
        positions = obj
    if not isinstance(positions, list) or not all(isinstance(p, list) for p in positions):
        raise LokiInputError(
            f"selection file {path}: positions must be a list of per-layer lists of node indices"
        )
    try:
        clean = [sorted({int(i) for i in layer}) for layer in positions]
    except (TypeError, ValueError) as err:
        raise LokiInputError(f"selection file {path}: node indices must be integers") from err
    return Selection(positions=clean, path=str(path), **meta)


def check_fits_checkpoint(selection: Selection, model_dir) -> None:
    """``check_fits`` against a checkpoint's ``config.json``, before any weights are loaded."""
    cfg_path = Path(model_dir) / "config.json"
    if not cfg_path.is_file():
        raise LokiInputError(f"model directory {model_dir} has no config.json")
    cfg = json.loads(cfg_path.read_text())
    check_fits(
        selection,
        int(cfg["num_hidden_layers"]),
        int(cfg["hidden_size"]),
        model_name=f"model {model_dir}",
    )


def check_fits(
    selection: Selection, num_layers: int, d_model: int, *, model_name: str = "model"
) -> None:
    """``LokiInputError`` unless the selection has one list per layer with indices < d_model."""
    src = selection.path or "selection"
    if len(selection.positions) != num_layers:
        raise LokiInputError(
            f"{src} has {len(selection.positions)} layers"
            + (f" (made for {selection.model!r})" if selection.model else "")
            + f" but {model_name} has {num_layers}: the selection was made for another model"
        )
    if selection.nodes_per_layer is not None and int(selection.nodes_per_layer) != d_model:
        raise LokiInputError(
            f"{src} has {selection.nodes_per_layer} nodes per layer"
            + (f" (made for {selection.model!r})" if selection.model else "")
            + f" but {model_name} has d_model={d_model}: the selection was made for another model"
        )
    for layer, rows in enumerate(selection.positions):
        if rows and (rows[0] < 0 or rows[-1] >= d_model):
            raise LokiInputError(
                f"{src}: layer {layer} selects node {rows[-1] if rows[-1] >= d_model else rows[0]}, "
                f"outside 0..{d_model - 1} of {model_name}: the selection was made for another model"
            )
    if selection.total == 0:
        raise LokiInputError(f"{src} selects no nodes at all: nothing would be trained")
