"""File helpers shared by every stage: atomic writes, locks, safe names and content fingerprints.

A stage that is killed half-way, or whose disk fills up, must never leave a file that a rerun
(or Snakemake) mistakes for a finished output. So every final output is written to a temporary
sibling, flushed to disk (``fsync``: a full disk can surface only there), and renamed; on any
failure the temporary is removed and the error names the output. Two runs writing the same
output are kept apart by :func:`exclusive_lock`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiBusyError, LokiInputError, LokiWriteError

#: Names from the config (models, tasks, runs) become path segments: no separators, no '.'/'..'.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(name: Any, what: str = "name") -> str:
    """``name`` if it is a safe path segment (:data:`NAME_PATTERN`), else ``LokiInputError``."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise LokiInputError(
            f"{what} {name!r}: expected letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (it becomes a folder name)"
        )
    return name


def check_inside(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """``path`` resolved, if it lies strictly inside ``root``; else ``LokiInputError``.

    Every recursive delete goes through this, so a hostile name can never make a stage remove
    a folder it does not own.
    """
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved == base or base not in resolved.parents:
        raise LokiInputError(f"{path}: refusing to touch a path outside {root}")
    return resolved


def remove_tree(path: str | os.PathLike, root: str | os.PathLike) -> None:
    """``shutil.rmtree(path)`` after checking that ``path`` lies inside ``root``."""
    target = check_inside(path, root)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()


def _as_os_error(err: BaseException) -> OSError | None:
    """``err`` as the ``OSError`` it stands for, or None.

    ``safetensors`` reports a full disk as ``SafetensorError("... No space left on device (os
    error 28)")``, which is no ``OSError``; it is one all the same.
    """
    if isinstance(err, OSError):
        return err
    if type(err).__name__ == "SafetensorError":
        found = re.search(r"\(os error (\d+)\)", str(err))
        if found:
            code = int(found.group(1))
            return OSError(code, os.strerror(code))
    return None


def write_error(path: Path, err: OSError) -> LokiWriteError:
    """The ``LokiWriteError`` for a failed write of output ``path``: names it, says nothing was
    marked finished, and on a full disk that freeing space and rerunning resumes the work."""
    reason = os.strerror(err.errno) if err.errno else str(err)
    hint = " (free some space and rerun: the work resumes)" if err.errno == errno.ENOSPC else ""
    return LokiWriteError(
        err.errno or errno.EIO,
        f"{path}: could not write the output: {reason}{hint}; nothing was marked finished",
    )


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file, or every file of a directory tree, and the directories, to disk."""
    path = Path(path)
    if path.is_dir():
        for sub in sorted(path.rglob("*")):
            if sub.is_file() and not sub.is_symlink():
                fsync_path(sub)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:  # directories on some filesystems refuse fsync
        if not path.is_dir() or err.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and (with ``is_dir=True``) whole directories. Before the rename the content
    is flushed to disk, so a disk that fills up fails here and not after the output looks
    finished. On failure the temporary is removed, any existing ``path`` is left untouched, and
    an ``OSError`` is re-raised as :class:`LokiWriteError` naming ``path``. The output's lock
    (:func:`exclusive_lock`) is held throughout, so a second writer gets ``LokiBusyError``.
    """
    raw = os.fspath(path)
    path = Path(path)
    # Path() folds 'models/.' into 'models': look at the name as given, before that happens.
    if path.name in ("", ".", "..") or os.path.basename(raw.rstrip(os.sep)) in (".", ".."):
        raise LokiInputError(f"{raw}: not a file or folder name an output can have")
    with exclusive_lock(path), _atomic_path(path, is_dir) as tmp:
        yield tmp


@contextlib.contextmanager
def _atomic_path(path: Path, is_dir: bool) -> Iterator[Path]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp = Path(name)
        # mkstemp/mkdtemp create private (0600/0700) entries; outputs get the usual umask modes.
        tmp.chmod((0o777 if is_dir else 0o666) & ~_umask())
    except OSError as err:
        raise write_error(path, err) from err
    try:
        try:
            yield tmp
            fsync_path(tmp)
            if is_dir and path.exists():
                # Move the old output aside first, so the rename below is the only switch.
                old = Path(
                    tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent)
                )
                os.replace(path, old / path.name)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
            fsync_path(path.parent)
        except LokiWriteError:
            raise
        except Exception as err:
            os_error = _as_os_error(err)
            if os_error is None:
                raise
            raise write_error(path, os_error) from err
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of output ``path``: a hidden sibling ``.<name>.lock``."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


#: Locks this process holds: lock file -> how many blocks hold it (a lock is re-entrant, so a
#: stage that locks its output and then writes it through ``atomic_path`` does not lock itself out).
_HELD: dict[str, int] = {}


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of output ``path`` for the block; ``LokiBusyError`` if another run holds it.

    ``flock`` locks die with their process, so a killed run never leaves a stale lock. The lock
    file is removed on release; a run that opened it just before that re-checks that the file
    it locked is still the one on disk. Re-entrant within a process.
    """
    lock = lock_path(path)
    key = os.path.abspath(lock)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield lock
        finally:
            _HELD[key] -= 1
        return
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError as err:
            raise write_error(lock, err) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LokiBusyError(
                f"{path}: in use by another run (process {holder} holds {lock}); wait for it "
                "to finish, or stop it, then rerun"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and our lock: retry
    _HELD[key] = 1
    try:
        with contextlib.suppress(OSError):  # the pid only serves the message; a full disk is ok
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield lock
    finally:
        del _HELD[key]
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        os.close(fd)


def file_sha256(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (used to tie adapters to the selection they came from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: Files of a checkpoint at least this large are fingerprinted by samples, not read whole.
SAMPLE_ABOVE_BYTES = 64 << 20
#: Number and size of the blocks sampled from a large file.
SAMPLE_BLOCKS, SAMPLE_BLOCK_BYTES = 64, 64 << 10


def _sampled_sha256(path: Path, size: int) -> str:
    """SHA-256 of a large file's safetensors header (if any) and of evenly spaced blocks.

    The header names every tensor with its dtype, shape and byte range, so it changes with the
    layout; the 64 sampled blocks of 64 KiB (4 MiB read, whatever the file's size) change with
    the values, since fine-tuning or another seed moves essentially every weight. A full hash
    would read 16 GB for an 8B model at every rerun; this reads a few MB.
    """
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        head = fh.read(8)
        digest.update(head)
        if path.suffix == ".safetensors" and len(head) == 8:
            (header_len,) = struct.unpack("<Q", head)
            digest.update(fh.read(min(header_len, 100 << 20)))
        for i in range(SAMPLE_BLOCKS):
            fh.seek(i * max(size - SAMPLE_BLOCK_BYTES, 0) // max(SAMPLE_BLOCKS - 1, 1))
            digest.update(fh.read(SAMPLE_BLOCK_BYTES))
    return digest.hexdigest()


def content_fingerprint(path: str | os.PathLike) -> str:
    """A stable hash of what a file or folder holds (names, sizes, contents; not mtimes).

    Small files are hashed whole; large ones (weights) by :func:`_sampled_sha256`. Resumable
    work records it and starts over when it changes, so a rerun never mixes two models or two
    datasets; copying a checkpoint elsewhere keeps it (unlike an mtime).
    """
    path = Path(path)
    if not path.exists():
        raise LokiInputError(f"{path}: no such file or folder")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    parts = {}
    for f in files:
        name = f.name if f == path else f.relative_to(path).as_posix()
        if f.name.startswith("."):
            continue
        size = f.stat().st_size
        parts[name] = _sampled_sha256(f, size) if size >= SAMPLE_ABOVE_BYTES else file_sha256(f)
    return config_hash(parts)


def config_hash(obj: Any) -> str:
    """Short stable hash of a JSON-serialisable config, so outputs record what made them."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def describe_changes(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two fingerprints, for a 'starting over' message."""
    keys = sorted(set(found) | set(expected))
    return [k for k in keys if found.get(k) != expected.get(k)]
