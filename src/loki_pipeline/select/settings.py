"""Settings of the Selecting stage: the config's ``select`` block, defaults from the schema.

Light (no numpy, no h5py), so ``workflow/rules/select.smk`` builds it at planning time.
"""

from __future__ import annotations

import dataclasses

from loki_pipeline.settings import StageSettings, from_schema


@dataclasses.dataclass
class SelectSettings(StageSettings):
    """Which selections the pipeline makes, how kva.h5 is read, and the figures' settings.

    ``q_values`` and ``strategies`` are the pipeline's targets; a single selection's q and
    strategy (``loki select --q --strategy``, a rule's wildcards) are not settings.
    """

    q_values: list[float] = from_schema("select.q")
    strategies: list[str] = from_schema("select.strategies")
    heatmap_q: float | dict[str, float] = from_schema("select.heatmap_q")
    heatmap_bins: int = from_schema("select.heatmap_bins")
    chunk_size: int = from_schema("select.chunk_size")
    tie_break: str = from_schema("select.tie_break")
    imports: dict[str, dict[str, str]] = from_schema("select.imports")
    stability_q: float = from_schema("select.stability.q")
    stability_seeds: list[int] = from_schema("select.stability.seeds")
    stability_q_list: list[float] = from_schema("select.stability.q_list")
