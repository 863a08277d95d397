"""Data-parallel training through torch.distributed, as launched by ``torchrun``.

``torchrun --nproc-per-node N`` (or ``accelerate launch``, which runs torchrun) starts N copies
of the same command and gives each its ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. Each copy
joins one process group here (gloo on CPU, NCCL on CUDA, each rank on a GPU of its own) and the
trainer wraps its loss in DDP, or, for full fine-tuning of a model that does not fit one GPU,
shards it with FSDP. torchrun is the launcher: this module never starts processes, so the same
code runs under a workstation's torchrun, a SLURM job's or accelerate's.

Which rank does what: every rank reads the inputs and trains; rank 0 alone takes the output
locks and writes checkpoints and outputs (see :func:`on_main_rank`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from loki_pipeline.errors import LokiInputError, LokiWriteError
from loki_pipeline.train.launch import die_with_launcher, launched_by_torchrun, launched_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` processes, on ``device``."""

    rank: int = 0
    size: int = 1
    device: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0


_joined: World | None = None  # set while process_group() holds the group


def current() -> World:
    """The world of the running process group (one process when there is none)."""
    if _joined is not None:
        return _joined
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return World(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return World()


def _rank_device(device: str) -> str:
    """This rank's device: CUDA ranks each claim a free GPU (``devices.resolve_device``'s lock
    per GPU, so several multi-GPU jobs on one machine never share one), CPU ranks use the CPU."""
    from loki_pipeline.devices import resolve_device

    if device.startswith("cuda:"):
        raise LokiInputError(
            f"device {device!r} with {launched_size()} processes: every process would use the "
            "same GPU; pass 'cuda' or 'auto' and each claims a GPU of its own"
        )
    return resolve_device(device, share=False)


@contextlib.contextmanager
def process_group(device: str) -> Iterator[World]:
    """Join torchrun's process group for the block (with ``WORLD_SIZE`` > 1) and yield this
    process's :class:`World`, its ``device`` resolved; otherwise yield a one-process world with
    ``device`` as given. The group is left at the end; one that someone else initialised is
    used as it is and left alone."""
    global _joined
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        yield World(dist.get_rank(), dist.get_world_size(), device)
        return
    if launched_size() <= 1:
        yield World(device=device)
        return
    if not launched_by_torchrun():
        raise LokiInputError(
            "WORLD_SIZE > 1 without RANK and LOCAL_RANK: launch with torchrun --nproc-per-node N"
        )
    die_with_launcher()
    rank_device = _rank_device(device)
    if rank_device.startswith("cuda"):
        torch.cuda.set_device(rank_device)
        dist.init_process_group("nccl", device_id=torch.device(rank_device))
    else:
        dist.init_process_group("gloo")
    _joined = World(dist.get_rank(), dist.get_world_size(), rank_device)
    if not _joined.main:  # rank 0 speaks for the run; the others only report errors
        logging.getLogger("loki_pipeline").setLevel(logging.ERROR)
    log.info("process %d of %d on %s (%s)", _joined.rank, _joined.size, rank_device,
             dist.get_backend())  # fmt: skip
    try:
        yield _joined
    finally:
        _joined = None
        dist.destroy_process_group()


# --------------------------------------------------------------------------- collectives
def _collective_device() -> torch.device:
    """NCCL collectives take tensors on this rank's GPU (the current device), gloo on the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum over the ranks (float64, so token counts stay exact)."""
    if current().size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (pickled between this job's own processes)."""
    if current().size == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0, device=_collective_device())
    return box[0]


def check_same(value: Any, what: str) -> None:
    """Fail on every rank whose ``value`` differs from rank 0's (``what`` names it)."""
    main = from_main(value)
    if main != value:
        raise LokiInputError(
            f"process {current().rank} sees other {what} than process 0: every process must "
            "read the same files"
        )


def barrier() -> None:
    if current().size > 1:
        torch.distributed.barrier()


@contextlib.contextmanager
def on_main_rank(enter: Callable[[], AbstractContextManager]) -> Iterator[None]:
    """Hold the context ``enter()`` (an output's lock) on rank 0 only, and fail on every rank
    when rank 0 cannot enter it: the locks are per process, so rank 1 asking for rank 0's lock
    would be refused, and a rank that went on alone would wait for rank 0 forever."""
    if current().size == 1:
        with enter():
            yield
        return
    with contextlib.ExitStack() as stack:
        error: Exception | None = None
        if current().main:
            try:
                stack.enter_context(enter())
            except (LokiInputError, LokiWriteError) as err:
                error = err
        shared = from_main(error)
        if shared is not None:
            raise error or shared
        yield


# --------------------------------------------------------------------------- wrapping
def wrap(objective: nn.Module, strategy: str, layers: Sequence[nn.Module]) -> nn.Module:
    """``objective`` (a module whose forward returns the loss) made data-parallel.

    ``ddp``: every rank holds the whole model; gradients are averaged over the ranks after the
    last micro-batch of a step (the caller runs the others under ``no_sync()``). Buffers are
    not broadcast each step: they are equal on every rank (same checkpoint, same seed).
    ``fsdp``: FSDP2 ``fully_shard`` per decoder layer, then the rest (embeddings, norm, LM head)
    with the objective as root, so each rank holds 1/N of the parameters, gradients and AdamW
    state, moved to this rank's device; gradients are averaged like DDP's.
    """
    world = current()  # a group joined elsewhere: the device the model is on
    device = torch.device(world.device or next(objective.parameters()).device)
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(objective, device_ids=ids, forward_sync_buffers=False)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (world.size,))
        for layer in layers:
            fully_shard(layer, mesh=mesh)
        return fully_shard(objective, mesh=mesh)
    raise LokiInputError(f"training setting distributed={strategy!r}: expected 'ddp' or 'fsdp'")


def _is_shard(tensor: torch.Tensor) -> bool:
    """An FSDP2 shard (a DTensor); never on a torch built without torch.distributed."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP shard (a collective: every rank calls it), else ``tensor``."""
    return tensor.full_tensor() if _is_shard(tensor) else tensor


def shard_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` (a whole tensor every rank read from the same file) sharded as ``like``."""
    if not _is_shard(like):
        return value
    from torch.distributed.tensor import distribute_tensor

    value = value.to(device=like.device, dtype=like.dtype)
    return distribute_tensor(value, like.device_mesh, like.placements, src_data_rank=None)


def is_sharded(model: nn.Module) -> bool:
    return any(_is_shard(p) for p in model.parameters())


def gather_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict on CPU, on rank 0 ({} on the others; every rank calls)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)
