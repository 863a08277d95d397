"""The one registry of training methods: a run's name says how it trains.

Grammar (``{q}`` a percentage in (0, 100), written compactly: ``10`` not ``10.0``; ``{r}`` >= 1)::

    loki_q{q}                          LoKI, layer-balanced low-contribution selection
    loki_{strategy}_q{q}               LoKI on another selection (G-H/G-L and high ablations),
                                       strategy in layer_balanced_low, layer_balanced_high,
                                       global_low, global_high
    loki_lora_q{q}_r{r}                LoKI*: rank-r factors on the selected rows
    loki_{strategy}_lora_q{q}_r{r}     LoKI* on another selection
    full                               every parameter trainable
    lora_r{r} dora_r{r} pissa_r{r} corda_r{r}   PEFT baselines (all linear layers of the blocks)

Adding a PEFT baseline is one entry in ``PEFT_METHODS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loki_pipeline.errors import LokiInputError

STRATEGIES: tuple[str, ...] = (
    "layer_balanced_low",
    "layer_balanced_high",
    "global_low",
    "global_high",
)
DEFAULT_STRATEGY = "layer_balanced_low"

#: PEFT baseline prefix -> keyword arguments of ``peft.LoraConfig`` that make it that method.
PEFT_METHODS: dict[str, dict[str, object]] = {
    "lora": {},
    "dora": {"use_dora": True},
    "pissa": {"init_lora_weights": "pissa"},
    "corda": {"init_lora_weights": "corda"},
}

GRAMMAR = (
    "loki_q{q}, loki_{strategy}_q{q}, loki_lora_q{q}_r{r}, loki_{strategy}_lora_q{q}_r{r}, full, "
    + ", ".join(f"{name}_r{{r}}" for name in PEFT_METHODS)
    + f" (strategy in {', '.join(STRATEGIES)}; 0 < q < 100; r >= 1)"
)

_NUM = r"\d+(?:\.\d+)?"
_LOKI = re.compile(
    rf"^loki(?:_(?P<strategy>{'|'.join(STRATEGIES)}))?(?P<lora>_lora)?_q(?P<q>{_NUM})"
    rf"(?:_r(?P<r>\d+))?$"
)
_PEFT = re.compile(rf"^(?P<kind>{'|'.join(PEFT_METHODS)})_r(?P<r>\d+)$")


def format_q(q: float) -> str:
    """Compact q for file names: 10 -> '10', 2.5 -> '2.5'."""
    return f"{float(q):g}"


@dataclass(frozen=True)
class Method:
    """A parsed method name. ``kind`` is 'loki', 'full' or 'peft'."""

    name: str
    kind: str
    strategy: str | None = None
    q: float | None = None
    rank: int | None = None
    peft_type: str | None = None

    @property
    def needs_selection(self) -> bool:
        return self.kind == "loki"

    @property
    def selection_name(self) -> str | None:
        """Stem of the selection file this method trains on: ``{strategy}_q{q}``."""
        if not self.needs_selection:
            return None
        return f"{self.strategy}_q{format_q(self.q)}"

    @property
    def is_lokistar(self) -> bool:
        return self.kind == "loki" and self.rank is not None


def _unknown(name: str, why: str = "") -> LokiInputError:
    return LokiInputError(f"unknown method {name!r}{why}; methods are: {GRAMMAR}")


def parse_method(name: str) -> Method:
    """Parse a run's method name; ``LokiInputError`` listing the grammar if it is not one."""
    if not isinstance(name, str):
        raise _unknown(repr(name))
    if name == "full":
        return Method(name=name, kind="full")
    if m := _PEFT.match(name):
        rank = int(m["r"])
        if rank < 1:
            raise _unknown(name, f" (rank must be >= 1, got {rank})")
        return Method(name=name, kind="peft", rank=rank, peft_type=m["kind"])
    if m := _LOKI.match(name):
        q = float(m["q"])
        if not 0 < q < 100:
            raise _unknown(name, f" (q must be in (0, 100), got {m['q']})")
        if bool(m["lora"]) != (m["r"] is not None):
            raise _unknown(name, " (LoKI* is loki_lora_q{q}_r{r}: '_lora' and '_r{r}' go together)")
        rank = None if m["r"] is None else int(m["r"])
        if rank is not None and rank < 1:
            raise _unknown(name, f" (rank must be >= 1, got {rank})")
        return Method(
            name=name, kind="loki", strategy=m["strategy"] or DEFAULT_STRATEGY, q=q, rank=rank
        )
    raise _unknown(name)
