"""Task performance: what a fine-tuned model learned (the LoKI paper's task metrics).

- ToolACE runs are judged on BFCL: the item's functions go into the system prompt (BFCL's own
  default prompt for prompting models, bracket-call format), the model answers greedily, and
  ``bfcl.ast_check`` judges the raw answer. Reported: accuracy per category; ``non_live`` = the
  unweighted mean over the non-live categories and ``live`` = the item-weighted mean over the live
  ones (BFCL's conventions); ``overall`` = the mean of the two groups present.
- Reranker runs score each (query, passage) as the model was trained, with the chat of
  ``data.reranker.reranker_messages``, by the expected score under the next-token
  probabilities of "1".."7": ``E = Σ_k k·p_k / Σ_k p_k`` (the seven probabilities renormalised,
  as the LB Reranker does). Candidates are ranked by ``E`` and scored with ``ranx``:
  MAP@1, Recall@1, NDCG@1, P@1, on BEIR-format data (a project-written set by default). The
  candidates of a query are either BEIR's reranking protocol, the BM25 top-k of the whole corpus
  (``candidates: bm25``), or its relevant passages plus seeded random ones (``random``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.bm25 import check_top_k

log = logging.getLogger(__name__)

TASKS = ("toolace", "reranker")
RANK_METRICS = ("map@1", "recall@1", "ndcg@1", "precision@1")
PRIMARY_METRIC = {"toolace": "overall", "reranker": "map@1"}

#: BFCL's default system prompt for prompting models (``bfcl_eval/constants/default_prompts.py``:
#: ret_fmt=python, no tool-call tag, functions as JSON, plaintext, classic style).
BFCL_SYSTEM_PROMPT = (
    "You are an expert in composing functions.You are given a question and a set of possible "
    "functions. Based on the question, you will need to make one or more function/tool calls to "
    "achieve the purpose. If none of the functions can be used, point it out. If the given "
    "question lacks the parameters required by the function, also point it out.\n\n"
    "You should only return the function calls in your response.\n\nIf you decide to invoke any "
    "of the function(s), you MUST put it in the format of [func_name1(params_name1=params_value1, "
    "params_name2=params_value2...), func_name2(params)].  You SHOULD NOT include any other text "
    "in the response.\n\nAt each turn, you should try your best to complete the tasks requested "
    "by the user within the current turn. Continue to output functions to call until you have "
    "fulfilled the user's request to the best of your ability. Once you have no more functions "
    "to call, the system will consider the current turn complete and proceed to the next turn or "
    "task.\n\nHere is a list of functions in json format that you can invoke.\n{functions}\n"
)

#: Defaults of ``tasks.toolace.eval.bfcl`` / ``tasks.reranker.eval.beir`` / ``evaluate.task``.
BFCL_DEFAULTS: dict[str, Any] = {
    "version": "2026.3.23",
    "categories": None,  # None: every category the AST checker supports
    "max_per_category": None,
    "max_new_tokens": 128,
}
BEIR_DEFAULTS: dict[str, Any] = {
    "source": "data/beir/loki_mini",
    "split": "test",
    "max_queries": None,
    "negatives_per_query": 9,
    "seed": 0,
    "candidates": "random",  # or "bm25": BEIR's protocol, the BM25 top_k of the whole corpus
    "top_k": 100,
}
CANDIDATE_PROTOCOLS = ("random", "bm25")
RUN_DEFAULTS: dict[str, Any] = {"batch_size": 8, "threads": 1, "dtype": "float32"}


# --------------------------------------------------------------------------------------------
# batched model calls


def _left_padded(tokenizer: Any, prompts: Sequence[str], device: Any):
    import torch

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    mask = enc["attention_mask"]
    # Positions count real tokens only, so a padded prompt sees exactly its unpadded positions.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return enc["input_ids"].to(device), mask.to(device), positions.to(device), torch


def _chat_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _length_batches(tokenizer: Any, prompts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Index batches of prompts of similar length (less padding), in a stable order."""
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def generate_greedy(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[list[dict[str, str]]],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
) -> list[str]:
    """The model's greedy answer (special tokens removed) to each chat, in input order."""
    from tqdm import tqdm

    prompts = [_chat_prompt(tokenizer, c) for c in conversations]
    answers: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    for batch in tqdm(_length_batches(tokenizer, prompts, batch_size), desc="generate"):
        ids, mask, _, torch = _left_padded(tokenizer, [prompts[i] for i in batch], device)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        for row, i in enumerate(batch):
            answers[i] = tokenizer.decode(out[row, ids.shape[1] :], skip_special_tokens=True)
    return answers


# --------------------------------------------------------------------------------------------
# BFCL


def bfcl_messages(item: Mapping[str, Any]) -> list[dict[str, str]]:
    """The item's turn with BFCL's system prompt (merged into an existing system message)."""
    system = BFCL_SYSTEM_PROMPT.format(functions=json.dumps(item["function"], indent=4))
    messages = [dict(m) for m in item["messages"]]
    if messages and messages[0].get("role") == "system":
        messages[0]["content"] = system + "\n\n" + messages[0]["content"]
        return messages
    return [{"role": "system", "content": system}, *messages]


def bfcl_summary(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, int]]:
    """``(metrics, counts)``: accuracy per category, ``non_live``, ``live`` and ``overall``."""
    from loki_pipeline.evaluate.bfcl_data import LIVE

    per: dict[str, list[bool]] = {}
    for r in records:
        per.setdefault(r["category"], []).append(bool(r["correct"]))
    metrics = {cat: sum(v) / len(v) for cat, v in per.items()}
    counts = {cat: len(v) for cat, v in per.items()}
    non_live = [metrics[c] for c in per if c not in LIVE]
    live = [x for c in per if c in LIVE for x in per[c]]
    groups = []
    if non_live:
        metrics["non_live"] = sum(non_live) / len(non_live)
        groups.append(metrics["non_live"])
    if live:
        metrics["live"] = sum(live) / len(live)
        groups.append(metrics["live"])
    metrics["overall"] = sum(groups) / len(groups)
    return metrics, counts


def evaluate_bfcl(
    model: Any,
    tokenizer: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Answer every BFCL item greedily and judge it; per-item records kept for inspection."""
    from loki_pipeline.evaluate.bfcl import ast_check

    answers = generate_greedy(
        model,
        tokenizer,
        [bfcl_messages(it) for it in items],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    records = [
        {
            "id": it["id"],
            "category": it["category"],
            "output": answer,
            "correct": ast_check(answer, it["function"], it["ground_truth"], it["category"]),
        }
        for it, answer in zip(items, answers, strict=True)
    ]
    metrics, counts = bfcl_summary(records)
    return {"metrics": metrics, "counts": counts, "items": records}


# --------------------------------------------------------------------------------------------
# reranking


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
    prompts = [_chat_prompt(tokenizer, reranker_messages(q, t)) for q, t in pairs]
    scores: list[float] = [0.0] * len(prompts)
    device = next(model.parameters()).device
    for batch in tqdm(_length_batches(tokenizer, prompts, batch_size), desc="rerank"):
        ids, mask, positions, torch = _left_padded(tokenizer, [prompts[i] for i in batch], device)
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
    if not path.is_file():
        raise LokiInputError(
            f"{path}: missing; a BEIR data set needs corpus.jsonl, "
            "queries.jsonl and qrels/<split>.tsv"
        )
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise LokiInputError(f"{path} line {lineno}: invalid JSON ({err})") from None
    return rows


def _read_beir(source: str, split: str):
    """``(corpus rows, query rows, qrels rows)`` from a local BEIR folder or ``hf:<repo>``."""
    if source.startswith("hf:"):
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


def load_beir(
    source: str = BEIR_DEFAULTS["source"],
    *,
    split: str = "test",
    max_queries: int | None = None,
    negatives_per_query: int = 9,
    seed: int = 0,
    candidates: str = "random",
    top_k: int = 100,
) -> dict[str, Any]:
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
    if candidates not in CANDIDATE_PROTOCOLS:
        raise LokiInputError(
            f"BEIR candidates {candidates!r}: expected one of {list(CANDIDATE_PROTOCOLS)}"
        )
    check_top_k(top_k, "BEIR top_k")
    corpus_rows, query_rows, qrel_rows = _read_beir(source, split)
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
    if max_queries is not None:
        judged = judged[:max_queries]
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
        rng = random.Random(seed)
        doc_ids = sorted(corpus)
        chosen = {}
        for q in judged:
            positives = sorted(d for d, v in qrels[q].items() if v > 0 and d in corpus)
            pool = [d for d in doc_ids if d not in qrels[q]]
            negatives = rng.sample(pool, min(negatives_per_query, len(pool)))
            chosen[q] = positives + sorted(negatives)
        protocol = {
            "candidates": "random",
            "negatives_per_query": negatives_per_query,
            "seed": seed,
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


def evaluate_reranker(
    model: Any, tokenizer: Any, data: Mapping[str, Any], *, batch_size: int = 8
) -> dict[str, Any]:
    """Score every candidate, rank per query, and compute ``RANK_METRICS``.

    A query without candidates (BM25 retrieved nothing) counts, with 0 on every metric. Under
    ``candidates: bm25``, ``counts`` also has ``with_positive``: the queries with a relevant
    passage among their candidates (no reranker can score above that share at @1).
    """
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
    }


# --------------------------------------------------------------------------------------------
# one run


def settings_for(task: str, eval_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The task's evaluation settings: the config's ``bfcl``/``beir`` object over the defaults."""
    if task not in TASKS:
        raise LokiInputError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    eval_config = dict(eval_config or {})
    key, defaults = ("bfcl", BFCL_DEFAULTS) if task == "toolace" else ("beir", BEIR_DEFAULTS)
    given = dict(eval_config.get(key) or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise LokiInputError(
            f"tasks.{task}.eval.{key}: unknown keys {unknown}; known {sorted(defaults)}"
        )
    return {**defaults, **given}


def prepare_task(
    task: str, eval_config: Mapping[str, Any] | None, cache_dir: str | os.PathLike
) -> dict[str, Any]:
    """Settings and data of one task, all checked (and the BFCL wheel fetched) before any model."""
    settings = settings_for(task, eval_config)
    if task == "toolace":
        from loki_pipeline.evaluate.bfcl_data import CATEGORIES, bfcl_wheel, load_bfcl

        categories = list(settings["categories"] or CATEGORIES)
        wheel = bfcl_wheel(settings["version"], cache_dir)
        data = load_bfcl(wheel, categories, max_per_category=settings["max_per_category"])
        benchmark = f"bfcl-eval=={settings['version']}"
    else:
        data = load_beir(
            settings["source"],
            split=settings["split"],
            max_queries=settings["max_queries"],
            negatives_per_query=settings["negatives_per_query"],
            seed=settings["seed"],
            candidates=settings["candidates"],
            top_k=settings["top_k"],
        )
        benchmark = f"beir:{settings['source']}:{settings['split']}"
    return {"task": task, "settings": settings, "data": data, "benchmark": benchmark}


def evaluate_task(model: Any, tokenizer: Any, prepared: Mapping[str, Any], *, batch_size: int = 8):
    """One task's summary: ``{"task", "benchmark", "primary_metric", "metrics" (in [0, 1]),
    "counts", "settings", "items"}``, and for the reranker ``"protocol"``: how its candidates
    were chosen (``load_beir``)."""
    task = prepared["task"]
    settings = prepared["settings"]
    if task == "toolace":
        log.info("BFCL: %d items", len(prepared["data"]))
        result = evaluate_bfcl(
            model,
            tokenizer,
            prepared["data"],
            max_new_tokens=settings["max_new_tokens"],
            batch_size=batch_size,
        )
    else:
        log.info("reranking %d queries", len(prepared["data"]["queries"]))
        result = evaluate_reranker(model, tokenizer, prepared["data"], batch_size=batch_size)
    log.info("%s: %s", task, {k: round(v, 4) for k, v in result["metrics"].items()})
    summary = {
        "task": task,
        "benchmark": prepared["benchmark"],
        "primary_metric": PRIMARY_METRIC[task],
        "metrics": result["metrics"],
        "counts": result["counts"],
        "settings": settings,
        "items": result["items"],
    }
    if task == "reranker":
        data = prepared["data"]
        summary["protocol"] = data.get("protocol")
        # the judgements of the evaluated queries, so the report can score each query again
        # (intervals, paired differences) without the data source at hand
        summary["qrels"] = {q: data["qrels"].get(q, {}) for q in data["candidates"]}
    return summary


def run_task_eval(
    model_dir: str | os.PathLike,
    tasks: Sequence[str],
    out_path: str | os.PathLike,
    *,
    eval_configs: Mapping[str, Mapping[str, Any]] | None = None,
    run: Mapping[str, Any] | None = None,
    device: str = "auto",
    cache_dir: str | os.PathLike = "resources/cache",
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Evaluate one model directory on each of ``tasks`` and write ``task.json`` atomically.

    ``task.json``: ``{"model_dir", "tasks": {task: evaluate_task summary}, "config_hash", ...
    names}`` (``names``: e.g. model and run, recorded as given). A training run has one task;
    the untuned ``base`` is evaluated on every task the config trains. Settings, data and the
    model directory are all checked before the model is loaded.
    """
    import torch

    from loki_pipeline.io import config_hash, write_json
    from loki_pipeline.models.loading import load_model, read_checkpoint_config

    if not tasks:
        raise LokiInputError("no task to evaluate")
    run = {**RUN_DEFAULTS, **(run or {})}
    read_checkpoint_config(model_dir)
    eval_configs = eval_configs or {}
    prepared = [prepare_task(t, eval_configs.get(t), cache_dir) for t in tasks]
    torch.set_num_threads(int(run["threads"]))
    model, tokenizer = load_model(model_dir, dtype=run["dtype"], device=device)
    summaries = {
        p["task"]: evaluate_task(model, tokenizer, p, batch_size=int(run["batch_size"]))
        for p in prepared
    }
    out = {
        **dict(names or {}),
        "model_dir": str(model_dir),
        "tasks": summaries,
        "config_hash": config_hash({"settings": [p["settings"] for p in prepared], "run": run}),
    }
    write_json(out_path, out)
    return out
