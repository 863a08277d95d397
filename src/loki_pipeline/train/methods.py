"""The one registry of training methods: a run's name says how it trains, saves and merges.

Grammar (``{q}`` a percentage in (0, 100), written as ``select.naming.format_q`` writes it:
``10`` not ``10.0``; ``{r}`` >= 1)::

    loki_q{q}                          LoKI, layer-balanced low-contribution selection
    loki_{strategy}_q{q}               LoKI on another selection (G-H/G-L and high ablations),
                                       strategy in layer_balanced_low, layer_balanced_high,
                                       global_low, global_high
    loki_lora_q{q}_r{r}                LoKI*: rank-r factors on the selected rows
    loki_{strategy}_lora_q{q}_r{r}     LoKI* on another selection
    full                               every parameter trainable
    lora_r{r} dora_r{r} pissa_r{r} corda_r{r}   PEFT baselines (all linear layers of the blocks)

Each kind is one :class:`MethodKind` entry of :data:`METHOD_KINDS` (as peft's
``register_peft_method`` makes a PEFT method one entry): the pattern of its names and its
``prepare`` / ``save`` / ``merge`` hooks, which the trainer, the run and ``loki merge`` call
instead of asking which kind they hold. Adding a method is one ``register(...)`` call; a PEFT
baseline is one :func:`peft_kind`. The hooks import torch and peft only when called, so this
module stays light enough for the Snakemake rules to import.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.select.naming import STRATEGIES, selection_stem

if TYPE_CHECKING:
    from loki_pipeline.train.settings import TrainSettings

log = logging.getLogger(__name__)

DEFAULT_STRATEGY = "layer_balanced_low"

_NUM = r"\d+(?:\.\d+)?"
_STRATEGY = rf"(?:_(?P<strategy>{'|'.join(STRATEGIES)}))?"


@dataclass(frozen=True)
class Method:
    """A parsed method name; ``kind`` is its :data:`METHOD_KINDS` key ('loki', 'lora', ...)."""

    name: str
    kind: str
    strategy: str | None = None
    q: float | None = None
    rank: int | None = None

    @property
    def spec(self) -> MethodKind:
        """The registry entry: how this method trains, saves and merges."""
        return METHOD_KINDS[self.kind]

    @property
    def needs_selection(self) -> bool:
        return self.spec.needs_selection

    @property
    def selection_name(self) -> str | None:
        """Stem of the selection file this method trains on: ``{strategy}_q{q}``."""
        if not self.needs_selection:
            return None
        return selection_stem(self.strategy, self.q)


@dataclass(frozen=True)
class MethodKind:
    """One kind of method: the names it answers to and what it does at each step of a run.

    ``prepare(model, method, settings, selection=, calibration=)`` makes exactly the method's
    parameters trainable and returns the model to train. ``save(model, method, adapter_dir,
    model_dir=, selection_path=, initial_adapter=)`` writes ``adapter/`` and returns the trained
    model as a plain one (for ``merged/``). ``merge(model, adapter_dir)`` folds a saved adapter
    into a loaded base (``loki merge``), for the adapters marked by ``adapter_file``.
    ``counts(method, selection, arch)`` adds entries to ``trainable_params.json``.
    ``initial_adapter``: the initialisation rewrites the base (PiSSA, CorDA), so the adapter as
    initialised is kept and the trained one is converted against it on save.
    """

    name: str
    #: a whole method name of this kind matches it; named groups ``strategy``, ``q``, ``r``
    pattern: str
    #: its name forms, for the error that lists every method
    grammar: str
    prepare: Callable[..., Any]
    save: Callable[..., Any]
    merge: Callable[..., Any] | None = None
    #: the file that marks a saved adapter of this kind, and what ``merge`` calls the format
    adapter_file: str | None = None
    adapter_label: str = ""
    #: it trains the nodes of a selection file (``{strategy}_q{q}.json``)
    needs_selection: bool = False
    initial_adapter: bool = False
    counts: Callable[..., dict[str, Any]] = lambda method, selection, arch: {}


METHOD_KINDS: dict[str, MethodKind] = {}


def register(kind: MethodKind) -> MethodKind:
    """Add a kind to :data:`METHOD_KINDS` (names are unique)."""
    if kind.name in METHOD_KINDS:
        raise ValueError(f"method kind {kind.name!r} is already registered")
    METHOD_KINDS[kind.name] = kind
    return kind


# --------------------------------------------------------------------------- LoKI and LoKI*
def _prepare_loki(model, method: Method, settings, *, selection, calibration):
    from loki_pipeline.implant.apply import apply_loki

    if selection is None:
        raise LokiInputError(f"method {method.name} needs a selection file (--selection)")
    return apply_loki(model, selection, rank=method.rank)


def _save_loki(model, method: Method, adapter_dir: Path, *, model_dir, selection_path, **_):
    from loki_pipeline.implant.adapter import save_loki_adapter
    from loki_pipeline.implant.apply import merge_loki

    save_loki_adapter(
        model,
        adapter_dir,
        base_model=str(model_dir),
        selection=selection_path,
        strategy=method.strategy,
        q=method.q,
        extra={"method": method.name},
    )
    return merge_loki(model)


def _merge_loki(model, adapter_dir: Path):
    from loki_pipeline.implant.adapter import load_loki_adapter
    from loki_pipeline.implant.apply import merge_loki

    return merge_loki(load_loki_adapter(model, adapter_dir))


def _loki_counts(method: Method, selection, arch) -> dict[str, Any]:
    """The selection's size and the LoKI paper's parameter formula, beside the measured count."""
    return {
        "selected_nodes": selection.total,
        "nodes_per_layer": [len(p) for p in selection.positions],
        "paper_formula": "q/100 * L * d_model * d_ff",
        "paper_formula_params": int(method.q / 100 * arch.num_layers * arch.d_model * arch.d_ff),
    }


_LOKI = {
    "prepare": _prepare_loki,
    "save": _save_loki,
    "merge": _merge_loki,
    "adapter_file": "loki_config.json",  # implant.adapter.CONFIG_NAME
    "adapter_label": "a LoKI adapter",
    "needs_selection": True,
    "counts": _loki_counts,
}
register(
    MethodKind(
        name="loki",
        pattern=rf"loki{_STRATEGY}_q(?P<q>{_NUM})",
        grammar="loki_q{q}, loki_{strategy}_q{q}",
        **_LOKI,
    )
)
register(
    MethodKind(
        name="loki*",
        pattern=rf"loki{_STRATEGY}_lora_q(?P<q>{_NUM})_r(?P<r>\d+)",
        grammar="loki_lora_q{q}_r{r}, loki_{strategy}_lora_q{q}_r{r}",
        **_LOKI,
    )
)


# --------------------------------------------------------------------------- full fine-tuning
def _prepare_full(model, method: Method, settings, *, selection, calibration):
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _save_full(model, method: Method, adapter_dir: Path, **_):
    adapter_dir.mkdir()
    (adapter_dir / "README.md").write_text(
        "Full fine-tuning trains every parameter: the model is ../merged/.\n"
    )
    return model


register(MethodKind(name="full", pattern="full", grammar="full", prepare=_prepare_full,
                    save=_save_full))  # fmt: skip


# --------------------------------------------------------------------------- PEFT baselines
def _prepare_peft(model, method: Method, settings, *, selection, calibration, options, calibrate):
    """Wrap the model in a LoRA-family adapter (``LoraConfig`` plus ``options(settings)``) on
    all linear layers of the blocks; ``calibrate(model, config, settings, calibration)``, if
    given, runs before the wrap."""
    from peft import LoraConfig, get_peft_model
    from torch import nn

    from loki_pipeline.models.architecture import get_adapter

    targets = settings.peft_target_modules
    if targets == "all-linear":
        # expanded here because peft's CorDA preprocessing does not understand "all-linear"
        layers = get_adapter(model).layers
        targets = sorted(
            {n.rsplit(".", 1)[-1] for n, m in layers.named_modules() if isinstance(m, nn.Linear)}
        )
    config = LoraConfig(
        r=method.rank,
        lora_alpha=settings.lora_alpha_ratio * method.rank,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        **options(settings),
    )
    if calibrate is not None:
        calibrate(model, config, settings, calibration)
    model = get_peft_model(model, config)
    # corda_config only drives the initialisation: without it the adapter, saved as a plain
    # LoRA (see checkpoint.save_initial_adapter), loads without peft's "corda_config ... ignored"
    # warning
    model.peft_config["default"].corda_config = None
    return model


def _save_peft(model, method: Method, adapter_dir: Path, *, model_dir, initial_adapter, **_):
    """A standard PEFT adapter on the original base: PiSSA/CorDA converted against
    ``initial_adapter`` into a plain rank-2r LoRA, so ``merge`` onto ``model_dir`` works."""
    from loki_pipeline.implant.adapter import record_base_fingerprint

    with warnings.catch_warnings():
        # the conversion loads the initial adapter beside the trained one, which peft
        # warns about (PiSSA/CorDA "should not be used with other adapters") as if misused
        warnings.filterwarnings("ignore", r"(PiSSA|CorDA) changes the base weights")
        model.save_pretrained(
            str(adapter_dir),
            path_initial_model_for_weight_conversion=(
                None if initial_adapter is None else str(initial_adapter)
            ),
        )
    _sort_target_modules(adapter_dir / "adapter_config.json")
    record_base_fingerprint(adapter_dir, model_dir)  # merge checks the base
    return model.merge_and_unload()


def _sort_target_modules(config_path: Path) -> None:
    """peft keeps ``target_modules`` as a set and writes it in hash order, which changes with
    Python's hash seed: sorted, the same run writes the same bytes."""
    import json

    config = json.loads(config_path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _merge_peft(model, adapter_dir: Path):
    import json

    from peft import PeftModel

    peft_type = json.loads((adapter_dir / "adapter_config.json").read_text()).get("peft_type")
    log.info("merging PEFT adapter (%s)", peft_type)
    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def peft_kind(
    name: str,
    options: Callable[[TrainSettings], dict[str, Any]] = lambda settings: {},
    *,
    initial_adapter: bool = False,
    calibrate: Callable[..., None] | None = None,
) -> MethodKind:
    """A PEFT baseline ``{name}_r{r}``: ``peft.LoraConfig`` plus ``options(settings)``."""
    return MethodKind(
        name=name,
        pattern=rf"{re.escape(name)}_r(?P<r>\d+)",
        grammar=f"{name}_r{{r}}",
        prepare=functools.partial(_prepare_peft, options=options, calibrate=calibrate),
        save=_save_peft,
        merge=_merge_peft,
        adapter_file="adapter_config.json",
        adapter_label="a PEFT adapter",
        initial_adapter=initial_adapter,
    )


def _corda_options(settings: TrainSettings) -> dict[str, Any]:
    from peft.tuners.lora.config import CordaConfig

    return {
        "init_lora_weights": "corda",
        "corda_config": CordaConfig(corda_method=settings.corda_method),
    }


def _corda_calibrate(model, config, settings: TrainSettings, calibration) -> None:
    """CorDA orients the adapter by the covariance of each layer's inputs on sample data."""
    import torch
    from peft.tuners.lora.corda import preprocess_corda

    if not calibration:
        raise LokiInputError("corda needs calibration examples (the training data's first few)")
    samples = list(calibration[: settings.calibration_samples])

    @torch.no_grad()
    def run_model() -> None:
        # one unpadded sequence per call: peft's covariance hook expects batch size 1
        for example in samples:
            model(input_ids=torch.as_tensor([example["input_ids"]], device=model.device))

    preprocess_corda(model, config, run_model=run_model)


register(peft_kind("lora"))
register(peft_kind("dora", lambda settings: {"use_dora": True}))
register(peft_kind("pissa", lambda settings: {"init_lora_weights": "pissa"}, initial_adapter=True))
register(peft_kind("corda", _corda_options, initial_adapter=True, calibrate=_corda_calibrate))


# --------------------------------------------------------------------------- names
def grammar() -> str:
    """Every method name form, for error messages."""
    forms = ", ".join(kind.grammar for kind in METHOD_KINDS.values())
    return f"{forms} (strategy in {', '.join(STRATEGIES)}; 0 < q < 100; r >= 1)"


GRAMMAR = grammar()


def _unknown(name: str, why: str = "") -> LokiInputError:
    return LokiInputError(f"unknown method {name!r}{why}; methods are: {grammar()}")


def parse_method(name: str) -> Method:
    """Parse a run's method name; ``LokiInputError`` listing the grammar if it is not one."""
    if not isinstance(name, str):
        raise _unknown(repr(name))
    for kind in METHOD_KINDS.values():
        if m := re.fullmatch(kind.pattern, name):
            parts = m.groupdict()
            rank = None if parts.get("r") is None else int(parts["r"])
            if rank is not None and rank < 1:
                raise _unknown(name, f" (rank must be >= 1, got {rank})")
            q = None if parts.get("q") is None else float(parts["q"])
            if q is not None and not 0 < q < 100:
                raise _unknown(name, f" (q must be in (0, 100), got {parts['q']})")
            strategy = parts.get("strategy") or (DEFAULT_STRATEGY if kind.needs_selection else None)
            return Method(name=name, kind=kind.name, strategy=strategy, q=q, rank=rank)
    raise _unknown(name)


def adapter_kind(adapter_dir: str | Path) -> MethodKind:
    """The kind whose saved adapter ``adapter_dir`` holds (by its marker file), for ``merge``.

    Kinds that save the same format (every PEFT baseline) merge it the same way, so the first
    match serves.
    """
    adapter_dir = Path(adapter_dir)
    kinds = [kind for kind in METHOD_KINDS.values() if kind.adapter_file]
    for kind in kinds:
        if (adapter_dir / kind.adapter_file).is_file():
            return kind
    formats = {k.adapter_label: k.adapter_file for k in kinds}
    raise LokiInputError(
        f"{adapter_dir} is neither "
        + " nor ".join(f"{label} ({file})" for label, file in formats.items())
    )


__all__ = [
    "GRAMMAR",
    "METHOD_KINDS",
    "Method",
    "MethodKind",
    "adapter_kind",
    "parse_method",
    "peft_kind",
    "register",
]
