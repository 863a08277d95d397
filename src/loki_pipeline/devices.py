"""Which device a job runs on, and one GPU per job when several jobs share a machine.

Snakemake's local executor counts a ``gpu`` resource but does not say *which* GPU a job may
use, so every job would otherwise open ``cuda:0``. A job that asks for ``"auto"`` or
``"cuda"`` therefore claims a free GPU: an exclusive ``flock`` on one lock file per physical
GPU (keyed by its UUID, so jobs that see different ``CUDA_VISIBLE_DEVICES`` still agree), held
until the process exits. The operating system drops the lock when a job dies, so nothing goes
stale. Under SLURM each job sees only its own GPUs and simply claims the first. A
data-parallel job of N processes (``training.processes``) claims N GPUs the same way: each
process claims one, and none may share (see :func:`resolve_device`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from loki_pipeline.errors import LokiInputError

log = logging.getLogger(__name__)

#: Folder of the lock files (one per GPU); override to share it across containers.
LOCK_DIR_ENV = "LOKI_GPU_LOCK_DIR"

_claimed: dict[str, object] = {}  # this process's claim: {"device": str, "handle": IO}


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "loki-gpu-locks")


def claim_free(gpu_ids: Sequence[str], directory: Path) -> tuple[int, IO] | None:
    """Lock the first GPU of ``gpu_ids`` that no other process holds: ``(index, handle)``.

    ``None`` when every one is held. Keep the handle open for as long as the GPU is in use.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for index, gpu_id in enumerate(gpu_ids):
        handle = open(directory / f"{gpu_id}.lock", "a")  # noqa: SIM115 (held until exit)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return index, handle
    return None


def _gpu_ids(torch) -> list[str]:
    ids = []
    for i in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        ids.append(f"gpu-{uuid}" if uuid else f"gpu-index-{i}")
    return ids


def _claim_gpu(torch, share: bool) -> str:
    if "device" in _claimed:
        return str(_claimed["device"])
    claim = claim_free(_gpu_ids(torch), lock_dir())
    if claim is None and not share:
        raise LokiInputError(
            f"no free GPU: all {torch.cuda.device_count()} are claimed by other jobs or by this "
            "job's other processes (one GPU each); lower training.processes, or give the "
            "local profile's `gpu` resource the machine's GPU count so Snakemake waits"
        )
    if claim is None:
        # More GPU jobs than GPUs (the `gpu` resource was not set): share the emptiest one.
        free = [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]
        index = max(range(len(free)), key=free.__getitem__)
        log.warning("every GPU is claimed by another job; sharing cuda:%d", index)
        device = f"cuda:{index}"
    else:
        index, _claimed["handle"] = claim
        device = f"cuda:{index}"
        log.info("claimed %s (lock in %s)", device, lock_dir())
    _claimed["device"] = device
    return device


def resolve_device(device: str, *, share: bool = True) -> str:
    """``"cpu"``, ``"cuda:N"`` as given; ``"cuda"`` and (with a GPU) ``"auto"``: a free GPU.

    When every GPU is claimed, a job shares the emptiest one, or with ``share=False`` (one
    process of a data-parallel job: two of them on one GPU would stop NCCL) fails. Devices
    that do not exist are rejected with a clear error.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise LokiInputError(
            f"device {device!r}: expected 'cpu', 'cuda', 'cuda:N' or 'auto'"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LokiInputError(f"device {device!r}: CUDA is not available on this machine")
        if dev.index is None:
            return _claim_gpu(torch, share)
        if dev.index >= torch.cuda.device_count():
            raise LokiInputError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s)"
            )
    return str(dev)
