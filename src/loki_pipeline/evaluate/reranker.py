"""The reranker's task performance: ranking BEIR-format data by the model's relevance score.

Each (query, passage) is scored as the model was trained, with the chat of
``data.reranker.reranker_messages``, by the expected score under the next-token probabilities
of "1".."7": ``E = Σ_k k·p_k / Σ_k p_k`` (the seven probabilities renormalised, as the LB
Reranker does). Candidates are ranked by ``E`` and scored with ``ranx``: MAP@1, Recall@1,
NDCG@1, P@1, on BEIR-format data (a project-written set by default). The candidates of a query
are either BEIR's reranking protocol, the BM25 top-k of the whole corpus (``candidates: bm25``),
or its relevant passages plus seeded random ones (``random``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loki_pipeline.data.records import is_hub_source
from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate import task_eval_default
from loki_pipeline.evaluate.bm25 import check_top_k
from loki_pipeline.evaluate.generation import chat_prompt, left_padded, length_batches

log = logging.getLogger(__name__)

RANK_METRICS = ("map@1", "recall@1", "ndcg@1", "precision@1")
CANDIDATE_PROTOCOLS = ("random", "bm25")


@dataclasses.dataclass
class BeirSettings:
    """``tasks.reranker.eval.beir``, defaults from the schema (which documents each key).

    The field order is the order of ``settings`` in task.json.
    """

    source: str = task_eval_default("beir.source")
    split: str = task_eval_default("beir.split")
    max_queries: int | None = task_eval_default("beir.max_queries")
    negatives_per_query: int = task_eval_default("beir.negatives_per_query")
    seed: int = task_eval_default("beir.seed")
    candidates: str = task_eval_default("beir.candidates")  # or "bm25": BEIR's protocol
    top_k: int = task_eval_default("beir.top_k")


def expected_relevance(probs: Sequence[float]) -> float:
    """``Σ_k k·p_k / Σ_k p_k`` over the probabilities of "1".."7" (index 0 = "1")."""
    if len(probs) != 7:
        raise LokiInputError(f"expected 7 probabilities (scores 1..7), got {len(probs)}")
    total = float(sum(probs))
    if not total > 0:
        raise LokiInputError(f"score probabilities sum to {total}; expected a positive sum")
    return sum((k + 1) * float(p) for k, p in enumerate(probs)) / total


def score_token_ids(tokenizer: Any) -> list[int]:
    """Token ids of "1".."7"; each digit must be one token for the expectation to be defined."""
    ids = []
    for digit in "1234567":
        enc = tokenizer.encode(digit, add_special_tokens=False)
        if len(enc) != 1:
            raise LokiInputError(
                f"the tokenizer splits the score {digit!r} into {len(enc)} tokens; the reranker "
                "score needs single-token digits"
            )
        ids.append(enc[0])
    return ids


def relevance_scores(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 8,
) -> list[float]:
    """Expected relevance of each (query, text) pair, from one forward pass per batch."""
    from tqdm import tqdm

    from loki_pipeline.data.reranker import reranker_messages

    ids7 = score_token_ids(tokenizer)
    prompts = [chat_prompt(tokenizer, reranker_messages(q, t)) for q, t in pairs]
    scores: list[float] = [0.0] * len(prompts)
    device = next(model.parameters()).device
    for batch in tqdm(length_batches(tokenizer, prompts, batch_size), desc="rerank"):
        ids, mask, positions, torch = left_padded(tokenizer, [prompts[i] for i in batch], device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        probs = torch.softmax(logits[:, -1, :].float(), dim=-1)[:, ids7]
        for row, i in enumerate(batch):
            scores[i] = expected_relevance(probs[row].tolist())
    return scores


#: Below this many ranked pairs ranx runs as plain Python: numba would spend ~10 CPU-seconds
#: compiling (uncached, in every process) to save milliseconds.
JIT_MIN_PAIRS = 200_000


def _import_ranx(num_pairs: int):
    if "ranx" not in sys.modules and num_pairs < JIT_MIN_PAIRS:
        previous = os.environ.get("NUMBA_DISABLE_JIT")
        os.environ.setdefault("NUMBA_DISABLE_JIT", "1")  # read once, when numba is imported
        try:
            from ranx import Qrels, Run, evaluate
        finally:
            if previous is None:
                os.environ.pop("NUMBA_DISABLE_JIT", None)
    from ranx import Qrels, Run, evaluate

    return Qrels, Run, evaluate


def rank_metrics(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """MAP@1, Recall@1, NDCG@1 and P@1 of ``run`` against ``qrels``, computed by ``ranx``.

    A query of ``run`` with no ranked passage (e.g. BM25 retrieved nothing for it) scores 0 on
    every metric: the mean is taken over all of ``run``'s queries.
    """
    if not run:
        raise LokiInputError("no ranked queries to evaluate")
    ranked = {q: dict(d) for q, d in run.items() if d}
    if not ranked:
        return {name: 0.0 for name in RANK_METRICS}
    Qrels, Run, evaluate = _import_ranx(sum(len(docs) for docs in ranked.values()))
    qrels = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items() if q in ranked}
    result = evaluate(Qrels(qrels), Run(ranked), list(RANK_METRICS))
    share = len(ranked) / len(run)
    return {name: float(result[name]) * share for name in RANK_METRICS}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    from loki_pipeline.data.records import read_records

    if not path.is_file():
        raise LokiInputError(
            f"{path}: missing; a BEIR data set needs corpus.jsonl, "
            "queries.jsonl and qrels/<split>.tsv"
        )
    return [row for _, row in read_records(path)]


def _read_beir(source: str, split: str):
    """``(corpus rows, query rows, qrels rows)`` from a local BEIR folder or ``hf:<repo>``."""
    if is_hub_source(source):
        from datasets import load_dataset

        repo = source[3:]
        corpus = list(load_dataset(repo, "corpus", split="corpus"))
        queries = list(load_dataset(repo, "queries", split="queries"))
        qrels = list(load_dataset(f"{repo}-qrels", split=split))
        return corpus, queries, qrels
    root = Path(source)
    if not root.is_dir():
        raise LokiInputError(f"BEIR source {source!r}: not a directory and not 'hf:<repo>'")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise LokiInputError(f"{qrels_path}: missing (BEIR keeps relevance judgements there)")
    lines = qrels_path.read_text(encoding="utf-8").splitlines()
    qrels = []
    for lineno, line in enumerate(lines[1:], 2):  # first line is BEIR's header
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise LokiInputError(f"{qrels_path} line {lineno}: expected query-id, corpus-id, score")
        qrels.append({"query-id": parts[0], "corpus-id": parts[1], "score": parts[2]})
    return _read_jsonl(root / "corpus.jsonl"), _read_jsonl(root / "queries.jsonl"), qrels


def load_beir(settings: BeirSettings) -> dict[str, Any]:
    """A reranking set from BEIR-format data:
    ``{"queries", "corpus", "qrels", "candidates", "protocol"}``.

    The judged queries are the sorted ids with a relevant passage, the first ``max_queries``.
    Their candidates (the same for every run of every model):

    - ``candidates="bm25"``: BEIR's reranking protocol, the ``top_k`` passages BM25 retrieves
      from the whole corpus (``loki_pipeline.evaluate.bm25``), best first. Relevant passages are
      not added: one that BM25 misses cannot be ranked, and the metrics count it as missed.
    - ``candidates="random"``: the query's relevant passages plus ``negatives_per_query`` others
      drawn from the corpus with ``random.Random(seed)``.

    ``protocol`` records which, with its parameters.
    """
    source, candidates, top_k = settings.source, settings.candidates, settings.top_k
    if candidates not in CANDIDATE_PROTOCOLS:
        raise LokiInputError(
            f"BEIR candidates {candidates!r}: expected one of {list(CANDIDATE_PROTOCOLS)}"
        )
    check_top_k(top_k, "BEIR top_k")
    corpus_rows, query_rows, qrel_rows = _read_beir(source, settings.split)
    try:
        corpus = {str(r["_id"]): (r.get("title") or "", r["text"]) for r in corpus_rows}
        queries = {str(r["_id"]): r["text"] for r in query_rows}
        qrels: dict[str, dict[str, int]] = {}
        for r in qrel_rows:
            qrels.setdefault(str(r["query-id"]), {})[str(r["corpus-id"])] = int(r["score"])
    except (KeyError, ValueError, TypeError) as err:
        raise LokiInputError(
            f"BEIR source {source!r}: a row lacks a field or has a bad score ({err})"
        ) from None
    judged = sorted(
        q for q, docs in qrels.items() if q in queries and any(v > 0 for v in docs.values())
    )
    if settings.max_queries is not None:
        judged = judged[: settings.max_queries]
    if not judged:
        raise LokiInputError(f"BEIR source {source!r}: no query with a relevant passage")
    if candidates == "bm25":
        from loki_pipeline.evaluate import bm25

        chosen = bm25.bm25_top_k(corpus, {q: queries[q] for q in judged}, top_k)
        protocol = {
            "candidates": "bm25",
            "top_k": top_k,
            "k1": bm25.K1,
            "b": bm25.B,
            "stopwords": bm25.STOPWORDS,
            "stemmer": None,
            "bm25s": bm25.bm25s_version(),
        }
    else:
        rng = random.Random(settings.seed)
        doc_ids = sorted(corpus)
        chosen = {}
        for q in judged:
            positives = sorted(d for d, v in qrels[q].items() if v > 0 and d in corpus)
            pool = [d for d in doc_ids if d not in qrels[q]]
            negatives = rng.sample(pool, min(settings.negatives_per_query, len(pool)))
            chosen[q] = positives + sorted(negatives)
        protocol = {
            "candidates": "random",
            "negatives_per_query": settings.negatives_per_query,
            "seed": settings.seed,
        }
    return {
        "queries": {q: queries[q] for q in judged},
        "corpus": corpus,
        "qrels": {q: qrels[q] for q in judged},
        "candidates": chosen,
        "protocol": protocol,
    }


def _passage(title: str, text: str) -> str:
    return f"{title}\n{text}" if title else text


def prepare(settings: BeirSettings, cache_dir: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """``(data, benchmark)``: the set read and its candidates chosen, before any model loads."""
    return load_beir(settings), f"beir:{settings.source}:{settings.split}"


def evaluate(
    model: Any,
    tokenizer: Any,
    data: Mapping[str, Any],
    settings: BeirSettings,
    *,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Score every candidate, rank per query, and compute ``RANK_METRICS``.

    A query without candidates (BM25 retrieved nothing) counts, with 0 on every metric. Under
    ``candidates: bm25``, ``counts`` also has ``with_positive``: the queries with a relevant
    passage among their candidates (no reranker can score above that share at @1). Besides
    ``metrics``, ``counts`` and ``items``: the ``protocol`` of the candidates and the ``qrels``
    of the evaluated queries, so the report can score each query again (intervals, paired
    differences) without the data source at hand.
    """
    log.info("reranking %d queries", len(data["queries"]))
    keys = [(q, d) for q, docs in data["candidates"].items() for d in docs]
    pairs = [(data["queries"][q], _passage(*data["corpus"][d])) for q, d in keys]
    scores = relevance_scores(model, tokenizer, pairs, batch_size=batch_size)
    run: dict[str, dict[str, float]] = {q: {} for q in data["candidates"]}
    for (q, d), s in zip(keys, scores, strict=True):
        run[q][d] = s
    metrics = rank_metrics(data["qrels"], run)
    counts = {"queries": len(run), "pairs": len(keys)}
    if data.get("protocol", {}).get("candidates") == "bm25":
        counts["with_positive"] = sum(
            any(data["qrels"][q].get(d, 0) > 0 for d in docs)
            for q, docs in data["candidates"].items()
        )
    return {
        "metrics": metrics,
        "counts": counts,
        "items": [
            {"query_id": q, "doc_id": d, "score": s} for (q, d), s in zip(keys, scores, strict=True)
        ],
        "protocol": data.get("protocol"),
        "qrels": {q: data["qrels"].get(q, {}) for q in data["candidates"]},
    }
