"""How a training job becomes N processes: torchrun, never a launcher of our own.

torchrun (``python -m torch.distributed.run``) starts the processes, gives each its ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``, and stops them all when one fails. This module only reads
those variables and builds torchrun's command line; it imports no torch, so a job that is
about to hand itself to torchrun does not pay for loading it first. Each process asks the kernel
to kill it when its launcher dies (``die_with_launcher``): torchrun forwards SIGTERM and SIGINT
to them, but a launcher killed outright (SIGKILL, the OOM killer) would otherwise leave them
training to the end, holding the run's lock and GPUs, so that a rerun could not resume.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from typing import NoReturn

from loki_pipeline.errors import LokiInputError

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def launched_size() -> int:
    """How many processes torchrun started (``WORLD_SIZE``; 1 without torchrun)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise LokiInputError(f"environment WORLD_SIZE={value!r}: expected an integer") from None


def launched_rank() -> int:
    """This process's rank among those torchrun started (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "RANK" in os.environ


def die_with_launcher() -> bool:
    """Under torchrun on Linux, have the kernel SIGKILL this process when its launcher (the
    parent) dies; whether that is now armed. Call it first thing in a worker."""
    if not launched_by_torchrun() or not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): this process may outlive "
                    "its launcher", ctypes.get_errno())  # fmt: skip
        return False
    if parent == 1 or os.getppid() != parent:  # the launcher died before it was armed
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def torchrun_command(processes: int, script: str, *args: str) -> list[str]:
    """The command that runs ``script ARGS`` as ``processes`` data-parallel processes on this
    node (``--standalone``: a rendezvous on a free local port, so jobs sharing a machine never
    collide)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={processes}", script, *args]  # fmt: skip


def exec_torchrun(processes: int, script: str, log_path: str, *args: str) -> NoReturn:
    """Replace this process by torchrun running ``script ARGS`` as ``processes`` processes,
    with torchrun's and every process's stderr appended to ``log_path`` (emptied first).

    The process keeps its id, so whoever waits for it (Snakemake) waits for torchrun, which
    waits for every process.
    """
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    command = torchrun_command(processes, script, *args)
    os.execv(command[0], command)
