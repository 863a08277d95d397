"""Names shared by the Selecting stage, the CLI and the Snakemake rules.

Kept free of heavy imports so that ``workflow/rules/select.smk`` can import it.
"""

from __future__ import annotations

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
    """Compact decimal form used in file names: ``10`` (not ``10.0``), ``2.5``, ``0.25``."""
    value = check_q(q)
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return text


def nodes_per_layer_quota(q: float, num_nodes: int) -> int:
    """``k_l = floor(q/100 * L * D / L) = floor(q * D / 100)``, computed exactly.

    ``Fraction(str(q))`` avoids float round-off (``0.07 * 100`` style errors) flipping the floor.
    """
    return int(Fraction(str(check_q(q))) * num_nodes / 100)


def global_quota(q: float, num_layers: int, num_nodes: int) -> int:
    """``T = floor(q/100 * L * D)``: the one quota the global strategies share across layers."""
    return int(Fraction(str(check_q(q))) * num_layers * num_nodes / 100)


def selection_filename(strategy: str, q: float) -> str:
    """``{strategy}_q{q}.json``, the name every stage uses for a selection."""
    return f"{check_strategy(strategy)}_q{format_q(q)}.json"
