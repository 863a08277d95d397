"""Reading ``kva.h5``, the Analysing stage's artifact (``storage`` writes it): its contract
checked from the metadata, per-sample strings, and the attributions in bounded chunks."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loki_pipeline.errors import LokiInputError

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
    #: the attributed prompt set (kva.dataset): its source and format (files written before
    #: the format was recorded are MMLU's)
    dataset: str = ""
    dataset_format: str = "mmlu"

    def attributed(self) -> str:
        """The set's name in figure titles: ``MMLU (114 prompts)``, ``x.jsonl (prompts, 80)``."""
        from loki_pipeline.data.kva_sets import attributed_set

        return attributed_set(self.dataset, self.dataset_format, self.num_samples)


def _attr_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def inspect_kva(path: str | os.PathLike, *, require: Sequence[str] = ()) -> KvaInfo:
    """Check a ``kva.h5`` against the contract (cheap: metadata only) and describe it.

    ``require`` names extra per-sample datasets the caller needs (e.g. ``subject``). Then the
    whole file is verified as the KVA stage wrote it (every row's checksum, every value finite:
    :func:`~loki_pipeline.kva.storage.verify_kva_file`), so no reader selects from a file whose
    rows were not all written.
    """
    import h5py

    from loki_pipeline.kva.storage import verify_kva_file

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
        dataset = {
            k: _attr_str(fh.attrs[k]) for k in ("dataset", "dataset_format") if k in fh.attrs
        }
        info = KvaInfo(path, _attr_str(fh.attrs["model"]), n, layers, nodes, **dataset)
    verify_kva_file(path)
    return info


def kva_attributed(path: str | os.PathLike) -> str:
    """:meth:`KvaInfo.attributed` from the file's attributes alone (no row is read)."""
    import h5py

    from loki_pipeline.data.kva_sets import attributed_set

    try:
        with h5py.File(path, "r") as fh:
            attrs = {k: _attr_str(v) for k, v in fh.attrs.items()}
    except OSError as err:
        raise LokiInputError(f"{path}: not a readable HDF5 file ({err})") from None
    if "num_samples" not in attrs:
        raise LokiInputError(f"{path}: missing file attribute num_samples")
    return attributed_set(
        attrs.get("dataset", ""), attrs.get("dataset_format", "mmlu"), int(attrs["num_samples"])
    )


def read_kva_strings(path: str | os.PathLike, name: str) -> list[str]:
    """A per-sample string dataset (e.g. ``subject``) as Python strings."""
    import h5py

    with h5py.File(path, "r") as fh:
        return [_attr_str(v) for v in fh[name][()]]


def iter_kva_chunks(path: str | os.PathLike, chunk_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, attributions[start:start+chunk_size])`` as float32, rejecting NaN/inf.

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
            if not np.isfinite(block).all():
                row = start + int(np.argwhere(~np.isfinite(block))[0][0])
                raise LokiInputError(f"{path}: 'attributions' holds NaN or inf (sample {row})")
            yield start, block
