"""The KVA file (HDF5): one shard written sample by sample, resumable; shards gathered.

Layout (DESIGN.md): dataset ``attributions`` float32 ``[samples, layers, nodes]``; per-sample
datasets ``subject``, ``question_id`` (utf-8 str), ``predicted_token``, ``prompt_length``
(int64), ``probability``, ``completeness_gap`` (float32); file attrs ``model``, ``steps``,
``method``, ``quadrature``, ``dtype``, ``package_version``, ``config_hash``, ``num_layers``,
``d_model``, ``num_samples``, ``complete``.

Crash safety: a shard is built in a sibling ``<name>.partial.h5``. Each sample is written to
every dataset, flushed, and only then counted by bumping the ``num_samples`` attribute (also
flushed), so a run killed mid-sample resumes from the last counted one. The partial file is
renamed onto the output only when complete, so an output that exists is always finished.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from loki_pipeline.errors import LokiInputError
from loki_pipeline.io import atomic_path

log = logging.getLogger(__name__)

#: Attributes that must agree for a partial shard to be resumed or shards to be gathered.
IDENTITY_ATTRS: tuple[str, ...] = (
    "model",
    "steps",
    "method",
    "quadrature",
    "dtype",
    "config_hash",
    "num_layers",
    "d_model",
)

STR = h5py.string_dtype("utf-8")
#: per-sample datasets besides ``attributions``: name -> HDF5 dtype.
SAMPLE_FIELDS: dict[str, Any] = {
    "subject": STR,
    "question_id": STR,
    "predicted_token": np.int64,
    "prompt_length": np.int64,
    "probability": np.float32,
    "completeness_gap": np.float32,
}


def partial_path(out_path: str | os.PathLike) -> Path:
    """Where shard ``out_path`` is built: ``x.h5`` -> ``x.partial.h5``."""
    out = Path(out_path)
    return out.with_name(out.stem + ".partial.h5")


def _attr(value: Any) -> Any:
    """HDF5 attribute values come back as numpy scalars/bytes; compare as plain Python."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _mismatches(found: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    return [
        f"{key}: file has {_attr(found.get(key))!r}, expected {expected[key]!r}"
        for key in IDENTITY_ATTRS
        if key in expected and _attr(found.get(key)) != expected[key]
    ]


class ShardWriter:
    """Append KVA samples to ``<out>.partial.h5``; ``finish()`` renames it onto ``out``.

    ``meta`` holds the file attrs (at least :data:`IDENTITY_ATTRS`). If a partial file exists
    its identity attrs must equal ``meta`` (else :class:`LokiInputError`, nothing deleted) and
    ``num_done`` samples are kept. ``expected_ids`` (the question ids this shard will write, in
    order) guards against resuming onto a changed dataset.
    """

    def __init__(
        self,
        out_path: str | os.PathLike,
        meta: dict[str, Any],
        *,
        expected_ids: Sequence[str] | None = None,
    ):
        missing = [k for k in IDENTITY_ATTRS if k not in meta]
        if missing:
            raise ValueError(f"ShardWriter meta lacks {missing}")
        self.out_path = Path(out_path)
        self.path = partial_path(out_path)
        self.meta = dict(meta)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.file = self._resume(expected_ids)
        else:
            self.file = self._create()
        self.num_done = int(self.file.attrs["num_samples"])

    def _create(self) -> h5py.File:
        f = h5py.File(self.path, "w")
        layers, nodes = int(self.meta["num_layers"]), int(self.meta["d_model"])
        f.create_dataset(
            "attributions",
            shape=(0, layers, nodes),
            maxshape=(None, layers, nodes),
            dtype=np.float32,
            chunks=(1, layers, nodes),
        )
        for name, dtype in SAMPLE_FIELDS.items():
            f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(256,))
        for key, value in self.meta.items():
            f.attrs[key] = value
        f.attrs["num_samples"] = 0
        f.attrs["complete"] = False
        f.flush()
        return f

    def _resume(self, expected_ids: Sequence[str] | None) -> h5py.File:
        try:
            f = h5py.File(self.path, "a")
        except OSError as err:
            raise LokiInputError(
                f"{self.path}: unreadable partial KVA shard ({err}); delete it to start over"
            ) from None
        problems = _mismatches(dict(f.attrs), self.meta)
        if problems:
            f.close()
            raise LokiInputError(
                f"{self.path}: partial KVA shard from a different run ({'; '.join(problems)}); "
                "delete it to start over, or rerun with the settings that made it"
            )
        done = int(f.attrs["num_samples"])
        # Drop a sample that was being written when the run died (written, never counted).
        for name in ("attributions", *SAMPLE_FIELDS):
            if f[name].shape[0] < done:
                f.close()
                raise LokiInputError(f"{self.path}: dataset {name} shorter than num_samples")
            f[name].resize(done, axis=0)
        if expected_ids is not None:
            have = [s.decode() if isinstance(s, bytes) else s for s in f["question_id"][:done]]
            if have != list(expected_ids[:done]):
                f.close()
                raise LokiInputError(
                    f"{self.path}: its {done} samples are not the first questions of this "
                    "shard (the dataset changed); delete it to start over"
                )
        log.info("resuming %s from sample %d", self.path, done)
        return f

    def append(
        self,
        attributions: np.ndarray,
        *,
        subject: str,
        question_id: str,
        predicted_token: int,
        prompt_length: int,
        probability: float,
        completeness_gap: float,
    ) -> None:
        """Write one sample, flush, then count it."""
        f, k = self.file, self.num_done
        values = {
            "attributions": np.asarray(attributions, dtype=np.float32),
            "subject": subject,
            "question_id": question_id,
            "predicted_token": predicted_token,
            "prompt_length": prompt_length,
            "probability": probability,
            "completeness_gap": completeness_gap,
        }
        for name, value in values.items():
            f[name].resize(k + 1, axis=0)
            f[name][k] = value
        f.flush()
        f.attrs["num_samples"] = k + 1
        f.flush()
        self.num_done = k + 1

    def append_result(self, result, *, subject: str, question_id: str) -> None:
        """Append a :class:`~loki_pipeline.kva.result.KVAResult`."""
        self.append(
            result.attributions.cpu().numpy(),
            subject=subject,
            question_id=question_id,
            predicted_token=result.predicted_token,
            prompt_length=result.prompt_length,
            probability=result.probability,
            completeness_gap=result.completeness_gap,
        )

    def finish(self) -> Path:
        """Mark complete and rename onto the output (atomic on one filesystem)."""
        self.file.attrs["complete"] = True
        self.file.close()
        os.replace(self.path, self.out_path)
        return self.out_path

    def close(self) -> None:
        """Close without finishing (the partial file stays for a resume)."""
        if self.file.id.valid:
            self.file.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_finished(path: str | os.PathLike, meta: dict[str, Any]) -> bool:
    """True if ``path`` is a complete KVA file made with ``meta``; error if it is another run's."""
    path = Path(path)
    if not path.exists():
        return False
    with h5py.File(path, "r") as f:
        problems = _mismatches(dict(f.attrs), meta)
        complete = bool(f.attrs.get("complete", False))
    if problems or not complete:
        raise LokiInputError(
            f"{path}: exists but is not this run's finished KVA file "
            f"({'; '.join(problems) or 'incomplete'}); delete it or choose another output"
        )
    return True


@dataclass(frozen=True)
class KVAData:
    """A KVA file read into memory (see the module docstring for the fields)."""

    attributions: np.ndarray
    subject: list[str]
    question_id: list[str]
    predicted_token: np.ndarray
    prompt_length: np.ndarray
    probability: np.ndarray
    completeness_gap: np.ndarray
    attrs: dict[str, Any]


def load_kva(path: str | os.PathLike) -> KVAData:
    """Read a finished KVA file; refuse an incomplete one."""
    path = Path(path)
    if not path.is_file():
        raise LokiInputError(f"{path}: no such KVA file")
    with h5py.File(path, "r") as f:
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
        if not attrs.get("complete", False):
            raise LokiInputError(f"{path}: KVA file is not complete")
        n = int(attrs["num_samples"])
        return KVAData(
            attributions=f["attributions"][:n],
            subject=[s.decode() for s in f["subject"][:n]],
            question_id=[s.decode() for s in f["question_id"][:n]],
            predicted_token=f["predicted_token"][:n],
            prompt_length=f["prompt_length"][:n],
            probability=f["probability"][:n],
            completeness_gap=f["completeness_gap"][:n],
            attrs=attrs,
        )


def gather_shards(shard_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike) -> Path:
    """Merge finished shards into one KVA file, samples back in dataset order.

    Shard ``i`` of ``S`` holds items ``i, i+S, i+2S, ...``, so sample ``k`` of shard ``i`` is
    item ``i + k·S``. The shards must all be complete, agree on :data:`IDENTITY_ATTRS` and
    ``num_shards``, and be exactly shards ``0..S-1``.
    """
    if not shard_paths:
        raise LokiInputError("kva-gather: no shard files given")
    shards: dict[int, tuple[Path, dict[str, Any]]] = {}
    first: dict[str, Any] | None = None
    for p in map(Path, shard_paths):
        if not p.is_file():
            raise LokiInputError(f"{p}: no such KVA shard")
        with h5py.File(p, "r") as f:
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
        if not attrs.get("complete", False):
            raise LokiInputError(f"{p}: KVA shard is not complete")
        if first is None:
            first = attrs
        problems = _mismatches(attrs, {k: first[k] for k in IDENTITY_ATTRS})
        if attrs.get("num_shards") != first.get("num_shards"):
            problems.append(f"num_shards: {attrs.get('num_shards')} vs {first.get('num_shards')}")
        if problems:
            raise LokiInputError(
                f"{p}: shard disagrees with {Path(shard_paths[0])} ({'; '.join(problems)})"
            )
        index = int(attrs["shard"])
        if index in shards:
            raise LokiInputError(f"{p}: shard {index} given twice (also {shards[index][0]})")
        shards[index] = (p, attrs)
    num_shards = int(first["num_shards"])
    if sorted(shards) != list(range(num_shards)):
        raise LokiInputError(
            f"kva-gather: got shards {sorted(shards)}, expected all of 0..{num_shards - 1}"
        )
    counts = [int(shards[i][1]["num_samples"]) for i in range(num_shards)]
    total = sum(counts)
    for i, count in enumerate(counts):
        # Round-robin: shard i holds ceil((total - i) / S) items.
        if count != len(range(i, total, num_shards)):
            raise LokiInputError(
                f"{shards[i][0]}: {count} samples, but round-robin over {total} needs "
                f"{len(range(i, total, num_shards))}"
            )

    layers, nodes = int(first["num_layers"]), int(first["d_model"])
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as out:
        out.create_dataset(
            "attributions",
            shape=(total, layers, nodes),
            dtype=np.float32,
            chunks=(1, layers, nodes) if total else None,
        )
        for name, dtype in SAMPLE_FIELDS.items():
            out.create_dataset(name, shape=(total,), dtype=dtype)
        for i in range(num_shards):
            with h5py.File(shards[i][0], "r") as f:
                order = np.arange(i, total, num_shards)
                for k, target in enumerate(order):  # one sample at a time: bounded memory
                    out["attributions"][target] = f["attributions"][k]
                for name in SAMPLE_FIELDS:
                    if len(order):
                        out[name][order] = f[name][: len(order)]
        for key, value in first.items():
            if key not in ("shard", "num_samples", "complete"):
                out.attrs[key] = value
        out.attrs["num_samples"] = total
        out.attrs["complete"] = True
    log.info("gathered %d shards, %d samples into %s", num_shards, total, out_path)
    return Path(out_path)
