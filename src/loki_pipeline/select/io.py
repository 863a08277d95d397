"""Reading ``kva.h5`` in bounded chunks, and the selection JSON contract.

Selection file (DESIGN.md)::

    {"model": ..., "strategy": ..., "q": ..., "num_layers": L, "nodes_per_layer": D,
     "positions": [[sorted node indices of layer 0], ..., [layer L-1]]}

The upstream LoKI repository writes only the ``positions`` part (a plain list of lists, not
necessarily sorted); :func:`load_selection` reads both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loki_pipeline.errors import LokiInputError
from loki_pipeline.io import write_json

#: File attributes a ``kva.h5`` must carry before anything is selected from it.
REQUIRED_KVA_ATTRS: tuple[str, ...] = ("model", "num_layers", "d_model", "num_samples", "complete")


@dataclass(frozen=True)
class KvaInfo:
    """What the Selecting stage needs to know about a ``kva.h5`` file."""

    path: Path
    model: str
    num_samples: int
    num_layers: int
    num_nodes: int


def _attr_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def inspect_kva(path: str | os.PathLike, *, require: Sequence[str] = ()) -> KvaInfo:
    """Check a ``kva.h5`` against the contract (cheap: metadata only) and describe it.

    ``require`` names extra per-sample datasets the caller needs (e.g. ``subject``).
    NaN is checked chunk by chunk while reading, see :func:`iter_kva_chunks`.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise LokiInputError(f"{path}: KVA file not found (run the kva rule first)")
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise LokiInputError(f"{path}: not a readable HDF5 file ({err})") from None
    with fh:
        if "attributions" not in fh:
            raise LokiInputError(f"{path}: missing dataset 'attributions' [samples, layers, nodes]")
        ds = fh["attributions"]
        if ds.ndim != 3 or ds.dtype.kind != "f":
            raise LokiInputError(
                f"{path}: 'attributions' must be a float array [samples, layers, nodes], "
                f"got shape {ds.shape} dtype {ds.dtype}"
            )
        missing = [a for a in REQUIRED_KVA_ATTRS if a not in fh.attrs]
        if missing:
            raise LokiInputError(f"{path}: missing file attribute(s) {', '.join(missing)}")
        if not bool(fh.attrs["complete"]):
            raise LokiInputError(f"{path}: attribute complete=False (an unfinished KVA run)")
        n, layers, nodes = ds.shape
        expected = {"num_samples": n, "num_layers": layers, "d_model": nodes}
        for key, actual in expected.items():
            if int(fh.attrs[key]) != actual:
                raise LokiInputError(
                    f"{path}: attribute {key}={int(fh.attrs[key])} disagrees with "
                    f"'attributions' shape {ds.shape}"
                )
        if n == 0:
            raise LokiInputError(f"{path}: 'attributions' holds no samples")
        for name in require:
            if name not in fh:
                raise LokiInputError(f"{path}: missing per-sample dataset {name!r}")
            if fh[name].shape[:1] != (n,):
                raise LokiInputError(
                    f"{path}: dataset {name!r} has {fh[name].shape[0]} rows, expected {n}"
                )
        return KvaInfo(path, _attr_str(fh.attrs["model"]), n, layers, nodes)


def read_kva_strings(path: str | os.PathLike, name: str) -> list[str]:
    """A per-sample string dataset (e.g. ``subject``) as Python strings."""
    import h5py

    with h5py.File(path, "r") as fh:
        return [_attr_str(v) for v in fh[name][()]]


def iter_kva_chunks(path: str | os.PathLike, chunk_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, attributions[start:start+chunk_size])`` as float32, rejecting NaN.

    Only one chunk is in memory at a time, so a 70B-size file never has to fit.
    """
    import h5py

    if chunk_size < 1:
        raise LokiInputError(f"chunk size must be >= 1, got {chunk_size}")
    with h5py.File(path, "r") as fh:
        ds = fh["attributions"]
        n = ds.shape[0]
        for start in range(0, n, chunk_size):
            block = np.asarray(ds[start : start + chunk_size], dtype=np.float32)
            if np.isnan(block).any():
                row = start + int(np.argwhere(np.isnan(block))[0][0])
                raise LokiInputError(f"{path}: 'attributions' holds NaN (sample {row})")
            yield start, block


# ----------------------------------------------------------------------------- selection JSON


def validate_selection(
    positions: Sequence[Sequence[int]],
    num_layers: int,
    nodes_per_layer: int,
    *,
    source: str = "selection",
) -> list[list[int]]:
    """Check a selection fits a model (``L`` lists, indices in ``[0, D)``, no duplicates).

    Returns the lists sorted; raises :class:`LokiInputError` naming ``source`` otherwise.
    """
    if not isinstance(positions, Sequence) or isinstance(positions, (str, bytes)):
        raise LokiInputError(f"{source}: positions must be a list of per-layer lists")
    if len(positions) != num_layers:
        raise LokiInputError(
            f"{source}: has {len(positions)} layer lists but the model has {num_layers} layers"
        )
    out: list[list[int]] = []
    for layer, nodes in enumerate(positions):
        if not isinstance(nodes, Sequence) or isinstance(nodes, (str, bytes)):
            raise LokiInputError(f"{source}: layer {layer} is not a list of node indices")
        ints: list[int] = []
        for node in nodes:
            if isinstance(node, bool) or not isinstance(node, (int, np.integer)):
                raise LokiInputError(
                    f"{source}: layer {layer} holds {node!r}; node indices must be integers"
                )
            if not 0 <= node < nodes_per_layer:
                raise LokiInputError(
                    f"{source}: layer {layer} node {node} is outside [0, {nodes_per_layer})"
                )
            ints.append(int(node))
        if len(set(ints)) != len(ints):
            dup = sorted({i for i in ints if ints.count(i) > 1})[:5]
            raise LokiInputError(f"{source}: layer {layer} repeats node(s) {dup}")
        out.append(sorted(ints))
    return out


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
    """The selection file as a dict; an upstream list-of-lists becomes ``{"positions": ...}``.

    Metadata keys are present only when the file has them. Positions are validated against the
    file's own ``num_layers``/``nodes_per_layer`` when it records them.
    """
    path = Path(path)
    if not path.is_file():
        raise LokiInputError(f"{path}: selection file not found")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise LokiInputError(f"{path}: not valid JSON ({err})") from None
    if isinstance(doc, list):
        doc = {"positions": doc}
    if not isinstance(doc, dict) or "positions" not in doc:
        raise LokiInputError(
            f"{path}: expected a selection object with 'positions' or a plain list of lists"
        )
    positions = doc["positions"]
    if not isinstance(positions, list) or not all(isinstance(p, list) for p in positions):
        raise LokiInputError(f"{path}: 'positions' must be a list of per-layer lists")
    num_layers = int(doc.get("num_layers", len(positions)))
    # An upstream file records no width; only the range check against a model can bound it.
    width = int(doc.get("nodes_per_layer", 2**62))
    doc["positions"] = validate_selection(positions, num_layers, width, source=str(path))
    return doc


def load_selection(
    path: str | os.PathLike,
    *,
    num_layers: int | None = None,
    nodes_per_layer: int | None = None,
) -> list[list[int]]:
    """One sorted list of node indices per layer, from either file format.

    Pass the model's ``num_layers`` and ``nodes_per_layer`` (``d_model``) to check the file fits it.
    """
    doc = read_selection(path)
    positions = doc["positions"]
    for key, want in (("num_layers", num_layers), ("nodes_per_layer", nodes_per_layer)):
        have = doc.get(key)
        if want is not None and have is not None and int(have) != want:
            raise LokiInputError(f"{path}: selection was made for {key}={have}, model has {want}")
    if num_layers is not None or nodes_per_layer is not None:
        width = nodes_per_layer if nodes_per_layer is not None else 2**62
        layers = num_layers if num_layers is not None else len(positions)
        positions = validate_selection(positions, layers, width, source=str(path))
    return positions
