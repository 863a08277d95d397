"""Training settings: defaults, and how the config's per-task / per-method overrides combine.

Resolution order for a run (task, method): the ``training`` defaults, then
``training.tasks[task]``, then every ``training.methods`` entry whose key matches the method
name or the run name ``{task}-{method}`` (shell-style pattern, e.g. ``loki_q30``, ``lora_*`` or
``reranker-loki*_q30*`` for one task's runs only), in the config's order. A matching
entry's ``lr_scale`` multiplies the learning rate: the LoKI paper trains larger q with a
proportionally lower rate (q=30 at 0.4 x the rate of q=10).
"""

from __future__ import annotations

import argparse
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.settings import StageSettings, from_schema, schema_node

SCHEDULERS: tuple[str, ...] = tuple(schema_node("training.scheduler")["enum"])
DTYPES: tuple[str, ...] = tuple(schema_node("training.dtype")["enum"])
STRATEGIES: tuple[str, ...] = tuple(schema_node("training.distributed")["enum"])


@dataclass
class TrainSettings(StageSettings):
    """Everything a training run depends on (saved next to its outputs); the defaults are the
    schema's ``$defs/training_settings``, whose descriptions say what each one does."""

    learning_rate: float = from_schema("training.learning_rate")
    lr_scale: float = from_schema("training.lr_scale")
    epochs: float = from_schema("training.epochs")
    max_steps: int = from_schema("training.max_steps")
    scheduler: str = from_schema("training.scheduler")
    warmup_ratio: float = from_schema("training.warmup_ratio")
    batch_size: int = from_schema("training.batch_size")
    grad_accum: int = from_schema("training.grad_accum")
    cutoff_len: int = from_schema("training.cutoff_len")
    packing: bool = from_schema("training.packing")
    max_samples: int = from_schema("training.max_samples")
    seed: int = from_schema("training.seed")
    dtype: str = from_schema("training.dtype")
    weight_decay: float = from_schema("training.weight_decay")
    max_grad_norm: float = from_schema("training.max_grad_norm")
    save_every: int = from_schema("training.save_every")
    val_size: float = from_schema("training.val_size")
    keep_checkpoints: bool = from_schema("training.keep_checkpoints")
    processes: int = from_schema("training.processes")
    distributed: str = from_schema("training.distributed")
    gradient_checkpointing: bool = from_schema("training.gradient_checkpointing")
    loss_chunk_tokens: int = from_schema("training.loss_chunk_tokens")
    peft_target_modules: str | list[str] = from_schema("training.peft_target_modules")
    lora_alpha_ratio: float = from_schema("training.lora_alpha_ratio")
    lora_dropout: float = from_schema("training.lora_dropout")
    corda_method: str = from_schema("training.corda_method")
    corda_calibration: str | None = from_schema("training.corda_calibration")
    calibration_samples: int = from_schema("training.calibration_samples")

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], task: str, method: str, **overrides: Any
    ) -> TrainSettings:
        """Run (``task``, ``method``) under a pipeline config: its ``training`` block (but
        ``threads``, the job's) and ``tasks.<task>.train`` combined by :func:`resolve_settings`;
        ``overrides`` that are not None win last."""
        training = {k: v for k, v in (config.get("training") or {}).items() if k != "threads"}
        data = config.get("tasks", {}).get(task, {}).get("train")
        return resolve_settings(training, task, method, data=data, **overrides)

    @classmethod
    def from_cli(
        cls, args: argparse.Namespace, config: Mapping[str, Any] | None = None
    ) -> TrainSettings:
        """``loki train``: the flags named like fields (None: not given) over ``config``'s
        settings for ``args.task`` and ``args.method``."""
        names = {f.name for f in fields(cls)}
        flags = {k: v for k, v in vars(args).items() if k in names}
        return cls.from_config(config or {}, args.task, args.method, **flags)

    @property
    def effective_lr(self) -> float:
        return self.learning_rate * self.lr_scale

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
        for key in (
            "batch_size", "grad_accum", "cutoff_len", "save_every", "calibration_samples",
            "processes",
        ):  # fmt: skip
            if int(getattr(self, key)) < 1:
                raise bad(key, "an integer >= 1")
        if not 0 <= self.val_size < 1:
            raise bad("val_size", "a number in [0, 1)")
        if self.loss_chunk_tokens < 0:
            raise bad("loss_chunk_tokens", "an integer >= 0 (0 = the plain loss)")
        if self.max_samples < 0:
            raise bad("max_samples", "an integer >= 0 (0 = all)")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"one of {', '.join(DTYPES)}")
        if self.distributed not in STRATEGIES:
            raise bad("distributed", f"one of {', '.join(STRATEGIES)}")
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
DATA_KEYS = ("cutoff_len", "packing", "max_samples", "val_size")


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
    run = f"{task}-{method}"  # a pattern may name the task too: 'reranker-loki*_q30*'
    for pattern, overrides in per_method.items():
        if fnmatch.fnmatchcase(method, pattern) or fnmatch.fnmatchcase(run, pattern):
            overrides = dict(overrides)
            scale *= float(overrides.pop("lr_scale", 1.0))
            _apply(settings, overrides, f"training.methods.{pattern}")
    settings["lr_scale"] = scale
    _apply(settings, {k: v for k, v in cli.items() if v is not None}, "command line")
    return TrainSettings(**settings).validate()
