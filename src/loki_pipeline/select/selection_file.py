"""The selection file, the Selecting stage's artifact, and its one strict reader.

Selection file (DESIGN.md)::

    {"model": ..., "strategy": ..., "q": ..., "num_layers": L, "nodes_per_layer": D,
     "positions": [[sorted node indices of layer 0], ..., [layer L-1]]}

The upstream LoKI repository writes only the ``positions`` part (a plain list of lists, not
necessarily sorted). :func:`read_selection_file` is the one strict reader of both formats;
``select --check``, ``train`` and ``suppress`` all use it and :func:`check_fits`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loki_pipeline.errors import LokiInputError
from loki_pipeline.io import file_sha256, write_json

# One reader for every stage: ``select --check``, ``train`` and ``suppress`` all go through
# read_selection_file and check_fits, so a file one of them refuses, all of them refuse, with
# the same message.

#: Metadata a pipeline selection may record, besides ``positions``.
SELECTION_META: tuple[str, ...] = ("model", "strategy", "q", "num_layers", "nodes_per_layer")


@dataclass(frozen=True)
class Selection:
    """One sorted list of node (``down_proj`` row) indices per layer, plus where it came from.

    Metadata fields are ``None`` when the file does not record them (an upstream list of lists
    records none); ``extra`` holds any other keys of the file (``num_samples``, ...).
    """

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

    def as_dict(self) -> dict[str, Any]:
        """The file's content: the metadata it records, its other keys, then ``positions``."""
        doc = {k: getattr(self, k) for k in SELECTION_META if getattr(self, k) is not None}
        return {**doc, **self.extra, "positions": self.positions}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    return "null" if value is None else f"a {type(value).__name__}"


def validate_selection(
    positions: Sequence[Sequence[int]],
    num_layers: int,
    nodes_per_layer: int | None,
    *,
    source: str = "selection",
) -> list[list[int]]:
    """Check a selection's lists: ``num_layers`` lists of distinct integers in ``[0, D)``.

    ``nodes_per_layer=None`` bounds the indices below only (an upstream file records no width).
    Integers are Python or numpy ints; booleans, floats (even ``8.0``) and strings are refused,
    since coercing them would silently train other rows than the file names. Returns the lists
    sorted; raises :class:`LokiInputError` naming ``source``, the layer and the value otherwise.
    """
    if not isinstance(positions, Sequence) or isinstance(positions, (str, bytes)):
        raise LokiInputError(
            f"{source}: positions must be a list of per-layer lists, got {_short(positions)}"
        )
    if len(positions) != num_layers:
        raise LokiInputError(
            f"{source}: has {len(positions)} layer lists but the model has {num_layers} layers"
        )
    out: list[list[int]] = []
    for layer, nodes in enumerate(positions):
        if not isinstance(nodes, Sequence) or isinstance(nodes, (str, bytes)):
            raise LokiInputError(
                f"{source}: layer {layer} is not a list of node indices (got {_short(nodes)})"
            )
        ints: list[int] = []
        for node in nodes:
            if isinstance(node, bool) or not isinstance(node, (int, np.integer)):
                raise LokiInputError(
                    f"{source}: layer {layer} holds {_short(node)} ({_kind(node)}); "
                    "node indices must be integers"
                )
            if node < 0 or (nodes_per_layer is not None and node >= nodes_per_layer):
                bound = "d_model" if nodes_per_layer is None else nodes_per_layer
                raise LokiInputError(
                    f"{source}: layer {layer} node {int(node)} is outside [0, {bound})"
                )
            ints.append(int(node))
        if len(set(ints)) != len(ints):
            dup = sorted({i for i in ints if ints.count(i) > 1})[:5]
            raise LokiInputError(f"{source}: layer {layer} repeats node(s) {dup}")
        out.append(sorted(ints))
    return out


def _check_meta(path: Path, key: str, value: Any) -> Any:
    """A metadata value of the selection file, checked for its type (no coercion)."""
    if key in ("model", "strategy"):
        ok = isinstance(value, str)
        want = "a string"
    elif key == "q":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 100
        want = "a number in (0, 100)"
    else:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        want = "a positive integer"
    if not ok:
        raise LokiInputError(f"{path}: {key} is {_short(value)}, expected {want}")
    return value


def read_selection_file(path: str | os.PathLike) -> Selection:
    """Read and check a selection file: the pipeline's JSON object or an upstream list of lists.

    The one strict reader every stage uses: each layer a list, every index a distinct
    non-negative JSON integer (below the file's ``nodes_per_layer`` when it records one), and
    the recorded metadata of the right types. Fitting a model is :func:`check_fits`.
    """
    path = Path(path)
    if not path.is_file():
        raise LokiInputError(f"{path}: selection file not found")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LokiInputError(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        raise LokiInputError(f"{path}: cannot read the selection file ({err})") from None
    if isinstance(doc, list):
        doc = {"positions": doc}
    if not isinstance(doc, dict) or "positions" not in doc:
        raise LokiInputError(
            f"{path}: expected a selection object with 'positions' or a plain list of lists"
        )
    meta = {k: _check_meta(path, k, doc[k]) for k in SELECTION_META if k in doc}
    positions = doc["positions"]
    if not isinstance(positions, list):
        raise LokiInputError(
            f"{path}: 'positions' must be a list of per-layer lists, got {_short(positions)}"
        )
    if "num_layers" in meta and meta["num_layers"] != len(positions):
        raise LokiInputError(
            f"{path}: records num_layers={meta['num_layers']} but 'positions' has "
            f"{len(positions)} layer lists"
        )
    checked = validate_selection(
        positions, len(positions), meta.get("nodes_per_layer"), source=str(path)
    )
    extra = {k: v for k, v in doc.items() if k not in SELECTION_META and k != "positions"}
    return Selection(positions=checked, path=str(path), extra=extra, **meta)


def check_fits(
    selection: Selection, num_layers: int, d_model: int | None, *, model_name: str = "model"
) -> None:
    """``LokiInputError`` unless the selection has one list per layer, indices in ``[0, d_model)``
    and at least one node. ``d_model=None`` checks the layer count only."""
    src = selection.path or "selection"
    made = f" (made for {selection.model!r})" if selection.model else ""
    other = "the selection was made for another model"
    if len(selection.positions) != num_layers:
        raise LokiInputError(
            f"{src}: has {len(selection.positions)} layer lists{made} but {model_name} has "
            f"{num_layers} layers: {other}"
        )
    if d_model is None:
        return
    if selection.nodes_per_layer is not None and selection.nodes_per_layer != d_model:
        raise LokiInputError(
            f"{src}: records nodes_per_layer={selection.nodes_per_layer}{made} but "
            f"{model_name} has d_model={d_model}: {other}"
        )
    for layer, rows in enumerate(selection.positions):
        bad = [r for r in (min(rows, default=0), max(rows, default=0)) if not 0 <= r < d_model]
        if bad:
            raise LokiInputError(
                f"{src}: layer {layer} node {bad[0]} is outside [0, {d_model}) of {model_name} "
                f"(d_model={d_model}): {other}"
            )
    if selection.total == 0:
        raise LokiInputError(f"{src}: selects no nodes at all: nothing would be trained or zeroed")


def checkpoint_shape(model_dir: str | os.PathLike) -> tuple[int, int]:
    """``(num_hidden_layers, hidden_size)`` from a checkpoint's ``config.json`` (no weights read).

    Multimodal checkpoints nest the language model's config under ``text_config``; it is read
    there when the top level lacks a key.
    """
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise LokiInputError(f"model directory {model_dir} has no config.json")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LokiInputError(f"{path}: cannot read the model config ({err})") from None
    if not isinstance(config, dict):
        raise LokiInputError(f"{path}: expected a JSON object")
    text = config.get("text_config")
    shape = []
    for key in ("num_hidden_layers", "hidden_size"):
        if key in config:
            where, value = key, config[key]
        elif isinstance(text, dict) and key in text:
            where, value = f"text_config.{key}", text[key]
        else:
            raise LokiInputError(
                f"{path}: no {key} (at the top level or under text_config): not a decoder LM config"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LokiInputError(f"{path}: {where} is {_short(value)}, expected a positive integer")
        shape.append(value)
    return shape[0], shape[1]


def check_fits_checkpoint(selection: Selection, model_dir: str | os.PathLike) -> None:
    """:func:`check_fits` against a checkpoint's ``config.json``, before any weights are loaded."""
    num_layers, d_model = checkpoint_shape(model_dir)
    check_fits(selection, num_layers, d_model, model_name=f"model {model_dir}")


def save_selection(
    path: str | os.PathLike,
    positions: Sequence[Sequence[int]],
    *,
    model: str,
    strategy: str,
    q: float,
    num_layers: int,
    nodes_per_layer: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the DESIGN.md selection JSON atomically (lists validated and sorted)."""
    checked = validate_selection(positions, num_layers, nodes_per_layer, source=str(path))
    q_value: float | int = int(q) if float(q).is_integer() else float(q)
    doc: dict[str, Any] = {
        "model": model,
        "strategy": strategy,
        "q": q_value,
        "num_layers": num_layers,
        "nodes_per_layer": nodes_per_layer,
    }
    doc.update(extra or {})
    doc["positions"] = checked
    write_json(path, doc, indent=None)


def read_selection(path: str | os.PathLike) -> dict[str, Any]:
    """The selection file as a dict (:func:`read_selection_file`, every check included).

    An upstream list of lists becomes ``{"positions": ...}``; metadata keys are present only
    when the file has them.
    """
    return read_selection_file(path).as_dict()


def load_selection(
    path: str | os.PathLike,
    *,
    num_layers: int | None = None,
    nodes_per_layer: int | None = None,
) -> list[list[int]]:
    """One sorted list of node indices per layer, from either file format.

    Pass the model's ``num_layers`` and ``nodes_per_layer`` (``d_model``) to check the file
    fits it (:func:`check_fits`).
    """
    selection = read_selection_file(path)
    if num_layers is not None or nodes_per_layer is not None:
        layers = num_layers if num_layers is not None else len(selection.positions)
        check_fits(selection, layers, nodes_per_layer, model_name="the model")
    return selection.positions


def import_selection(
    source: str | os.PathLike,
    out: str | os.PathLike,
    model_dir: str | os.PathLike,
    *,
    model: str,
    strategy: str,
    q: float,
) -> Selection:
    """Write a published selection file (upstream's list of lists, or this pipeline's JSON) as
    this pipeline's selection of (``model``, ``strategy``, ``q``) at ``out``.

    The file goes through :func:`read_selection_file` and must fit the checkpoint at
    ``model_dir``; its path and SHA-256 are recorded (``imported_from``, ``source_sha256``), so a
    training run on it says where its nodes came from.
    """
    selection = read_selection_file(source)
    check_fits_checkpoint(selection, model_dir)
    num_layers, d_model = checkpoint_shape(model_dir)
    save_selection(
        out,
        selection.positions,
        model=model,
        strategy=strategy,
        q=q,
        num_layers=num_layers,
        nodes_per_layer=d_model,
        extra={"imported_from": str(source), "source_sha256": file_sha256(source)},
    )
    return selection
