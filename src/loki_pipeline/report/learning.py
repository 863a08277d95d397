"""Task scores with intervals, and the check that a run learned anything (from ``task.json`` items).

``task.json`` keeps every item: BFCL ``{"id", "category", "output", "correct"}`` (a multi-turn
item's ``output`` is its answers per turn and step), the reranker ``{"query_id", "doc_id",
"score"}``. From them:

- ``task_estimates``: each task metric with its item count and 95% interval. BFCL scores that are
  a share of items (a category, ``live``, ``relevance_detection``) get Wilson; the others
  (``non_live``, ``multi_turn``, ``irrelevance_detection``, ``overall``: unweighted means of
  category shares) get Wilson at their effective n, ``p(1 − p) / Var`` with
  ``Var = Σ w_c² p_c (1 − p_c) / n_c`` (all items when Var is 0: unlike a bootstrap, a score of
  0 or 100% keeps a width). Ranking metrics are recomputed per query (``at_one``), used only when
  their mean reproduces the recorded metrics, and get Wilson over queries when every query
  scores 0 or 1 (one relevant passage: MAP@1 = P@1), a bootstrap over queries otherwise; they
  need the relevance judgements (``qrels`` in the summary, or the local BEIR source its
  settings name).
- ``learning_check``: a run did not learn when its outputs equal base's on every item (BFCL: the
  generated text; reranker: the candidate order of every query) or when the paired 95% bootstrap
  interval of run − base on the primary metric does not lie above 0 (the same item indices are
  drawn for both; ``intervals.RESAMPLES`` resamples, seed ``intervals.SEED``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loki_pipeline.data.records import is_hub_source
from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.sft import KIND as SFT_KIND
from loki_pipeline.report.intervals import (
    RESAMPLES,
    SEED,
    Estimate,
    mean_estimate,
    percentile,
    wilson,
)
from loki_pipeline.report.sft import sft_delta, sft_estimates, sft_identical

log = logging.getLogger(__name__)

Qrels = Mapping[str, Mapping[str, int]]


@dataclass(frozen=True)
class LearningCheck:
    """Whether a run beat base on its task. ``learned`` None: no per-item records to tell."""

    learned: bool | None
    identical: bool | None
    delta: Estimate | None  # run − base on the primary metric (fractions), paired interval
    reason: str


@dataclass(frozen=True)
class ItemUnits:
    """Per-item values of one run, in groups (BFCL categories; one group of queries)."""

    groups: dict[str, tuple[list[str], np.ndarray]]  # group -> (item keys, values)

    def aligned(self, other: ItemUnits) -> ItemUnits | None:
        """``other``'s values in this run's item order when both hold the same items."""
        if set(self.groups) != set(other.groups):
            return None
        out = {}
        for g, (keys, _) in self.groups.items():
            okeys, ovalues = other.groups[g]
            if sorted(keys) != sorted(okeys) or len(set(keys)) != len(keys):
                return None
            by_key = dict(zip(okeys, ovalues, strict=True))
            out[g] = (keys, np.array([by_key[k] for k in keys]))
        return ItemUnits(out)


def _bfcl_compose(sums: Mapping[str, Any], counts: Mapping[str, int]) -> dict[str, Any]:
    """BFCL's summary (``evaluate.toolace.bfcl_compose``, BFCL V3's formula) from per-category
    sums of correct items; works on numbers and on arrays of bootstrap replicates alike."""
    from loki_pipeline.evaluate.toolace import bfcl_compose

    return bfcl_compose(sums, counts)


def bfcl_units(summary: Mapping[str, Any], where: str) -> ItemUnits:
    groups: dict[str, tuple[list[str], list[float]]] = {}
    for i, item in enumerate(summary["items"]):
        try:
            keys, values = groups.setdefault(str(item["category"]), ([], []))
            keys.append(str(item["id"]))
            values.append(float(bool(item["correct"])))
        except (KeyError, TypeError):
            raise LokiInputError(
                f"{where}: BFCL item {i} lacks 'id', 'category' or 'correct'"
            ) from None
    return ItemUnits({g: (k, np.array(v)) for g, (k, v) in groups.items()})


def bfcl_replicates(
    rng: np.random.Generator, runs: Sequence[ItemUnits], resamples: int
) -> list[dict[str, np.ndarray]]:
    """BFCL metrics of each of ``runs`` (same groups, aligned items) over shared resamples."""
    sums: list[dict[str, np.ndarray]] = [{} for _ in runs]
    for g, (_, values) in runs[0].groups.items():
        idx = rng.integers(0, len(values), size=(resamples, len(values)))
        for out, units in zip(sums, runs, strict=True):
            out[g] = units.groups[g][1][idx].sum(axis=1)
    counts = {g: len(v) for g, (_, v) in runs[0].groups.items()}
    return [_bfcl_compose(s, counts) for s in sums]


def read_qrels(source: str | Path, split: str) -> dict[str, dict[str, int]]:
    """Relevance judgements of a local BEIR folder (``qrels/<split>.tsv``, header line first)."""
    path = Path(source) / "qrels" / f"{split}.tsv"
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines()[1:], 2):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
        except (IndexError, ValueError):
            raise LokiInputError(
                f"{path} line {lineno}: expected query-id, corpus-id, score"
            ) from None
    return qrels


def reranker_qrels(summary: Mapping[str, Any]) -> dict[str, dict[str, int]] | None:
    """The judgements a reranker summary was scored against: its ``qrels`` if it has them, else
    those of the local BEIR source its settings name (None when neither is available)."""
    if isinstance(summary.get("qrels"), Mapping):
        return {
            str(q): {str(d): int(r) for d, r in docs.items()}
            for q, docs in summary["qrels"].items()
        }
    settings = summary.get("settings") or {}
    source, split = settings.get("source"), settings.get("split", "test")
    if not source or is_hub_source(str(source)):
        return None
    if not (Path(source) / "qrels" / f"{split}.tsv").is_file():
        return None
    return read_qrels(source, split)


def _rankings(summary: Mapping[str, Any], where: str) -> dict[str, dict[str, float]]:
    """query -> {doc: score} in the evaluation's candidate order."""
    run: dict[str, dict[str, float]] = {}
    for i, item in enumerate(summary["items"]):
        try:
            run.setdefault(str(item["query_id"]), {})[str(item["doc_id"])] = float(item["score"])
        except (KeyError, TypeError, ValueError):
            raise LokiInputError(
                f"{where}: reranker item {i} lacks 'query_id', 'doc_id' or a numeric 'score'"
            ) from None
    return run


def _order(docs: Mapping[str, float]) -> list[str]:
    """Best first; ties keep the candidate order (a stable sort, as ranx ranks them)."""
    return [d for _, d in sorted(enumerate(docs), key=lambda x: (-docs[x[1]], x[0]))]


def at_one(judged: Mapping[str, int], docs: Mapping[str, float]) -> dict[str, float]:
    """MAP@1, Recall@1, NDCG@1 and P@1 of one query, as ``ranx`` defines them (the
    evaluation's ``rank_metrics``): with ``d`` the top candidate and ``R`` the relevant
    passages, P@1 = [d ∈ R], Recall@1 = MAP@1 = [d ∈ R] / |R|, NDCG@1 = rel(d) / max rel.
    The table builder checks their mean against the recorded metrics before using them."""
    relevant = [r for r in judged.values() if r > 0]
    if not docs or not relevant:
        return {"map@1": 0.0, "recall@1": 0.0, "ndcg@1": 0.0, "precision@1": 0.0}
    rel = judged.get(_order(docs)[0], 0)
    hit = 1.0 if rel > 0 else 0.0
    return {
        "map@1": hit / len(relevant),
        "recall@1": hit / len(relevant),
        "ndcg@1": max(rel, 0) / max(relevant),
        "precision@1": hit,
    }


def rank_units(summary: Mapping[str, Any], qrels: Qrels, where: str) -> dict[str, ItemUnits] | None:
    """Per-query ranking metrics (one ``ItemUnits`` per metric); queries without candidates
    (absent from the items) count 0, as the evaluation counts them."""
    run = _rankings(summary, where)
    if any(q not in qrels for q in run):
        return None
    per_query = {q: at_one(qrels[q], docs) for q, docs in run.items()}
    empty = max(int((summary.get("counts") or {}).get("queries", len(run))) - len(run), 0)
    keys = list(per_query) + [f"<no candidates {i}>" for i in range(empty)]
    return {
        m: ItemUnits({"queries": (keys, np.array([v[m] for v in per_query.values()] + [0.0] * empty))})
        for m in ("map@1", "recall@1", "ndcg@1", "precision@1")
    }


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, abs_tol=1e-6)


def _has_items(summary: Mapping[str, Any] | None) -> bool:
    return bool(summary) and bool(summary.get("items"))


def task_estimates(
    task: str,
    summary: Mapping[str, Any],
    *,
    qrels: Qrels | None = None,
    where: str = "task.json",
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, Estimate]:
    """Each metric of one run's task summary (fractions) with ``n`` and its 95% interval.

    Without per-item records (or, for the reranker, relevance judgements) the metrics keep
    only what is known (the point, and ``n`` where the counts give it).
    """
    if summary.get("kind") == SFT_KIND:  # a task of the user's: report.sft
        return sft_estimates(summary, where=where, resamples=resamples, seed=seed)
    metrics = {m: float(v) for m, v in (summary.get("metrics") or {}).items()}
    counts = summary.get("counts") or {}
    if not _has_items(summary):
        if task == "reranker" and "queries" in counts:
            return {m: Estimate(v, int(counts["queries"])) for m, v in metrics.items()}
        return {m: Estimate(v, counts.get(m)) for m, v in metrics.items()}
    if task == "toolace":
        units = bfcl_units(summary, where)
        sums = {g: float(v.sum()) for g, (_, v) in units.groups.items()}
        n = {g: len(v) for g, (_, v) in units.groups.items()}
        point = _bfcl_compose(sums, n)
        if any(not _close(point.get(m, math.nan), v) for m, v in metrics.items()):
            log.warning("%s: the items do not reproduce the BFCL metrics; no intervals", where)
            return {m: Estimate(v) for m, v in metrics.items()}
        out = {}
        for m, v in metrics.items():
            # each category's weight in the metric (its accuracy 1, the others 0)
            weights = {g: _bfcl_compose({**dict.fromkeys(n, 0.0), g: n[g]}, n)[m] for g in n}
            used = [g for g, w in weights.items() if w != 0]
            size = sum(n[g] for g in used)
            if all(_close(weights[g], n[g] / size) for g in used):  # a share of items: Wilson
                out[m] = Estimate(v, size, *wilson(sum(sums[g] for g in used), size))
            else:  # a weighted mean of category shares: Wilson at its effective n
                var = sum(w * w * (sums[g] / n[g]) * (1 - sums[g] / n[g]) / n[g]
                          for g, w in weights.items())  # fmt: skip
                n_eff = v * (1 - v) / var if var > 0 else size
                out[m] = Estimate(v, size, *wilson(v * n_eff, n_eff))
        return out
    if qrels is None:
        log.warning("%s: no relevance judgements; ranking metrics get no interval", where)
        return {m: Estimate(v, int(counts.get("queries", 0)) or None) for m, v in metrics.items()}
    per_metric = rank_units(summary, qrels, where)
    if per_metric is None or any(
        not _close(float(per_metric[m].groups["queries"][1].mean()), v)
        for m, v in metrics.items()
        if m in per_metric
    ):
        log.warning("%s: the judgements do not reproduce the ranking metrics; no intervals", where)
        return {m: Estimate(v, int(counts.get("queries", 0)) or None) for m, v in metrics.items()}
    out = {}
    for m, v in metrics.items():
        if m not in per_metric:  # a metric this module does not recompute
            out[m] = Estimate(v, int(counts.get("queries", 0)) or None)
            continue
        interval = mean_estimate(per_metric[m].groups["queries"][1], seed=seed, resamples=resamples)
        out[m] = Estimate(v, interval.n, interval.lo, interval.hi)
    return out


def _identical(task: str, base: Mapping[str, Any], run: Mapping[str, Any], where: str) -> bool:
    if task == "toolace":
        b = {str(i["id"]): i.get("output") for i in base["items"]}
        r = {str(i["id"]): i.get("output") for i in run["items"]}
        return b == r
    b, r = _rankings(base, where), _rankings(run, where)
    return b.keys() == r.keys() and all(_order(b[q]) == _order(r[q]) for q in b)


def learning_check(
    task: str,
    base: Mapping[str, Any],
    run: Mapping[str, Any],
    *,
    qrels: Qrels | None = None,
    where: str = "task.json",
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> LearningCheck:
    """Did ``run`` beat ``base`` on the task's primary metric beyond noise? (see the module)."""
    primary = run.get("primary_metric") or base.get("primary_metric")
    base_point, run_point = float(base["metrics"][primary]), float(run["metrics"][primary])
    point = run_point - base_point
    if run.get("kind") == SFT_KIND:
        return _sft_check(base, run, primary, where=where, resamples=resamples, seed=seed)
    if not (_has_items(base) and _has_items(run)):
        return LearningCheck(None, None, Estimate(point), "no per-item task records to test")
    if _identical(task, base, run, where):
        n = len(run["items"])  # BFCL items; the reranker counts queries
        if task == "reranker":
            n = int((run.get("counts") or {}).get("queries", len(_rankings(run, where))))
        same = Estimate(point, n, 0.0, 0.0)
        return LearningCheck(False, True, same, "outputs equal base's on every item")
    rng = np.random.default_rng(seed)
    if task == "toolace":
        b_units, r_units = bfcl_units(base, where), bfcl_units(run, where)
        aligned = b_units.aligned(r_units)
        if aligned is not None:
            b_reps, r_reps = bfcl_replicates(rng, [b_units, aligned], resamples)
        else:
            (b_reps,) = bfcl_replicates(rng, [b_units], resamples)
            (r_reps,) = bfcl_replicates(rng, [r_units], resamples)
        diff = r_reps[primary] - b_reps[primary]
        n = sum(len(v) for _, v in r_units.groups.values())
    else:
        if qrels is None:
            return LearningCheck(None, False, Estimate(point), "no relevance judgements to test")
        b_all, r_all = rank_units(base, qrels, where), rank_units(run, qrels, where)
        if (
            b_all is None
            or r_all is None
            or not _close(float(b_all[primary].groups["queries"][1].mean()), base_point)
            or not _close(float(r_all[primary].groups["queries"][1].mean()), run_point)
        ):
            reason = "the judgements do not reproduce the recorded metrics"
            return LearningCheck(None, False, Estimate(point), reason)
        b_units, r_units = b_all[primary], r_all[primary]
        aligned = b_units.aligned(r_units)
        b_vals = b_units.groups["queries"][1]
        if aligned is not None:
            r_vals = aligned.groups["queries"][1]
            idx = rng.integers(0, len(b_vals), size=(resamples, len(b_vals)))
            diff = r_vals[idx].mean(axis=1) - b_vals[idx].mean(axis=1)
        else:
            r_vals = r_units.groups["queries"][1]
            b_idx = rng.integers(0, len(b_vals), size=(resamples, len(b_vals)))
            r_idx = rng.integers(0, len(r_vals), size=(resamples, len(r_vals)))
            diff = r_vals[r_idx].mean(axis=1) - b_vals[b_idx].mean(axis=1)
        n = len(r_vals)
    lo, hi = percentile(diff)
    delta = Estimate(point, n, lo, hi)
    paired = "paired" if aligned is not None else "unpaired"
    if lo > 0:
        return LearningCheck(True, False, delta, f"{primary} above base ({paired} 95% interval)")
    return LearningCheck(
        False,
        False,
        delta,
        f"{primary} − base = {100 * point:+.1f} points, {paired} 95% interval "
        f"[{100 * lo:+.1f}, {100 * hi:+.1f}] not above 0 at n={n}",
    )


def _sft_check(
    base: Mapping[str, Any], run: Mapping[str, Any], primary: str, *, where: str,
    resamples: int, seed: int,
) -> LearningCheck:  # fmt: skip
    """``learning_check`` of a task of the user's (``report.sft``): better is higher, or lower
    for a metric the summary lists in ``lower_is_better`` (loss, perplexity)."""
    point = float(run["metrics"][primary]) - float(base["metrics"][primary])
    lower = primary in (run.get("lower_is_better") or [])
    if sft_identical(base, run, primary, where):
        n = len(run.get("items") or []) or len((run.get("lm_eval_items") or {}).get(primary, []))
        return LearningCheck(False, True, Estimate(point, n, 0.0, 0.0),
                             "outputs equal base's on every item")  # fmt: skip
    found = sft_delta(base, run, primary, where=where, resamples=resamples, seed=seed)
    if found is None:
        return LearningCheck(None, None, Estimate(point), "no per-item task records to test")
    delta, paired = found
    how = "paired" if paired else "unpaired"
    if (delta.hi < 0) if lower else (delta.lo > 0):
        side = "below" if lower else "above"
        return LearningCheck(True, False, delta, f"{primary} {side} base ({how} 95% interval)")
    scale = 100 if primary in (run.get("percent") or []) else 1
    return LearningCheck(
        False,
        False,
        delta,
        f"{primary} − base = {scale * point:+.3g}, {how} 95% interval "
        f"[{scale * delta.lo:+.3g}, {scale * delta.hi:+.3g}] not {'below' if lower else 'above'} "
        f"0 at n={delta.n}",
    )
