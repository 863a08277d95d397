"""Training settings: defaults, and how the config's per-task / per-method overrides combine.

Resolution order for a run (task, method): the ``training`` defaults, then
``training.tasks[task]``, then every ``training.methods`` entry whose key matches the method
name (shell-style pattern, e.g. ``loki_q30`` or ``lora_*``), in the config's order. A matching
entry's ``lr_scale`` multiplies the learning rate: the LoKI paper trains larger q with a
proportionally lower rate (q=30 at 0.4 x the rate of q=10).
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, fields
from typing import Any

from loki_pipeline.errors import LokiInputError

SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class TrainSettings:
    """Everything a training run depends on (saved next to its outputs)."""

    learning_rate: float = 1e-4
    lr_scale: float = 1.0
    epochs: float = 1.0
    max_steps: int = 0  # > 0 overrides epochs
    scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    batch_size: int = 4
    grad_accum: int = 1
    cutoff_len: int = 512
    packing: bool = False
    max_samples: int = 0  # 0: all examples
    seed: int = 42
    dtype: str = "float32"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    save_every: int = 10  # optimizer steps between resumable checkpoints
    keep_checkpoints: bool = False
    peft_target_modules: str | list[str] = "all-linear"
    lora_alpha_ratio: float = 2.0  # lora_alpha = ratio * r (LLaMA-Factory's default)
    lora_dropout: float = 0.0
    corda_method: str = "ipm"
    calibration_samples: int = 16

    @property
    def effective_lr(self) -> float:
        return self.learning_rate * self.lr_scale

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> TrainSettings:
        def bad(key: str, want: str) -> LokiInputError:
            return LokiInputError(f"training setting {key}={getattr(self, key)!r}: expected {want}")

        if not self.learning_rate > 0:
            raise bad("learning_rate", "a positive number")
        if not self.lr_scale > 0:
            raise bad("lr_scale", "a positive number")
        if self.max_steps < 0:
            raise bad("max_steps", "an integer >= 0 (0 = use epochs)")
        if self.max_steps == 0 and not self.epochs > 0:
            raise bad("epochs", "a positive number when max_steps is 0")
        if self.scheduler not in SCHEDULERS:
            raise bad("scheduler", f"one of {', '.join(SCHEDULERS)}")
        if not 0 <= self.warmup_ratio < 1:
            raise bad("warmup_ratio", "a number in [0, 1)")
        for key in ("batch_size", "grad_accum", "cutoff_len", "save_every", "calibration_samples"):
            if int(getattr(self, key)) < 1:
                raise bad(key, "an integer >= 1")
        if self.max_samples < 0:
            raise bad("max_samples", "an integer >= 0 (0 = all)")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"one of {', '.join(DTYPES)}")
        if self.corda_method not in ("ipm", "kpm"):
            raise bad("corda_method", "'ipm' or 'kpm'")
        return self


_KEYS = {f.name for f in fields(TrainSettings)}


def _check_known(overrides: dict[str, Any], where: str) -> None:
    unknown = set(overrides) - _KEYS
    if unknown:
        raise LokiInputError(
            f"{where}: unknown training setting(s) {sorted(unknown)}; known: {sorted(_KEYS)}"
        )


def _apply(settings: dict[str, Any], overrides: dict[str, Any], where: str) -> None:
    _check_known(overrides, where)
    settings.update(overrides)


#: keys of the config's ``tasks.{task}.train`` block that are training settings
DATA_KEYS = ("cutoff_len", "packing", "max_samples")


def resolve_settings(
    training: dict[str, Any] | None,
    task: str,
    method: str,
    *,
    data: dict[str, Any] | None = None,
    **cli: Any,
) -> TrainSettings:
    """Combine the config's ``training`` block for one run; ``cli`` values (not None) win last.

    ``data`` is the task's ``tasks.{task}.train`` block: its cutoff_len / packing / max_samples
    apply after the ``training`` defaults and before the per-task and per-method overrides.
    Every override, matching or not, is checked against the config schema's one definition of
    the settings first, so ``batch_size: 2.7`` fails here naming its key, not in the loop.
    """
    from loki_pipeline.schemas import validate_training

    training = dict(training or {})
    per_task = {k: v or {} for k, v in (training.pop("tasks", {}) or {}).items()}
    per_method = {k: v or {} for k, v in (training.pop("methods", {}) or {}).items()}
    _check_known(training, "training")
    for name, overrides in per_task.items():
        _check_known(overrides, f"training.tasks.{name}")
    for pattern, overrides in per_method.items():
        _check_known(overrides, f"training.methods.{pattern}")
    validate_training(training | {"tasks": per_task, "methods": per_method})
    settings: dict[str, Any] = {}
    _apply(settings, training, "training")
    for key in DATA_KEYS:
        if (data or {}).get(key) is not None:
            settings[key] = data[key]
    _apply(settings, per_task.get(task, {}), f"training.tasks.{task}")
    scale = float(settings.pop("lr_scale", 1.0))
    for pattern, overrides in per_method.items():
        if fnmatch.fnmatchcase(method, pattern):
            overrides = dict(overrides)
            scale *= float(overrides.pop("lr_scale", 1.0))
            _apply(settings, overrides, f"training.methods.{pattern}")
    settings["lr_scale"] = scale
    _apply(settings, {k: v for k, v in cli.items() if v is not None}, "command line")
    return TrainSettings(**settings).validate()
