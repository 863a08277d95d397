"""Names shared by the Selecting stage, the CLI and the Snakemake rules.

Kept free of heavy imports so that ``workflow/rules/select.smk`` can import it.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

from loki_pipeline.errors import LokiInputError

#: LoKI is ``layer_balanced_low``; the other three are the paper's ablations and figures.
STRATEGIES: tuple[str, ...] = (
    "layer_balanced_low",
    "layer_balanced_high",
    "global_low",
    "global_high",
)

#: A q as it appears in a file name: no sign, no leading zeros, no trailing zeros (``10``, ``2.5``).
Q_PATTERN = r"(0|[1-9][0-9]*)(\.[0-9]*[1-9])?"


def check_strategy(strategy: str) -> str:
    """Return ``strategy`` or raise naming the four valid ones."""
    if strategy not in STRATEGIES:
        raise LokiInputError(
            f"unknown selection strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}"
        )
    return strategy


def check_q(q: float | int | str) -> float:
    """``q`` as a float, checked to lie in the open interval (0, 100)."""
    try:
        value = float(q)
    except (TypeError, ValueError):
        raise LokiInputError(f"q must be a number in (0, 100), got {q!r}") from None
    if not 0.0 < value < 100.0:
        raise LokiInputError(f"q must lie in the open interval (0, 100), got {q!r}")
    return value


def format_q(q: float | int | str) -> str:
    """q as every file and run name writes it: ``10`` (not ``10.0``), ``2.5``, ``12.3456789``.

    The shortest decimal that reads back as the same float (``repr``), written without an
    exponent or trailing zeros, so it matches :data:`Q_PATTERN` and round-trips: a name's q,
    parsed and formatted again, names the same file (``loki_q12.3456789`` trains on
    ``..._q12.3456789.json``, not on a rounded ``12.3457``).
    """
    text = format(Decimal(repr(check_q(q))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def nodes_per_layer_quota(q: float, num_nodes: int) -> int:
    """``k_l = floor(q/100 * L * D / L) = floor(q * D / 100)``, computed exactly.

    ``Fraction(str(q))`` avoids float round-off (``0.07 * 100`` style errors) flipping the floor.
    """
    return int(Fraction(str(check_q(q))) * num_nodes / 100)


def global_quota(q: float, num_layers: int, num_nodes: int) -> int:
    """``T = floor(q/100 * L * D)``: the one quota the global strategies share across layers."""
    return int(Fraction(str(check_q(q))) * num_layers * num_nodes / 100)


def selection_stem(strategy: str, q: float | int | str) -> str:
    """``{strategy}_q{q}``: a selection's name, also that of its suppression run's folder."""
    return f"{check_strategy(strategy)}_q{format_q(q)}"


def selection_filename(strategy: str, q: float | int | str) -> str:
    """``{strategy}_q{q}.json``, the name every stage uses for a selection."""
    return selection_stem(strategy, q) + ".json"


def parse_selection_stem(stem: str) -> tuple[str, float]:
    """(strategy, q) of a selection name ``{strategy}_q{q}``; ``LokiInputError`` otherwise."""
    m = re.fullmatch(rf"(?P<strategy>{'|'.join(STRATEGIES)})_q(?P<q>{Q_PATTERN})", stem)
    if m is None:
        raise LokiInputError(
            f"selection name {stem!r}: expected '{{strategy}}_q{{q}}' with a strategy of "
            f"{', '.join(STRATEGIES)} (e.g. layer_balanced_low_q10)"
        )
    return m["strategy"], check_q(m["q"])
