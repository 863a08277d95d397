"""The training loop's resumable checkpoint, and the files a run keeps beside it.

A checkpoint is one directory, ``{checkpoint_dir}/last/``, renamed into place whole: tensors
(trainable parameters, AdamW state, RNG states) in safetensors and everything else in JSON, so
loading it never unpickles anything (a planted pickle cannot run code). ``state.json`` records a
fingerprint of the tensors file and of every input the weights depend on; a checkpoint that
does not verify, or that was made from other inputs, is set aside with a log line and training
starts from step 0.

Tensors are saved whole, whatever the process count, so a checkpoint resumes under any count.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from loki_pipeline.io import atomic_path, content_fingerprint, describe_changes, remove_tree
from loki_pipeline.train import distributed
from loki_pipeline.train.methods import Method

log = logging.getLogger(__name__)

#: the resumable state: a directory holding TENSORS_FILE and STATE_FILE (JSON, written last)
CHECKPOINT_NAME = "last"
TENSORS_FILE, STATE_FILE = "tensors.safetensors", "state.json"
CHECKPOINT_FORMAT = 2
#: earlier versions pickled the state here; it is never loaded (unpickling can run code)
LEGACY_CHECKPOINT = "last.pt"
INITIAL_ADAPTER = "initial_adapter"


def save_initial_adapter(model, method: Method, checkpoint_dir) -> Path | None:
    """PiSSA/CorDA (kinds with ``initial_adapter``): save the adapter as initialised, for
    converting the trained one to a LoRA.

    Their initialisation rewrites the base (``W -> W_res = W - B0 A0``), so the trained adapter
    only fits ``W_res``; with this initial adapter, ``save_pretrained(...,
    path_initial_model_for_weight_conversion=...)`` writes the update ``BA - B0 A0`` as a plain
    rank-2r LoRA on the original base. Call it after :func:`prepare_model` and before training,
    on every start (a resume included): each start recomputes ``W_res``, and this is the initial
    adapter that matches it.
    """
    if not method.spec.initial_adapter:
        return None
    path = Path(checkpoint_dir) / INITIAL_ADAPTER
    with atomic_path(path, is_dir=True) as tmp:
        model.save_pretrained(str(tmp))
    return path


def remove_checkpoint(checkpoint_dir: str | os.PathLike) -> None:
    """Delete what the trainer wrote in ``checkpoint_dir``, then the folder if it is empty.

    Only the trainer's own entries go, each through :func:`remove_tree` (which refuses a path
    leading outside ``checkpoint_dir``), so a ``--checkpoint-dir`` pointing at a folder that
    holds anything else, or a planted symlink, never costs a file the trainer did not write.
    """
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return
    names = (CHECKPOINT_NAME, INITIAL_ADAPTER, LEGACY_CHECKPOINT)
    for entry in [root / name for name in names] + _stale_temporaries(root):
        remove_tree(entry, root)
    with contextlib.suppress(OSError):
        root.rmdir()  # only if empty


def remove_stale_temporaries(checkpoint_dir: str | os.PathLike) -> None:
    """Remove the temporaries of a checkpoint write that was killed (they only take space).

    Call it only while holding the run's lock: a running writer's temporary looks the same.
    """
    root = Path(checkpoint_dir)
    for entry in _stale_temporaries(root):
        remove_tree(entry, root)


def _stale_temporaries(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [
        entry
        for name in (CHECKPOINT_NAME, INITIAL_ADAPTER)
        for pattern in (f".{name}.*.tmp", f".{name}.*.old")
        for entry in root.glob(pattern)
    ]


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    return distributed.full_tensor(tensor.detach()).cpu().contiguous()


def save_checkpoint(
    path: Path, model, optimizer, scheduler, step: int, rows, fingerprint, *, write: bool = True
) -> None:
    """Write the resumable state as one directory (tensors first, ``state.json`` last).

    Tensors are saved whole, whatever the process count, so any count resumes from them; FSDP
    shards are gathered first, so every rank calls this and only rank 0 (``write``) writes.
    """
    from safetensors.torch import save_file

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    tensors = {f"param.{n}": _whole(p) for n, p in model.named_parameters() if p.requires_grad}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in opt["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{idx}.{key}"] = _whole(value)
            else:
                scalars.setdefault(str(idx), {})[key] = value
    if not write:
        return
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    with atomic_path(path, is_dir=True) as tmp:
        save_file(tensors, tmp / TENSORS_FILE)
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "fingerprint": fingerprint,
            "tensors_fingerprint": content_fingerprint(tmp / TENSORS_FILE),
            "params": names,  # optimizer parameter i is params[i]
            "param_groups": opt["param_groups"],
            "optimizer_scalars": scalars,
            "scheduler": scheduler.state_dict(),
            "log": rows,
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")


class _Unusable(Exception):
    """A checkpoint that cannot be resumed from (corrupt, truncated, other format)."""


def _read_state(path: Path) -> dict[str, Any]:
    """The checkpoint's ``state.json``, if it is one this version wrote."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError) as err:
        raise _Unusable(f"{STATE_FILE}: {err}") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise _Unusable(f"{STATE_FILE} is not a format-{CHECKPOINT_FORMAT} checkpoint")
    if not isinstance(state.get("fingerprint"), dict):
        raise _Unusable(f"{STATE_FILE} has no input fingerprint")
    return state


def _read_tensors(path: Path, state: dict, model, optimizer) -> tuple[dict, dict]:
    """``(tensors, optimizer_state)`` of a checkpoint, checked against the model.

    Everything is verified here, before anything is applied, so an unusable checkpoint leaves
    the model and optimizer untouched.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if content_fingerprint(path / TENSORS_FILE) != state["tensors_fingerprint"]:
            raise _Unusable(f"{TENSORS_FILE} is truncated or corrupt (its fingerprint differs)")
        tensors = load_file(path / TENSORS_FILE)
        params = dict(model.named_parameters())
        names = [n for n, p in params.items() if p.requires_grad]
        if state["params"] != names:
            raise _Unusable("it trains other parameters than this model")
        for n in names:
            if tensors[f"param.{n}"].shape != params[n].shape:
                raise _Unusable(f"parameter {n} has another shape")
        groups = state["param_groups"]
        current = optimizer.state_dict()["param_groups"]
        if len(groups) != len(current):
            raise _Unusable("its optimizer has other parameter groups")
        for group, now in zip(groups, current, strict=True):
            for key, value in now.items():
                if isinstance(value, tuple):  # JSON turned AdamW's betas into a list
                    group[key] = tuple(group[key])
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, idx, name = key.split(".", 2)
                if name != "step" and value.shape != params[names[int(idx)]].shape:
                    raise _Unusable(f"optimizer state {key} has another shape")
                opt_state.setdefault(int(idx), {})[name] = value
        for idx, entry in opt_state.items():  # FSDP: each rank keeps its shard of the state
            for name, value in entry.items():
                if name != "step":
                    entry[name] = distributed.shard_like(value, params[names[idx]])
        for idx, entry in state["optimizer_scalars"].items():
            opt_state.setdefault(int(idx), {}).update(entry)
        if tensors["rng.cpu"].dtype != torch.uint8 or not isinstance(state["step"], int):
            raise _Unusable("its RNG state or step is malformed")
        return tensors, {"state": opt_state, "param_groups": groups}
    except _Unusable:
        raise
    except (OSError, ValueError, KeyError, IndexError, TypeError, SafetensorError) as err:
        raise _Unusable(f"{type(err).__name__}: {err}") from err


def load_checkpoint(path: Path, model, optimizer, scheduler, fingerprint) -> tuple[int, list]:
    """Resume from checkpoint ``path`` if it verifies and was made from the same inputs.

    Otherwise training starts from step 0, with a warning saying why (the next checkpoint
    replaces the old one). A pickle left by an earlier version is never opened.
    """
    legacy = path.parent / LEGACY_CHECKPOINT
    if legacy.exists():
        log.warning(
            "ignoring %s: pickle checkpoints of earlier versions are never loaded (unpickling "
            "can run code)",
            legacy,
        )
    if not path.exists():
        return 0, []
    try:
        state = _read_state(path)
        if state["fingerprint"] != fingerprint:
            changed = describe_changes(state["fingerprint"], fingerprint)
            log.warning(
                "checkpoint %s was made from other inputs (changed: %s): training starts over "
                "from step 0",
                path,
                ", ".join(changed),
            )
            return 0, []
        tensors, opt_state = _read_tensors(path, state, model, optimizer)
        optimizer.load_state_dict(opt_state)  # checks everything before changing anything
    except (_Unusable, ValueError, TypeError) as err:
        log.warning("checkpoint %s is unusable (%s): training starts over from step 0", path, err)
        return 0, []
    scheduler.load_state_dict(state["scheduler"])
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in state["params"]:
            params[name].copy_(distributed.shard_like(tensors[f"param.{name}"], params[name]))
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_keys = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k[9:]))
    cuda_rng = [tensors[k] for k in cuda_keys]
    if cuda_rng and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_rng)
    log.info("resumed from %s at step %d", path, state["step"])
    return state["step"], list(state["log"])
