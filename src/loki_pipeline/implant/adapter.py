"""LoKI adapters on disk: only the trained rows plus their indices, and a small JSON config.

Layout of an adapter directory::

    adapter_model.safetensors   layers.{l}.rows (int64) and layers.{l}.delta, or
                                layers.{l}.lora_A / layers.{l}.lora_B (LoKI*)
    loki_config.json            {"type": "loki", "base_model", "selection", "selection_sha256",
                                 "strategy", "q", "rank", "model_type", "num_layers", "d_model",
                                 "d_ff", "trainable_params", "package_version"}
    loki_base.json              {"base_model": path, "base_fingerprint": fingerprint of its
                                 weights} (LoKI and PEFT adapters alike; ``merge`` checks it)

A few MB instead of a full checkpoint; ``merge`` folds it into a plain checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loki_pipeline import __version__
from loki_pipeline.errors import LokiInputError
from loki_pipeline.implant.apply import apply_loki, loki_layers
from loki_pipeline.io import config_hash, content_fingerprint, file_sha256, write_json
from loki_pipeline.models.architecture import get_adapter
from loki_pipeline.select.selection_file import Selection

log = logging.getLogger(__name__)

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "loki_config.json"
BASE_NAME = "loki_base.json"


def base_fingerprint(model_dir: str | os.PathLike) -> str:
    """Fingerprint of a checkpoint's weights (``*.safetensors``), what an adapter is tied to.

    Only the weights: re-saving the tokenizer or ``config.json`` (another transformers version)
    keeps an adapter valid, while other weights under the same config do not.
    """
    model_dir = Path(model_dir)
    weights = sorted(model_dir.glob("*.safetensors"))
    if not model_dir.is_dir() or not weights:
        raise LokiInputError(f"{model_dir}: not a checkpoint with *.safetensors weights")
    return config_hash({f.name: content_fingerprint(f) for f in weights})


def record_base_fingerprint(adapter_dir: str | os.PathLike, model_dir: str | os.PathLike) -> Path:
    """Write ``adapter_dir/loki_base.json``: the base's path and :func:`base_fingerprint`.

    ``merge`` refuses to fold the adapter into any other base (see :func:`check_base`).
    """
    path = Path(adapter_dir) / BASE_NAME
    record = {"base_model": str(model_dir), "base_fingerprint": base_fingerprint(model_dir)}
    write_json(path, record)
    return path


def check_base(adapter_dir: str | os.PathLike, model_dir: str | os.PathLike) -> None:
    """``LokiInputError`` unless ``model_dir`` is the base the adapter recorded.

    An adapter without a record (made outside this pipeline) only gets a warning.
    """
    path = Path(adapter_dir) / BASE_NAME
    if not path.is_file():
        log.warning(
            "adapter %s records no base model (%s is missing): cannot verify that %s is the "
            "model it was trained on; merging anyway",
            adapter_dir, BASE_NAME, model_dir,
        )  # fmt: skip
        return
    try:
        record = json.loads(path.read_text())
        recorded = record["base_fingerprint"]
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise LokiInputError(f"{path}: unreadable base record ({err!r})") from None
    found = base_fingerprint(model_dir)
    if found != recorded:
        raise LokiInputError(
            f"adapter {adapter_dir} was trained on {record.get('base_model')!r} (weights "
            f"fingerprint {recorded}), but {model_dir} holds other weights (fingerprint {found}): "
            "merge it onto the base it was trained on"
        )


def save_loki_adapter(
    model: nn.Module,
    out_dir: str | os.PathLike,
    *,
    base_model: str | None = None,
    selection: str | os.PathLike | None = None,
    strategy: str | None = None,
    q: float | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the trained rows of a LoKI-wrapped model (not atomic: callers write into a temp dir).

    When ``base_model`` is a checkpoint directory its weights' fingerprint is recorded too
    (:func:`record_base_fingerprint`), so ``merge`` can refuse another base.
    """
    from safetensors.torch import save_file

    layers = loki_layers(model)
    if not layers:
        raise LokiInputError("model has no LoKI layers to save (apply_loki first)")
    adapter = get_adapter(model)
    ranks = {m.rank for m in layers.values()}
    rank = ranks.pop() if len(ranks) == 1 else None
    tensors: dict[str, torch.Tensor] = {}
    for i, m in layers.items():
        tensors[f"layers.{i}.rows"] = m.rows.detach().cpu().contiguous()
        if m.rank is None:
            tensors[f"layers.{i}.delta"] = m.delta.detach().cpu().contiguous()
        else:
            tensors[f"layers.{i}.lora_A"] = m.lora_A.detach().cpu().contiguous()
            tensors[f"layers.{i}.lora_B"] = m.lora_B.detach().cpu().contiguous()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_NAME))
    config = {
        "type": "loki",
        "base_model": None if base_model is None else str(base_model),
        "selection": None if selection is None else str(selection),
        "selection_sha256": (
            file_sha256(selection) if selection is not None and Path(selection).is_file() else None
        ),
        "strategy": strategy,
        "q": q,
        "rank": rank,
        "model_type": adapter.model_type,
        "num_layers": adapter.num_layers,
        "d_model": adapter.d_model,
        "d_ff": adapter.d_ff,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "package_version": __version__,
        **(extra or {}),
    }
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    if base_model is not None and any(Path(base_model).glob("*.safetensors")):
        record_base_fingerprint(out, base_model)
    return out


def read_loki_config(adapter_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(adapter_dir) / CONFIG_NAME
    if not path.is_file():
        raise LokiInputError(f"{adapter_dir} is not a LoKI adapter: {CONFIG_NAME} is missing")
    return json.loads(path.read_text())


def load_loki_adapter(model: nn.Module, adapter_dir: str | os.PathLike) -> nn.Module:
    """Wrap ``model`` with the adapter's rows and load its trained values (in place)."""
    from safetensors.torch import load_file

    config = read_loki_config(adapter_dir)
    adapter = get_adapter(model)
    shape = (adapter.num_layers, adapter.d_model, adapter.d_ff)
    want = (config.get("num_layers"), config.get("d_model"), config.get("d_ff"))
    if shape != want:
        raise LokiInputError(
            f"adapter {adapter_dir} was trained on a model with (layers, d_model, d_ff) = {want}, "
            f"but this model has {shape}: load it onto its base model {config.get('base_model')!r}"
        )
    weights_path = Path(adapter_dir) / WEIGHTS_NAME
    if not weights_path.is_file():
        raise LokiInputError(f"adapter {adapter_dir}: {WEIGHTS_NAME} is missing")
    tensors = load_file(str(weights_path))
    positions = [
        tensors[f"layers.{i}.rows"].tolist() if f"layers.{i}.rows" in tensors else []
        for i in range(adapter.num_layers)
    ]
    apply_loki(
        model, Selection(positions=positions, path=str(adapter_dir)), rank=config.get("rank")
    )
    with torch.no_grad():
        for i, m in loki_layers(model).items():
            names = ["delta"] if m.rank is None else ["lora_A", "lora_B"]
            for name in names:
                key = f"layers.{i}.{name}"
                if key not in tensors and m.num_rows:
                    raise LokiInputError(f"adapter {adapter_dir}: tensor {key} is missing")
                if key in tensors:
                    getattr(m, name).copy_(tensors[key])
    return model
