"""The Layer-Balanced Strategy (the LoKI paper's Selecting stage) and its ablation variants.

For a quota ``q`` (percent of all ``L x D`` knowledge output nodes):

1. per prompt ``t`` and layer ``l`` take the ``k_l = floor(q * D / 100)`` nodes with the smallest
   attribution (``*_high``: largest); ``global_*`` take ``T = floor(q/100 * L * D)`` nodes per
   prompt over all layers at once;
2. count how often each node was taken over all prompts, ``c_{l,i}``;
3. keep the ``k_l`` most frequent nodes per layer (``global_*``: the ``T`` most frequent overall,
   so layers get unequal shares).

Ties are broken towards the lower node index (flat ``l * D + i`` for the global strategies) in
both steps, so a selection is a deterministic function of the attributions. ``tie_break=
"upstream"`` reproduces upstream LoKI's code for the global strategies instead
(:func:`upstream_global_counts`, :func:`upstream_keep_most_frequent`). The original code
min-max normalises each layer first; that is monotone and does not change the order.

Counting reads ``[samples, layers, nodes]`` in chunks of prompts and never loops over nodes:
``np.partition`` finds the k-th value of every row at once, the nodes strictly beyond it are
all taken, and among the nodes equal to it the lowest indices fill the remaining places.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from loki_pipeline.errors import LokiInputError
from loki_pipeline.kva.kva_file import inspect_kva, iter_kva_chunks
from loki_pipeline.select.naming import (
    check_strategy,
    global_quota,
    nodes_per_layer_quota,
)
from loki_pipeline.settings import schema_default

#: a kva.h5 path or an array ``[samples, layers, nodes]``; a ``torch.Tensor`` is accepted too
#: (converted chunk by chunk), but selecting never imports torch itself.
Attributions = str | os.PathLike | np.ndarray

#: prompts read per chunk (the config schema's ``select.chunk_size``): bounded memory at any size
DEFAULT_CHUNK_SIZE: int = schema_default("select.chunk_size")


def is_global(strategy: str) -> bool:
    return check_strategy(strategy).startswith("global")


def is_high(strategy: str) -> bool:
    return check_strategy(strategy).endswith("high")


def extreme_mask(x: np.ndarray, k: int, *, largest: bool = False) -> np.ndarray:
    """Boolean mask of the ``k`` smallest (``largest``) entries of every row (last dim).

    Exactly ``k`` entries per row; among entries equal to the k-th value the lowest indices win.
    ``np.partition`` finds every row's k-th value in linear time (a float partition measured
    faster here than ``torch.topk``/``torch.kthvalue`` and than mapping floats to sortable ints).
    """
    width = x.shape[-1]
    if not 0 < k <= width:
        raise LokiInputError(f"cannot take {k} of {width} nodes per row")
    pivot = width - k if largest else k - 1
    kth = np.partition(x, pivot, axis=-1)[..., pivot : pivot + 1]
    mask = x >= kth if largest else x <= kth
    # Rows with more ties at the k-th value than places left need the lower-index rule;
    # with real-valued attributions they are rare, so only those rows pay for a cumsum.
    crowded = np.count_nonzero(mask, axis=-1) > k
    if crowded.any():
        rows = np.nonzero(crowded)
        at = x[rows] == kth[rows]
        strict = mask[rows] & ~at
        places_left = k - np.count_nonzero(strict, axis=-1, keepdims=True)
        mask[rows] = strict | (at & (np.cumsum(at, axis=-1) <= places_left))
    return mask


def _chunks(
    attributions: Attributions, chunk_size: int
) -> tuple[tuple[int, int, int], Iterator[tuple[int, np.ndarray]]]:
    """Shape and a chunk iterator for a ``kva.h5`` path or an in-memory array."""
    if isinstance(attributions, (str, os.PathLike)):
        info = inspect_kva(attributions)
        shape = (info.num_samples, info.num_layers, info.num_nodes)
        return shape, iter_kva_chunks(attributions, chunk_size)
    array = attributions
    if array.ndim != 3:
        raise LokiInputError(
            f"attributions must be [samples, layers, nodes], got shape {tuple(array.shape)}"
        )
    if array.shape[0] == 0:
        raise LokiInputError("attributions hold no samples")

    def gen():
        for start in range(0, array.shape[0], chunk_size):
            block = array[start : start + chunk_size]
            if hasattr(block, "detach"):  # a torch.Tensor
                block = block.detach().cpu().float().numpy()
            block = np.asarray(block, dtype=np.float32)
            if not np.isfinite(block).all():
                row = start + int(np.argwhere(~np.isfinite(block))[0][0])
                raise LokiInputError(f"attributions hold NaN or inf (sample {row})")
            yield start, block

    return tuple(array.shape), gen()


def per_prompt_quota(q: float, strategy: str, num_layers: int, num_nodes: int) -> int:
    """How many nodes one prompt votes for: ``k_l`` per layer, or ``T`` over all layers."""
    k = (
        global_quota(q, num_layers, num_nodes)
        if is_global(strategy)
        else nodes_per_layer_quota(q, num_nodes)
    )
    if k == 0:
        scope = (
            f"{num_layers} x {num_nodes} nodes"
            if is_global(strategy)
            else f"{num_nodes} nodes per layer"
        )
        raise LokiInputError(f"q={q} selects no node at all ({scope}); raise q")
    return k


def count_nodes(
    attributions: Attributions,
    q: float,
    strategies: Sequence[str] = ("layer_balanced_low",),
    *,
    sample_groups: np.ndarray | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Step 1-2 for several strategies in one pass: ``c_{l,i}`` as int64 ``[L, D]`` per strategy.

    ``sample_groups`` (bool ``[G, samples]``) counts each group of prompts separately and returns
    ``[G, L, D]`` instead; the stability analysis uses it to count halves and subject groups in
    the same pass.
    """
    from tqdm.auto import tqdm

    strategies = [check_strategy(s) for s in strategies]
    (n, layers, nodes), chunks = _chunks(attributions, chunk_size)
    quotas = {s: per_prompt_quota(q, s, layers, nodes) for s in strategies}
    groups = None
    if sample_groups is not None:
        groups = np.asarray(sample_groups, dtype=np.float32)
        if groups.ndim != 2 or groups.shape[1] != n:
            raise LokiInputError(f"sample_groups must be [groups, {n}], got {groups.shape}")
    lead = () if groups is None else (groups.shape[0],)
    counts = {s: np.zeros((*lead, layers * nodes), dtype=np.int64) for s in strategies}
    bar = tqdm(total=n, desc="select: counting", unit="prompt", disable=not progress)
    for start, block in chunks:
        x = np.asarray(block, dtype=np.float32)
        b = x.shape[0]
        for s in strategies:
            rows = x.reshape(b, 1, layers * nodes) if is_global(s) else x
            mask = extreme_mask(rows, quotas[s], largest=is_high(s)).reshape(b, layers * nodes)
            if groups is None:
                counts[s] += mask.view(np.uint8).sum(0, dtype=np.int64)
            else:
                # float32 matmul is exact for counts below 2**24 prompts
                votes = groups[:, start : start + b] @ mask.astype(np.float32)
                counts[s] += votes.astype(np.int64)
        bar.update(b)
    bar.close()
    return {s: c.reshape(*lead, layers, nodes) for s, c in counts.items()}


def keep_most_frequent(counts: np.ndarray, k: int, *, per_layer: bool = True) -> list[list[int]]:
    """Step 3: the ``k`` most counted nodes per layer (or overall), ties to the lower index."""
    layers, nodes = counts.shape
    if per_layer:
        order = np.argsort(-counts, axis=1, kind="stable")[:, :k]
        return [sorted(int(i) for i in row) for row in order]
    flat = np.argsort(-counts.reshape(-1), kind="stable")[:k]
    positions: list[list[int]] = [[] for _ in range(layers)]
    for layer, node in zip(*np.divmod(np.sort(flat), nodes), strict=True):
        positions[int(layer)].append(int(node))
    return positions


#: select.tie_break values
TIE_BREAKS: tuple[str, ...] = ("lower_index", "upstream")


def upstream_global_counts(
    attributions: Attributions, q: float, strategy: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> np.ndarray:
    """Steps 1-2 of a global strategy as upstream LoKI's code takes them: each prompt's
    ``[L, D]`` attributions flattened and min-max normalised in float32 (all zeros when
    constant), the ``T`` smallest (``global_high``: of the negated values) taken by numpy's
    default ``argsort``, so values that normalise equal are ordered as numpy orders them."""
    if not is_global(strategy):
        raise LokiInputError(
            f"tie_break 'upstream' applies to the global strategies, not {strategy}"
        )
    (_, layers, nodes), chunks = _chunks(attributions, chunk_size)
    k = per_prompt_quota(q, strategy, layers, nodes)
    counts = np.zeros(layers * nodes, dtype=np.int64)
    for _, block in chunks:
        for row in np.asarray(block, dtype=np.float32).reshape(block.shape[0], -1):
            lo, hi = np.min(row), np.max(row)
            norm = np.zeros_like(row) if hi == lo else (row - lo) / (hi - lo)
            counts[np.argsort(-norm if is_high(strategy) else norm)[:k]] += 1
    return counts.reshape(layers, nodes)


def upstream_keep_most_frequent(counts: np.ndarray, k: int) -> list[list[int]]:
    """Step 3 of a global strategy as upstream LoKI's code takes it: a stable ascending
    argsort of the flat counts, reversed, its first ``k``: among equal counts the higher flat
    index wins."""
    layers, nodes = counts.shape
    flat = np.argsort(counts.reshape(-1), kind="stable")[::-1][:k]
    positions: list[list[int]] = [[] for _ in range(layers)]
    for layer, node in zip(*np.divmod(np.sort(flat), nodes), strict=True):
        positions[int(layer)].append(int(node))
    return positions


def select_from_counts(counts: np.ndarray, q: float, strategy: str) -> list[list[int]]:
    """Step 3 for a strategy, given its ``[L, D]`` counts."""
    layers, nodes = counts.shape
    k = per_prompt_quota(q, strategy, layers, nodes)
    return keep_most_frequent(counts, k, per_layer=not is_global(strategy))


def select_nodes(
    attributions: Attributions,
    q: float,
    strategy: str = "layer_balanced_low",
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
    tie_break: str = "lower_index",
) -> list[list[int]]:
    """Trainable nodes for quota ``q``: one sorted list of node indices per layer.

    ``attributions`` is a ``kva.h5`` path or an array ``[samples, layers, nodes]``.
    ``layer_balanced_*`` give every layer ``k_l`` nodes; ``global_*`` give ``T`` nodes in all.
    ``tie_break="upstream"``: the global strategies as upstream LoKI's code breaks ties.
    """
    if tie_break not in TIE_BREAKS:
        raise LokiInputError(f"tie_break={tie_break!r}: expected one of {', '.join(TIE_BREAKS)}")
    if tie_break == "upstream" and is_global(strategy):
        counts = upstream_global_counts(attributions, q, strategy, chunk_size=chunk_size)
        k = per_prompt_quota(q, strategy, *counts.shape)
        return upstream_keep_most_frequent(counts, k)
    counts = count_nodes(attributions, q, (strategy,), chunk_size=chunk_size, progress=progress)[
        strategy
    ]
    return select_from_counts(counts, q, strategy)


def select_to_file(
    kva_path: str | os.PathLike,
    q: float,
    strategy: str,
    output: str | os.PathLike,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
    tie_break: str = "lower_index",
) -> list[list[int]]:
    """Select from a ``kva.h5`` and write the selection JSON (with where it came from; a
    global selection made with ``tie_break="upstream"`` records it)."""
    import h5py

    from loki_pipeline.select.selection_file import save_selection

    info = inspect_kva(kva_path)
    positions = select_nodes(
        kva_path, q, strategy, chunk_size=chunk_size, progress=progress, tie_break=tie_break
    )
    upstream = tie_break == "upstream" and is_global(strategy)
    with h5py.File(kva_path, "r") as fh:
        kva_hash = fh.attrs.get("config_hash", "")
    save_selection(
        output, positions, model=info.model, strategy=strategy, q=q,
        num_layers=info.num_layers, nodes_per_layer=info.num_nodes,
        extra={
            "num_samples": info.num_samples,
            "kva_config_hash": kva_hash.decode() if isinstance(kva_hash, bytes) else str(kva_hash),
            **({"tie_break": "upstream"} if upstream else {}),
        },
    )  # fmt: skip
    return positions
