"""BM25 first-stage retrieval for BEIR's reranking protocol.

BEIR evaluates a reranker on the top ``k`` (usually 100) passages that BM25 retrieves from the
whole corpus for each query, not on hand-picked candidates: the reranker is judged on the
list a real first stage would give it, and a relevant passage that BM25 misses simply cannot be
ranked (the metrics, computed against the qrels, count it as missed).

Scoring is ``bm25s`` (the Lucene variant of Okapi BM25: ``idf = ln(1 + (N - df + 0.5) /
(df + 0.5))``, term weight ``tf / (tf + k1·(1 - b + b·dl/avgdl))``, summed over the query's
tokens with repeats) with Pyserini's BEIR parameters ``k1 = 0.9``, ``b = 0.4``. Each passage is
indexed as ``title + " " + text``. Tokenisation is bm25s's: lower-cased words of two or more
letters or digits, English stopwords removed (bm25s's list, the same 33 words as Lucene's default
English set), and no stemmer (Pyserini's Porter stemmer would need PyStemmer, an extra
dependency), so scores are close to, not identical with, Pyserini's BM25-flat runs.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from loki_pipeline.errors import LokiInputError

#: Pyserini's BM25 parameters for BEIR (Anserini's defaults).
K1 = 0.9
B = 0.4
STOPWORDS = "en"


def check_top_k(k: object, name: str = "BM25 top-k") -> int:
    """``k`` if it is an integer >= 1 (not a bool); a clear error naming ``name`` otherwise."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise LokiInputError(f"{name} must be an integer >= 1, got {k!r}")
    return k


def _import_bm25s():
    """``bm25s``, imported without numba unless numba is loaded already.

    bm25s imports numba when it can, for a backend not used here; numba reads
    ``NUMBA_DISABLE_JIT`` once, when first imported, and ranx must be the first to import it for
    its pure-Python mode on small runs (``reranker._import_ranx``) to work.
    """
    if "bm25s" in sys.modules or "numba" in sys.modules:
        import bm25s

        return bm25s
    sys.modules["numba"] = None  # type: ignore[assignment]  # `import numba` raises ImportError
    try:
        import bm25s
    finally:
        if sys.modules.get("numba", 0) is None:
            del sys.modules["numba"]
    return bm25s


def _tokenize(texts: list[str], stopwords: str | None, *, return_ids: bool):
    return _import_bm25s().tokenize(
        texts,
        lower=True,
        stopwords=stopwords or None,
        stemmer=None,
        return_ids=return_ids,
        show_progress=False,
    )


def bm25_ranking(
    corpus: Mapping[str, tuple[str, str]],
    queries: Mapping[str, str],
    k: int,
    *,
    k1: float = K1,
    b: float = B,
    stopwords: str | None = STOPWORDS,
) -> dict[str, list[tuple[str, float]]]:
    """Each query's top ``k`` ``(doc id, BM25 score)`` over ``corpus`` (``{id: (title, text)}``).

    Best first, ties broken by doc id (string order), so the result is deterministic. Only
    passages sharing a token with the query are retrieved (as Lucene does): a query may get
    fewer than ``k``, or none. ``stopwords=None`` keeps every token.
    """
    import numpy as np

    check_top_k(k)
    if not corpus:
        raise LokiInputError("BM25 needs a non-empty corpus")
    doc_ids = sorted(corpus)  # index order = doc-id order, which breaks score ties
    docs = [" ".join(p for p in corpus[d] if p) for d in doc_ids]
    query_ids = list(queries)
    query_tokens = _tokenize([queries[q] for q in query_ids], stopwords, return_ids=False)
    corpus_tokens = _tokenize(docs, stopwords, return_ids=True)
    if not corpus_tokens.vocab:  # no passage has a token: nothing can match
        return {q: [] for q in query_ids}

    retriever = _import_bm25s().BM25(k1=k1, b=b, method="lucene", dtype="float64", backend="numpy")
    retriever.index(corpus_tokens, show_progress=False)
    ranking: dict[str, list[tuple[str, float]]] = {}
    for q, tokens in zip(query_ids, query_tokens, strict=True):
        ids = retriever.get_tokens_ids([t for t in tokens if t])  # unknown tokens dropped
        if not ids:
            ranking[q] = []
            continue
        scores = retriever.get_scores_from_ids(ids)
        hits = np.flatnonzero(scores > 0)  # ascending index, i.e. doc-id order
        if len(hits) > k:
            kth = np.partition(scores[hits], len(hits) - k)[len(hits) - k]
            hits = hits[scores[hits] >= kth]
        order = hits[np.argsort(-scores[hits], kind="stable")][:k]  # stable: ties by doc id
        ranking[q] = [(doc_ids[i], float(scores[i])) for i in order]
    return ranking


def bm25_top_k(
    corpus: Mapping[str, tuple[str, str]],
    queries: Mapping[str, str],
    k: int,
    *,
    stopwords: str | None = STOPWORDS,
) -> dict[str, list[str]]:
    """Each query's top ``k`` doc ids by BM25 score (see ``bm25_ranking``), best first."""
    ranking = bm25_ranking(corpus, queries, k, stopwords=stopwords)
    return {q: [d for d, _ in hits] for q, hits in ranking.items()}


def bm25s_version() -> str:
    from importlib.metadata import version

    return version("bm25s")
