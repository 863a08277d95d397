"""How stable is a LoKI selection? Overlap with the selection from all prompts.

Three comparisons, each against the ``layer_balanced_low`` selection at ``q`` from every prompt:

- ``random_half``: the selection from a random half of the prompts (one row per seed);
- ``subject_group``: the selection from one MMLU subject group only (STEM, humanities,
  social sciences, other; the grouping of lm-eval's ``mmlu_*`` groups); for a prompt set of
  another format (``kva.dataset.format`` prompts, lm_eval) from one of its own subjects only,
  when it has more than one;
- ``q``: the selection at another ``q'`` (is the smaller one nested in the larger one?);
- ``dataset`` (:func:`dataset_overlap`, its own file): the selection from a second prompt set.

``overlap = |A & B| / min(|A|, |B|)``, the share of selected nodes in common (for equal sizes
simply the share of nodes that both pick). ``chance_overlap`` is what two random selections of
the same sizes would share on average (``max(k, k') / D`` per layer), the floor to judge against.
The paper reports 97.57% overlap between its 2,850-prompt MMLU subset and full MMLU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from loki_pipeline.errors import LokiInputError
from loki_pipeline.kva.kva_file import inspect_kva, read_kva_strings
from loki_pipeline.select.naming import check_q, nodes_per_layer_quota
from loki_pipeline.select.strategies import DEFAULT_CHUNK_SIZE, count_nodes, select_from_counts
from loki_pipeline.settings import schema_default

log = logging.getLogger(__name__)

STRATEGY = "layer_balanced_low"

#: MMLU's 57 subjects in its four categories (as lm-eval's mmlu_stem/... groups list them).
SUBJECT_GROUPS: dict[str, tuple[str, ...]] = {
    "STEM": (
        "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics",
        "computer_security", "conceptual_physics", "electrical_engineering",
        "elementary_mathematics", "high_school_biology", "high_school_chemistry",
        "high_school_computer_science", "high_school_mathematics", "high_school_physics",
        "high_school_statistics", "machine_learning",
    ),
    "humanities": (
        "formal_logic", "high_school_european_history", "high_school_us_history",
        "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies",
        "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
        "world_religions",
    ),
    "social sciences": (
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
        "human_sexuality", "professional_psychology", "public_relations", "security_studies",
        "sociology", "us_foreign_policy",
    ),
    "other": (
        "business_ethics", "clinical_knowledge", "college_medicine", "global_facts",
        "human_aging", "management", "marketing", "medical_genetics", "miscellaneous",
        "nutrition", "professional_accounting", "professional_medicine", "virology",
    ),
}  # fmt: skip
_GROUP_OF = {subject: group for group, subjects in SUBJECT_GROUPS.items() for subject in subjects}

COLUMNS = (
    "kind", "label", "q", "reference_q", "samples", "selected", "reference_selected", "common",
    "overlap", "min_layer_overlap", "chance_overlap",
)  # fmt: skip


def subject_group(subject: str) -> str | None:
    """The MMLU category of a subject (``"High School Physics"`` and ``high_school_physics``)."""
    return _GROUP_OF.get(subject.strip().lower().replace(" ", "_").replace("-", "_"))


def _subject_groups(subjects: Sequence[str], *, mmlu: bool) -> list[tuple[str, np.ndarray]]:
    """``[(label, member mask)]``: MMLU's four categories (subjects outside its 57 left out),
    or for another prompt set each subject of its own (in order of first appearance), unless
    it has only one: that group would be every prompt."""
    if mmlu:
        groups = [subject_group(s) for s in subjects]
        unknown = sorted({s for s, g in zip(subjects, groups, strict=True) if g is None})
        if unknown:
            log.warning("subjects outside MMLU's 57, left out of the group rows: %s", unknown[:10])
        names: Sequence[str] = SUBJECT_GROUPS
    else:
        groups, names = list(subjects), list(dict.fromkeys(subjects))
        if len(names) < 2:
            return []
    return [
        (name, member)
        for name in names
        if (member := np.array([g == name for g in groups], dtype=bool)).any()
    ]


def overlap_stats(
    a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]
) -> tuple[int, float, float]:
    """``(common, overlap, min_layer_overlap)`` of two selections with the same layers."""
    per_layer = []
    common = 0
    for sa, sb in zip(a, b, strict=True):
        shared = len(set(sa) & set(sb))
        common += shared
        smaller = min(len(sa), len(sb))
        if smaller:
            per_layer.append(shared / smaller)
    total = min(sum(map(len, a)), sum(map(len, b)))
    return common, (common / total if total else float("nan")), min(per_layer, default=float("nan"))


def stability_table(
    kva_path: str | os.PathLike,
    q: float,
    *,
    seeds: Sequence[int] = tuple(schema_default("select.stability.seeds")),
    q_list: Sequence[float] = (),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Rows of the stability table (see the module docstring); ``COLUMNS`` gives their keys."""
    q = check_q(q)
    info = inspect_kva(kva_path, require=("subject",))
    n, nodes = info.num_samples, info.num_nodes
    subjects = read_kva_strings(kva_path, "subject")

    labels: list[tuple[str, str]] = [("all", "all prompts")]
    masks = [np.ones(n, dtype=bool)]
    if n >= 2:
        for seed in seeds:
            half = np.zeros(n, dtype=bool)
            half[np.random.default_rng(seed).permutation(n)[: n // 2]] = True
            labels.append(("random_half", f"half, seed {seed}"))
            masks.append(half)
    for group, member in _subject_groups(subjects, mmlu=info.dataset_format == "mmlu"):
        labels.append(("subject_group", group))
        masks.append(member)

    counts = count_nodes(
        kva_path, q, (STRATEGY,), sample_groups=np.stack(masks), chunk_size=chunk_size,
        progress=progress,
    )[STRATEGY]  # fmt: skip
    selections = [select_from_counts(c, q, STRATEGY) for c in counts]
    reference = selections[0]
    k = nodes_per_layer_quota(q, nodes)
    ref_size = sum(map(len, reference))

    rows = []
    for (kind, label), mask, sel in zip(labels, masks, selections, strict=True):
        if kind == "all":
            continue
        common, overlap, worst = overlap_stats(sel, reference)
        rows.append(dict(
            kind=kind, label=label, q=q, reference_q=q, samples=int(mask.sum()),
            selected=sum(map(len, sel)), reference_selected=ref_size, common=common,
            overlap=overlap, min_layer_overlap=worst, chance_overlap=k / nodes,
        ))  # fmt: skip
    for other_q in q_list:
        other_q = check_q(other_q)
        if other_q == q:
            continue
        sel = select_from_counts(
            count_nodes(kva_path, other_q, (STRATEGY,), chunk_size=chunk_size)[STRATEGY],
            other_q, STRATEGY,
        )  # fmt: skip
        common, overlap, worst = overlap_stats(sel, reference)
        rows.append(dict(
            kind="q", label=f"q={other_q:g}", q=other_q, reference_q=q, samples=n,
            selected=sum(map(len, sel)), reference_selected=ref_size, common=common,
            overlap=overlap, min_layer_overlap=worst,
            chance_overlap=max(k, nodes_per_layer_quota(other_q, nodes)) / nodes,
        ))  # fmt: skip
    return rows


def write_stability_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """The table as CSV (overlaps as fractions, 4 decimals), written atomically."""
    import csv
    import io

    from loki_pipeline.io import write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({
            key: (f"{row[key]:.4f}" if key.endswith("overlap") else row[key]) for key in COLUMNS
        })  # fmt: skip
    write_text(path, buf.getvalue())


def read_stability_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a stability CSV with numbers parsed back."""
    import csv

    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key in ("q", "reference_q", "overlap", "min_layer_overlap", "chance_overlap"):
            row[key] = float(row[key])
        for key in ("samples", "selected", "reference_selected", "common"):
            row[key] = int(row[key])
    return rows


def dataset_overlap(
    kva_path: str | os.PathLike,
    compare_path: str | os.PathLike,
    q: float,
    *,
    label: str = "compare_dataset",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, Any]:
    """One stability row (``COLUMNS``, kind ``dataset``): the LoKI selection at ``q`` from the
    prompts of ``compare_path`` against the one from ``kva_path`` (the reference), both KVA of
    the same model. The LoKI paper reports 97.57% for its 50-per-subject MMLU set against full
    MMLU."""
    q = check_q(q)
    info, other = inspect_kva(kva_path), inspect_kva(compare_path)
    if (info.num_layers, info.num_nodes) != (other.num_layers, other.num_nodes):
        raise LokiInputError(
            f"{compare_path}: {other.num_layers} x {other.num_nodes} nodes, but {kva_path} has "
            f"{info.num_layers} x {info.num_nodes}: KVA of another model"
        )
    reference, sel = (
        select_from_counts(count_nodes(path, q, (STRATEGY,), chunk_size=chunk_size)[STRATEGY],
                           q, STRATEGY)
        for path in (kva_path, compare_path)
    )  # fmt: skip
    common, overlap, worst = overlap_stats(sel, reference)
    k = nodes_per_layer_quota(q, info.num_nodes)
    return dict(
        kind="dataset", label=label, q=q, reference_q=q, samples=other.num_samples,
        selected=sum(map(len, sel)), reference_selected=sum(map(len, reference)), common=common,
        overlap=overlap, min_layer_overlap=worst, chance_overlap=k / info.num_nodes,
    )  # fmt: skip
