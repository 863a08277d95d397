"""The KVA file (HDF5): one shard written prompt by prompt, resumable; shards gathered.

Layout (DESIGN.md), the same for a shard and for the gathered ``kva.h5``:

- ``attributions`` float32 ``[samples, layers, nodes]``;
- ``row_crc32`` uint32 ``[samples]``: CRC-32 of each attribution row (its float32 little-endian
  bytes), written with the row and carried into ``kva.h5``, so a row that did not reach the
  disk intact is found by every reader;
- per sample ``subject`` and ``question_id`` (fixed-length UTF-8, at most
  :data:`STRING_BYTES` bytes: longer values are refused before anything is computed),
  ``predicted_token``, ``prompt_length`` (int64), ``probability``, ``completeness_gap``
  (float32);
- file attrs ``model``, ``steps``, ``method``, ``quadrature``, ``dtype``, ``package_version``,
  ``config_hash``, ``inputs`` (JSON: what the run depends on, see ``runner``), ``num_layers``,
  ``d_model``, ``num_samples``, ``complete``; a shard also ``shard``, ``num_shards``,
  ``dataset``.

Readers call :func:`verify_kva_file` (``load_kva`` and ``gather_shards`` do): the file must be
complete, every row's checksum right and every attribution finite, else ``LokiInputError``.

Crash safety. A shard is built in ``<name>.partial.h5``, created whole under a temporary name
(every dataset at its final size, attributions filled with NaN, flushed, renamed): a full disk
fails there, before any prompt is computed, and afterwards the file never grows nor changes
structure, since each prompt only overwrites bytes allocated for it. Strings are fixed-length,
so there is no HDF5 heap for a kill to leave half-rewritten. Each batch of prompts is written
to every dataset, flushed and fsynced, and only then counted by the ``num_samples`` attribute
(flushed and fsynced again); on open the counted rows are checked again (checksums, finite) and
the count cut back to the last intact one, so a run killed at any instruction resumes where it
stopped. Finished, the file is read back, marked ``complete`` and renamed onto the output.

A partial shard made from other inputs (checkpoint content, data set, settings), or unreadable,
is moved aside to ``<name>.stale.h5`` (replacing an older one; nothing is deleted unseen) and
the shard starts over, with a log line saying why. The caller holds the output's
:func:`~loki_pipeline.io.exclusive_lock`, so no other run is writing it.

Write errors: HDF5 reports a failed write only in ``flush``/``close`` (for an object freed by
the garbage collector, only as an "Exception ignored" message), keeps the unwritten data and
retries it at interpreter exit, where it can crash the process (SIGSEGV). So the writer keeps
its datasets open, flushes and fsyncs explicitly, and on any failure raises
:class:`~loki_pipeline.errors.LokiWriteError` after closing the file with its descriptor
pointed at ``/dev/null`` (:func:`_abandon`): the file on disk keeps its last flushed state.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from loki_pipeline.errors import LokiInputError, LokiWriteError
from loki_pipeline.io import atomic_path, describe_changes, exclusive_lock, fsync_path, write_error

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

#: Most UTF-8 bytes a per-sample string may have (MMLU subjects have at most 35).
STRING_BYTES: dict[str, int] = {"subject": 64, "question_id": 256}
#: per-sample datasets besides ``attributions`` and ``row_crc32``: name -> HDF5 dtype.
SAMPLE_FIELDS: dict[str, Any] = {
    "subject": h5py.string_dtype("utf-8", STRING_BYTES["subject"]),
    "question_id": h5py.string_dtype("utf-8", STRING_BYTES["question_id"]),
    "predicted_token": np.int64,
    "prompt_length": np.int64,
    "probability": np.float32,
    "completeness_gap": np.float32,
}
CHECKSUM = "row_crc32"
#: Rows read at once when checking a file (bounded memory for paper-size files).
_CHECK_BYTES = 64 << 20
#: What h5py raises for a failed HDF5 call (it uses all three for I/O failures).
_H5_ERRORS = (OSError, ValueError, RuntimeError)


def partial_path(out_path: str | os.PathLike) -> Path:
    """Where shard ``out_path`` is built: ``x.h5`` -> ``x.partial.h5``."""
    out = Path(out_path)
    return out.with_name(out.stem + ".partial.h5")


def stale_path(out_path: str | os.PathLike) -> Path:
    """Where a partial shard of other inputs is moved aside: ``x.h5`` -> ``x.stale.h5``."""
    out = Path(out_path)
    return out.with_name(out.stem + ".stale.h5")


def row_crc32(rows: np.ndarray) -> np.ndarray:
    """CRC-32 of each ``rows[i]`` as float32 little-endian bytes: the ``row_crc32`` dataset."""
    rows = np.ascontiguousarray(rows, dtype="<f4").reshape(len(rows), -1)
    return np.fromiter((zlib.crc32(row) for row in rows), dtype=np.uint32, count=len(rows))


def check_string(value: Any, name: str) -> bytes:
    """``value`` as the UTF-8 bytes stored in fixed-length field ``name``; refuse what won't fit."""
    limit = STRING_BYTES[name]
    data = str(value).encode("utf-8")
    if len(data) > limit or b"\0" in data:
        raise LokiInputError(
            f"{name} {str(value)[:80]!r}: a KVA file stores at most {limit} UTF-8 bytes "
            f"without NUL characters (this one has {len(data)}); shorten it in the data set"
        )
    return data


def _attr(value: Any) -> Any:
    """HDF5 attribute values come back as numpy scalars/bytes; compare as plain Python."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _changes(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """What differs between a file's attrs and this run's ``meta``, in words."""
    keys = [*IDENTITY_ATTRS, "shard", "num_shards"]
    differ = [k for k in keys if k in expected and _attr(found.get(k)) != expected[k]]
    explained: list[str] = []
    if "inputs" in expected and differ:
        try:
            old = json.loads(_attr(found.get("inputs", "{}")))
        except (TypeError, ValueError):
            old = {}
        old = old if isinstance(old, dict) else {}
        new = json.loads(expected["inputs"])
        changed = describe_changes(old, new)
        if changed:  # say which input changed instead of comparing two hashes
            explained = ["inputs changed: " + ", ".join(_describe(k, old, new) for k in changed)]
            differ = [k for k in differ if k != "config_hash" and k not in changed]
    return explained + [
        f"{key}: file has {_attr(found.get(key))!r}, expected {expected[key]!r}" for key in differ
    ]


def _describe(key: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    if key in ("model", "dataset"):
        return f"{key} content ({old.get(key)} -> {new.get(key)})"
    return f"{key} ({old.get(key)!r} -> {new.get(key)!r})"


# --------------------------------------------------------------------------------------------
# writing HDF5 without losing errors


def _write_failed(path: Path, err: BaseException) -> LokiWriteError:
    """An h5py failure as ``LokiWriteError`` naming ``path`` (errno read from HDF5's message)."""
    if isinstance(err, LokiWriteError):
        return err
    match = re.search(r"errno = (\d+)", str(err))
    code = int(match.group(1)) if match else getattr(err, "errno", None) or errno.EIO
    return write_error(path, OSError(code, str(err)))


def _abandon(f: h5py.File) -> None:
    """Close ``f`` after a failed write without HDF5 retrying (and failing) the write.

    HDF5 keeps data it could not write and writes it again at close and at exit, where the
    error can only be printed and the library may crash. With its descriptor pointed at
    /dev/null those writes succeed harmlessly and the file on disk keeps its last flushed state.
    """
    with contextlib.suppress(Exception):
        if f.id.valid:
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, f.id.get_vfd_handle())
            finally:
                os.close(null)
    with contextlib.suppress(Exception):
        f.close()


def _sync(f: h5py.File) -> None:
    """Flush HDF5's buffers and the OS's (a full disk or an I/O error surfaces here)."""
    f.flush()
    os.fsync(f.id.get_vfd_handle())


def _close(f: h5py.File, path: Path) -> None:
    """Flush, fsync and close ``f``; ``LokiWriteError`` naming ``path`` if anything fails."""
    try:
        _sync(f)
        f.close()
    except _H5_ERRORS as err:
        _abandon(f)
        raise _write_failed(path, err) from err


def _early() -> h5py.h5p.PropDCID:
    """Dataset creation properties: allocate (and fill) the whole dataset when it is created."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return dcpl


def _create_file(
    path: Path, num_rows: int, layers: int, nodes: int, attrs: Mapping[str, Any], name: Path
) -> None:
    """Write a KVA file of ``num_rows`` unwritten rows at ``path`` (errors name ``name``).

    Contiguous datasets allocated now: the disk space is taken before any work is done and
    rows are later written in place. Unwritten attributions are NaN, refused by every reader.
    """
    try:
        f = h5py.File(path, "w")
    except _H5_ERRORS as err:
        raise _write_failed(name, err) from err
    try:
        f.create_dataset(
            "attributions",
            shape=(num_rows, layers, nodes),
            dtype=np.float32,
            fillvalue=np.float32(np.nan),
            dcpl=_early(),
        )
        f.create_dataset(CHECKSUM, shape=(num_rows,), dtype=np.uint32, dcpl=_early())
        for field, dtype in SAMPLE_FIELDS.items():
            f.create_dataset(field, shape=(num_rows,), dtype=dtype, dcpl=_early())
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["num_samples"] = 0
        f.attrs["complete"] = False
    except _H5_ERRORS as err:
        _abandon(f)
        raise _write_failed(name, err) from err
    _close(f, name)


# --------------------------------------------------------------------------------------------
# checking


def _layout_problem(f: h5py.File, num_rows: int | None = None) -> str | None:
    """Why ``f`` is not a KVA file of this layout, or None.

    A finished file needs ``attributions`` and ``row_crc32``, and per-sample datasets (those it
    has) of one row per sample. A partial shard to write into (``num_rows`` given) needs every
    dataset, ``num_rows`` rows and fixed-length strings.
    """
    needed = ("attributions", CHECKSUM, *(SAMPLE_FIELDS if num_rows is not None else ()))
    missing = [n for n in needed if n not in f]
    if missing:
        return f"missing dataset(s) {', '.join(missing)}"
    attrs = ("num_samples", "complete", "num_layers", "d_model")
    if any(a not in f.attrs for a in attrs):
        return f"missing attribute(s) {', '.join(a for a in attrs if a not in f.attrs)}"
    ds = f["attributions"]
    if ds.ndim != 3 or ds.dtype != np.float32:
        return f"'attributions' is {ds.dtype} {ds.shape}, expected float32 [samples, layers, nodes]"
    if ds.shape[1:] != (int(f.attrs["num_layers"]), int(f.attrs["d_model"])):
        return f"'attributions' {ds.shape} disagrees with num_layers/d_model"
    rows = ds.shape[0]
    for name in (CHECKSUM, *SAMPLE_FIELDS):
        if name in f and f[name].shape != (rows,):
            return f"dataset {name} has shape {f[name].shape}, expected ({rows},)"
    if not 0 <= int(f.attrs["num_samples"]) <= rows:
        return f"num_samples={int(f.attrs['num_samples'])} outside 0..{rows}"
    if num_rows is not None:
        if rows != num_rows:
            return f"it has room for {rows} prompts, this shard has {num_rows}"
        for name, limit in STRING_BYTES.items():
            info = h5py.check_string_dtype(f[name].dtype)
            if info is None or info.length is None or info.length > limit:
                return f"dataset {name} is not a fixed-length string of at most {limit} bytes"
    return None


def _first_bad_row(f: h5py.File, count: int) -> tuple[int, str] | None:
    """The first of rows ``0..count-1`` whose checksum is wrong or that is not finite."""
    ds, sums = f["attributions"], f[CHECKSUM]
    per = max(1, _CHECK_BYTES // max(1, 4 * int(np.prod(ds.shape[1:]))))
    for start in range(0, count, per):
        block = np.asarray(ds[start : min(start + per, count)], dtype=np.float32)
        wrong = row_crc32(block) != sums[start : start + len(block)]
        nonfinite = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
        bad = np.flatnonzero(wrong | nonfinite)
        if len(bad):
            k = int(bad[0])
            why = (
                "row checksum does not match (not written intact)"
                if wrong[k]
                else ("attributions hold NaN or inf")
            )
            return start + k, why
    return None


def verify_kva_file(path: str | os.PathLike) -> None:
    """Refuse (``LokiInputError`` naming ``path``) a KVA file that is not whole and finished.

    Checks that it opens (a truncated file does not), has this layout, is marked complete with
    one row per sample, that every row's ``row_crc32`` matches and every attribution is finite.
    Reads the whole file once, in bounded chunks.
    """
    path = Path(path)
    if not path.is_file():
        raise LokiInputError(f"{path}: no such KVA file")
    try:
        with h5py.File(path, "r") as f:
            problem = _layout_problem(f)
            if problem:
                raise LokiInputError(
                    f"{path}: not a KVA file of this version ({problem}); run the KVA stage again"
                )
            if not bool(f.attrs["complete"]):
                raise LokiInputError(f"{path}: KVA file is not complete (an unfinished run)")
            n = int(f.attrs["num_samples"])
            if f["attributions"].shape[0] != n:
                raise LokiInputError(
                    f"{path}: num_samples={n} but 'attributions' has "
                    f"{f['attributions'].shape[0]} rows"
                )
            bad = _first_bad_row(f, n)
    except LokiInputError:
        raise
    except _H5_ERRORS as err:
        raise LokiInputError(f"{path}: unreadable or truncated KVA file ({err})") from None
    if bad is not None:
        raise LokiInputError(f"{path}: sample {bad[0]}: {bad[1]}")


# --------------------------------------------------------------------------------------------
# the shard writer


def result_row(result, *, subject: str, question_id: str) -> dict[str, Any]:
    """One row for :meth:`ShardWriter.append_rows` from a ``KVAResult``."""
    return dict(
        attributions=result.attributions.detach().cpu().numpy(),
        subject=subject,
        question_id=question_id,
        predicted_token=result.predicted_token,
        prompt_length=result.prompt_length,
        probability=result.probability,
        completeness_gap=result.completeness_gap,
    )


class ShardWriter:
    """Append KVA rows to ``<out>.partial.h5``; ``finish()`` checks it and renames it onto ``out``.

    ``meta`` holds the file attrs (at least :data:`IDENTITY_ATTRS`; ``inputs`` to log what
    changed). The file has room for ``num_rows`` prompts, or ``len(expected_ids)``: the
    question ids this shard writes, in order (checked on every append and on resume). A
    partial file of this run resumes after its last intact counted row (``num_done``); one of
    other inputs, another size or unreadable is moved to ``<out>.stale.h5`` and restarted.
    Hold :func:`~loki_pipeline.io.exclusive_lock` on ``out`` while using it.
    """

    def __init__(
        self,
        out_path: str | os.PathLike,
        meta: dict[str, Any],
        *,
        expected_ids: Sequence[str] | None = None,
        num_rows: int | None = None,
    ):
        missing = [k for k in IDENTITY_ATTRS if k not in meta]
        if missing:
            raise ValueError(f"ShardWriter meta lacks {missing}")
        if expected_ids is None and num_rows is None:
            raise ValueError("ShardWriter needs expected_ids or num_rows (rows are allocated)")
        self.expected_ids = None if expected_ids is None else [str(q) for q in expected_ids]
        if self.expected_ids is not None:
            if num_rows is not None and num_rows != len(self.expected_ids):
                raise ValueError(f"num_rows={num_rows} but {len(self.expected_ids)} expected ids")
            num_rows = len(self.expected_ids)
            for qid in self.expected_ids:
                check_string(qid, "question_id")
        self.num_rows = int(num_rows)
        self.out_path = Path(out_path)
        self.path = partial_path(out_path)
        self.meta = dict(meta)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file: h5py.File | None = None
        self.num_done = self._resume() if self.path.exists() else None
        if self.num_done is None:
            self._create()
            self.num_done = 0
            self._open()

    # -- opening ---------------------------------------------------------------------------

    def _create(self) -> None:
        # A run killed while creating leaves its hidden temporary; we hold the lock: remove it.
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            leftover.unlink(missing_ok=True)
        with atomic_path(self.path) as tmp:
            layers, nodes = int(self.meta["num_layers"]), int(self.meta["d_model"])
            _create_file(tmp, self.num_rows, layers, nodes, self.meta, self.path)

    def _open(self) -> None:
        try:
            self.file = h5py.File(self.path, "r+")
        except _H5_ERRORS as err:
            raise _write_failed(self.path, err) from err
        # Keep every dataset open: a dataset freed by the garbage collector would write its
        # buffers where an error can only be printed.
        self._ds = {name: self.file[name] for name in ("attributions", CHECKSUM, *SAMPLE_FIELDS)}

    def _resume(self) -> int | None:
        """Rows of the partial file to keep, or None after moving it aside."""
        try:
            f = h5py.File(self.path, "r")
        except _H5_ERRORS as err:
            return self._set_aside(f"unreadable ({err})")
        try:
            with f:
                reason = _layout_problem(f, self.num_rows)
                if reason is None:
                    changes = _changes(dict(f.attrs), self.meta)
                    reason = "made from other inputs: " + "; ".join(changes) if changes else None
                if reason is None:
                    done = int(f.attrs["num_samples"])
                    bad = _first_bad_row(f, done)
                    kept = done if bad is None else bad[0]
                    have = [s.decode() for s in f["question_id"][:kept]]
                    if "" in have:  # counted, but its strings never reached the disk
                        kept, bad = have.index(""), (have.index(""), "no question_id")
                        have = have[:kept]
                    if self.expected_ids is not None and have != self.expected_ids[:kept]:
                        reason = "its prompts are not this shard's first questions (data changed)"
        except _H5_ERRORS as err:
            reason = f"unreadable ({err})"
        if reason is not None:
            return self._set_aside(reason)
        self._open()
        if kept < done:
            log.warning("%s: sample %d: %s; resuming before it", self.path, kept, bad[1])
            self._count(kept)
        log.info("resuming %s from prompt %d of %d", self.path, kept, self.num_rows)
        return kept

    def _set_aside(self, reason: str) -> None:
        stale = stale_path(self.out_path)
        try:
            os.replace(self.path, stale)
        except OSError as err:
            raise _write_failed(stale, err) from err
        log.warning(
            "%s: %s; moved it to %s (replacing any older one) and starting this shard over",
            self.path,
            reason,
            stale,
        )
        return None

    # -- writing -----------------------------------------------------------------------------

    def _count(self, n: int) -> None:
        """Set ``num_samples`` (after the rows it counts are on disk) and flush it."""
        try:
            self.file.attrs.modify("num_samples", n)
            _sync(self.file)
        except _H5_ERRORS as err:
            self._fail(err)

    def _fail(self, err: BaseException) -> None:
        _abandon(self.file)
        raise _write_failed(self.path, err) from err

    def append_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write rows (dicts of the per-sample fields), flush, then count them all at once.

        Nothing is written unless every row is valid: finite attributions of the file's shape,
        strings that fit, the expected question ids.
        """
        if self.file is None or not self.file.id.valid:
            raise ValueError(f"{self.path}: writer is closed")
        k, b = self.num_done, len(rows)
        if k + b > self.num_rows:
            raise ValueError(f"{self.path}: {k + b} rows, but the shard has {self.num_rows}")
        if b == 0:
            return
        shape = (int(self.meta["num_layers"]), int(self.meta["d_model"]))
        att = np.stack([np.asarray(r["attributions"], dtype=np.float32) for r in rows])
        if att.shape[1:] != shape:
            raise ValueError(f"attributions of shape {att.shape[1:]}, expected {shape}")
        for row, ok in zip(rows, np.isfinite(att.reshape(b, -1)).all(axis=1), strict=True):
            if not ok:
                raise LokiInputError(
                    f"{self.path}: the attributions of question {row['question_id']!r} hold "
                    f"NaN or inf (dtype {self.meta['dtype']}: try float32); the {self.num_done} "
                    "prompts before it are kept"
                )
        ids = [str(r["question_id"]) for r in rows]
        if self.expected_ids is not None and ids != self.expected_ids[k : k + b]:
            raise ValueError(f"{self.path}: rows {ids} are not questions {k}..{k + b - 1}")
        values = {
            name: np.array(
                [check_string(r[name], name) if name in STRING_BYTES else r[name] for r in rows],
                dtype=dtype,
            )
            for name, dtype in SAMPLE_FIELDS.items()
        }
        try:
            self._ds["attributions"][k : k + b] = att
            self._ds[CHECKSUM][k : k + b] = row_crc32(att)
            for name, value in values.items():
                self._ds[name][k : k + b] = value
            _sync(self.file)
        except _H5_ERRORS as err:
            self._fail(err)
        self._count(k + b)
        self.num_done = k + b

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
        self.append_rows(
            [
                dict(
                    attributions=attributions,
                    subject=subject,
                    question_id=question_id,
                    predicted_token=predicted_token,
                    prompt_length=prompt_length,
                    probability=probability,
                    completeness_gap=completeness_gap,
                )
            ]
        )

    def append_result(self, result, *, subject: str, question_id: str) -> None:
        """Append a :class:`~loki_pipeline.kva.result.KVAResult`."""
        self.append_rows([result_row(result, subject=subject, question_id=question_id)])

    def finish(self) -> Path:
        """Read the rows back, mark complete, rename onto the output (atomic, then fsynced)."""
        if self.num_done != self.num_rows:
            raise ValueError(f"{self.path}: {self.num_done} of {self.num_rows} prompts written")
        self.close()
        try:
            with h5py.File(self.path, "r") as f:  # a fresh handle: what is in the file
                bad = _first_bad_row(f, self.num_rows)
            if bad is not None:
                raise LokiWriteError(
                    errno.EIO,
                    f"{self.path}: sample {bad[0]} reads back wrong ({bad[1]}); nothing was "
                    "marked finished (rerun: the shard resumes before it)",
                )
            f = h5py.File(self.path, "r+")
        except _H5_ERRORS as err:
            raise _write_failed(self.out_path, err) from err
        try:
            f.attrs.modify("complete", True)
        except _H5_ERRORS as err:
            _abandon(f)
            raise _write_failed(self.out_path, err) from err
        _close(f, self.out_path)
        try:
            os.replace(self.path, self.out_path)
            fsync_path(self.out_path.parent)
        except OSError as err:
            raise _write_failed(self.out_path, err) from err
        return self.out_path

    def close(self) -> None:
        """Flush and close without finishing (the partial file stays for a resume)."""
        if self.file is not None and self.file.id.valid:
            _close(self.file, self.path)  # flushes before the datasets below are freed
        self._ds = {}

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        elif self.file is not None and self.file.id.valid:
            # An error is on its way out: close without hiding it behind another one.
            try:
                self.close()
            except LokiWriteError as err:
                log.warning("%s", err)


def check_finished(path: str | os.PathLike, meta: dict[str, Any]) -> bool:
    """True if ``path`` is an intact, complete KVA file made from ``meta``'s inputs.

    Otherwise (other inputs, unfinished, damaged) the reason is logged and the caller redoes
    the work; the old file is replaced only when the new one is finished.
    """
    path = Path(path)
    if not path.exists():
        return False
    try:
        verify_kva_file(path)
        with h5py.File(path, "r") as f:
            changes = _changes(dict(f.attrs), meta)
    except (LokiInputError, *_H5_ERRORS) as err:
        log.warning("%s; computing it again", err)
        return False
    if changes:
        log.warning("%s: made from other inputs (%s); computing it again", path, "; ".join(changes))
        return False
    return True


# --------------------------------------------------------------------------------------------
# reading and gathering


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
    """Read a finished KVA file, after :func:`verify_kva_file`."""
    path = Path(path)
    verify_kva_file(path)
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
            return KVAData(
                attributions=f["attributions"][()],
                subject=[s.decode() for s in f["subject"][()]],
                question_id=[s.decode() for s in f["question_id"][()]],
                predicted_token=f["predicted_token"][()],
                prompt_length=f["prompt_length"][()],
                probability=f["probability"][()],
                completeness_gap=f["completeness_gap"][()],
                attrs=attrs,
            )
    except (*_H5_ERRORS, KeyError) as err:
        raise LokiInputError(f"{path}: unreadable KVA file ({err})") from None


def _read_attrs(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        return {k: _attr(v) for k, v in f.attrs.items()}


def gather_shards(shard_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike) -> Path:
    """Merge finished shards into one KVA file, samples back in dataset order.

    Shard ``i`` of ``S`` holds items ``i, i+S, i+2S, ...``, so sample ``k`` of shard ``i`` is
    item ``i + k·S``. The shards must all pass :func:`verify_kva_file`, agree on
    :data:`IDENTITY_ATTRS` and ``num_shards``, and be exactly shards ``0..S-1``. The output is
    written under its lock, preallocated, read back and only then renamed into place.
    """
    if not shard_paths:
        raise LokiInputError("kva-gather: no shard files given")
    out_path = Path(out_path)
    with exclusive_lock(out_path):
        shards, first = _check_shards([Path(p) for p in shard_paths])
        num_shards = int(first["num_shards"])
        counts = [int(shards[i][1]["num_samples"]) for i in range(num_shards)]
        total = sum(counts)
        for i, count in enumerate(counts):
            # Round-robin: shard i holds ceil((total - i) / S) items.
            if count != len(range(i, total, num_shards)):
                raise LokiInputError(
                    f"{shards[i][0]}: {count} samples, but round-robin over {total} needs "
                    f"{len(range(i, total, num_shards))}"
                )
        attrs = {k: v for k, v in first.items() if k not in ("shard", "num_samples", "complete")}
        with atomic_path(out_path) as tmp:
            layers, nodes = int(first["num_layers"]), int(first["d_model"])
            _create_file(tmp, total, layers, nodes, attrs, out_path)
            _copy_shards(tmp, out_path, [shards[i][0] for i in range(num_shards)], total)
            try:
                verify_kva_file(tmp)
            except LokiInputError as err:
                raise LokiWriteError(
                    errno.EIO, f"{out_path}: the written file reads back wrong ({err})"
                ) from None
    log.info("gathered %d shards, %d samples into %s", num_shards, total, out_path)
    return out_path


def _check_shards(paths: list[Path]) -> tuple[dict[int, tuple[Path, dict[str, Any]]], dict]:
    shards: dict[int, tuple[Path, dict[str, Any]]] = {}
    first: dict[str, Any] | None = None
    for p in paths:
        if not p.is_file():
            raise LokiInputError(f"{p}: no such KVA shard")
        verify_kva_file(p)
        attrs = _read_attrs(p)
        if first is None:
            first = attrs
        problems = [
            f"{key}: {attrs.get(key)!r} vs {first.get(key)!r}"
            for key in (*IDENTITY_ATTRS, "num_shards")
            if attrs.get(key) != first.get(key)
        ]
        if problems:
            raise LokiInputError(f"{p}: shard disagrees with {paths[0]} ({'; '.join(problems)})")
        index = int(attrs["shard"])
        if index in shards:
            raise LokiInputError(f"{p}: shard {index} given twice (also {shards[index][0]})")
        shards[index] = (p, attrs)
    num_shards = int(first["num_shards"])
    if sorted(shards) != list(range(num_shards)):
        raise LokiInputError(
            f"kva-gather: got shards {sorted(shards)}, expected all of 0..{num_shards - 1}"
        )
    return shards, first


def _copy_shards(tmp: Path, out_path: Path, shard_paths: list[Path], total: int) -> None:
    """Copy shard ``i``'s rows to rows ``i, i+S, ...`` of ``tmp``, in bounded blocks."""
    num_shards = len(shard_paths)
    try:
        out = h5py.File(tmp, "r+")
    except _H5_ERRORS as err:
        raise _write_failed(out_path, err) from err
    try:
        targets = {name: out[name] for name in ("attributions", CHECKSUM, *SAMPLE_FIELDS)}
        for i, shard in enumerate(shard_paths):
            with h5py.File(shard, "r") as src:
                count = len(range(i, total, num_shards))
                row_bytes = 4 * int(np.prod(src["attributions"].shape[1:]))
                per = max(1, _CHECK_BYTES // max(1, row_bytes))
                for k0 in range(0, count, per):
                    k1 = min(k0 + per, count)
                    where = slice(i + k0 * num_shards, i + (k1 - 1) * num_shards + 1, num_shards)
                    for name, target in targets.items():
                        target[where] = src[name][k0:k1]
        out.attrs.modify("num_samples", total)
        out.attrs.modify("complete", True)
    except _H5_ERRORS as err:
        _abandon(out)
        raise _write_failed(out_path, err) from err
    _close(out, out_path)
