"""Selecting stage: every strategy against a direct implementation of the paper's steps."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from loki_pipeline.errors import LokiInputError
from loki_pipeline.kva.storage import row_crc32
from loki_pipeline.select import (
    STRATEGIES,
    count_nodes,
    format_q,
    load_selection,
    read_selection,
    save_selection,
    select_nodes,
    validate_selection,
)
from loki_pipeline.select.naming import Q_PATTERN, global_quota, nodes_per_layer_quota


def write_kva(path: Path, attributions: np.ndarray, *, subjects=None, **attr_overrides) -> Path:
    """A kva.h5 in the DESIGN.md layout, as the KVA stage writes it."""
    n, layers, nodes = attributions.shape
    subjects = subjects if subjects is not None else ["astronomy"] * n
    with h5py.File(path, "w") as fh:
        fh.create_dataset("attributions", data=attributions.astype(np.float32))
        fh.create_dataset("row_crc32", data=row_crc32(attributions.astype(np.float32)))
        fh.create_dataset("subject", data=np.array(subjects, dtype=h5py.string_dtype()))
        fh.create_dataset(
            "question_id", data=np.array([str(i) for i in range(n)], dtype=h5py.string_dtype())
        )
        fh.create_dataset("predicted_token", data=np.zeros(n, dtype=np.int64))
        fh.create_dataset("prompt_length", data=np.full(n, 10, dtype=np.int64))
        fh.create_dataset("probability", data=np.full(n, 0.5, dtype=np.float32))
        fh.create_dataset("completeness_gap", data=np.zeros(n, dtype=np.float32))
        attrs = dict(
            model="tiny", steps=7, method="exact", quadrature="left", dtype="float32",
            package_version="0.1.0", config_hash="0" * 16, num_layers=layers, d_model=nodes,
            num_samples=n, complete=True,
        )  # fmt: skip
        attrs.update(attr_overrides)
        for key, value in attrs.items():
            if value is not None:
                fh.attrs[key] = value
    return path


# ---------------------------------------------------------------- direct reference (the oracle)
def reference_select(a: np.ndarray, q: float, strategy: str) -> list[list[int]]:
    """The paper's Selecting steps written out with Python sorts, one prompt and layer at a time."""
    n, layers, nodes = a.shape
    high = strategy.endswith("high")
    if strategy.startswith("global"):
        k = int(q * layers * nodes // 100)
        scope = [[(layer, i) for layer in range(layers) for i in range(nodes)]]
    else:
        k = int(q * nodes // 100)
        scope = [[(layer, i) for i in range(nodes)] for layer in range(layers)]
    counts: dict[tuple[int, int], int] = {}
    for t in range(n):
        for group in scope:
            # the flat position (layer * D + i) is the tie-breaker: lower index first
            order = sorted(group, key=lambda li: ((-1 if high else 1) * a[t][li], li))
            for li in order[:k]:
                counts[li] = counts.get(li, 0) + 1
    positions: list[list[int]] = [[] for _ in range(layers)]
    for group in scope:
        for layer, i in sorted(group, key=lambda li: (-counts.get(li, 0), li))[:k]:
            positions[layer].append(i)
    return [sorted(p) for p in positions]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("q", [10, 25, 37.5])
def test_every_strategy_matches_reference_on_continuous_values(strategy, q):
    a = np.random.default_rng(1).standard_normal((13, 4, 16)).astype(np.float32)
    assert select_nodes(a, q, strategy, chunk_size=5) == reference_select(a, q, strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seed", range(4))
def test_ties_break_towards_lower_index_like_reference(strategy, seed):
    # three distinct values: almost every row has a crowded k-th value, and counts tie too
    a = np.random.default_rng(seed).integers(-1, 2, size=(9, 3, 20)).astype(np.float32)
    assert select_nodes(a, 30, strategy, chunk_size=4) == reference_select(a, 30, strategy)


def test_signed_zero_counts_as_a_tie():
    a = np.zeros((1, 1, 4), dtype=np.float32)
    a[0, 0, :2] = -0.0
    assert select_nodes(a, 50) == [[0, 1]]
    a[0, 0, :2] = 0.0
    a[0, 0, 2:] = -0.0
    assert select_nodes(a, 50) == [[0, 1]]


def test_layer_balanced_gives_every_layer_k_l_nodes_and_global_gives_T():
    a = np.random.default_rng(2).standard_normal((6, 5, 30)).astype(np.float32)
    for s in ("layer_balanced_low", "layer_balanced_high"):
        assert [len(p) for p in select_nodes(a, 10, s)] == [3] * 5
    for s in ("global_low", "global_high"):
        assert sum(len(p) for p in select_nodes(a, 10, s)) == 15


def test_low_and_high_are_opposite_on_a_planted_layout():
    a = np.zeros((20, 2, 10), dtype=np.float32)
    rng = np.random.default_rng(3)
    a += rng.normal(0, 0.01, a.shape).astype(np.float32)
    a[:, :, 7] -= 5.0  # always the least important node
    a[:, 1, 2] += 5.0  # always the most important node, only in layer 1
    assert select_nodes(a, 10, "layer_balanced_low") == [[7], [7]]
    assert select_nodes(a, 5, "global_high") == [[], [2]]  # T = 1 of 20 nodes


def test_file_and_array_give_the_same_selection_for_any_chunk_size(tmp_path):
    a = np.random.default_rng(4).standard_normal((11, 3, 12)).astype(np.float32)
    path = write_kva(tmp_path / "kva.h5", a)
    want = select_nodes(a, 25, "layer_balanced_low")
    for chunk in (1, 3, 11, 100):
        assert select_nodes(path, 25, chunk_size=chunk) == want


def test_group_counts_add_up_to_the_total():
    a = np.random.default_rng(5).standard_normal((10, 2, 8)).astype(np.float32)
    groups = np.zeros((2, 10), dtype=bool)
    groups[0, :4] = True
    groups[1, 4:] = True
    total = count_nodes(a, 25)["layer_balanced_low"]
    split = count_nodes(a, 25, sample_groups=groups, chunk_size=3)["layer_balanced_low"]
    assert split.shape == (2, 2, 8)
    np.testing.assert_array_equal(split.sum(0), total)
    np.testing.assert_array_equal(split[0], count_nodes(a[:4], 25)["layer_balanced_low"])


# ------------------------------------------------------------------------------------ quota, q
def test_quota_is_floor_of_q_percent_without_float_round_off():
    assert nodes_per_layer_quota(10, 576) == 57
    assert nodes_per_layer_quota(5, 896) == 44  # upstream Qwen2.5-0.5B q=5 file has 44 per layer
    assert nodes_per_layer_quota(10, 4096) == 409
    assert nodes_per_layer_quota(7, 100) == 7  # 0.07 * 100 == 7.000000000000001 in floats
    assert global_quota(10, 32, 4096) == 13107


def test_format_q_is_compact_and_matches_the_wildcard_pattern():
    import re

    assert [format_q(q) for q in (10, 10.0, 2.5, "5", 0.25, 99.9)] == [
        "10", "10", "2.5", "5", "0.25", "99.9",
    ]  # fmt: skip
    for q in ("10", "2.5", "0.25", "1"):
        assert re.fullmatch(Q_PATTERN, q)
    for q in ("10.0", "05", "2.50", "-1", "1e-3", "."):
        assert not re.fullmatch(Q_PATTERN, q)


def test_format_q_round_trips_every_float_through_the_wildcard_pattern():
    import random
    import re

    rng = random.Random(0)
    # (no subnormal q: a library loaded with -ffast-math may set denormals-are-zero process-wide)
    tricky = [12.3456789, 1e-5, 1e-11, 1 / 3, 0.1 + 0.2, 100 - 1e-13, 1e-300, 33.3, 0.07]
    for q in tricky + [rng.uniform(0, 100) for _ in range(2000)]:
        text = format_q(q)
        assert re.fullmatch(Q_PATTERN, text), text
        assert float(text) == q and format_q(text) == text
    assert format_q(12.3456789) == "12.3456789"  # not 12.3457 (6 significant digits)


def test_every_q_of_the_shipped_configs_keeps_its_file_name():
    import yaml

    root = Path(__file__).resolve().parents[1] / "config"
    values = []
    for name in ("config.yaml", "paper.yaml"):
        config = yaml.safe_load((root / name).read_text())
        select = config["select"]
        heatmap = select["heatmap_q"]
        values += select["q"] + [select["stability"]["q"]] + select["stability"]["q_list"]
        values += list(heatmap.values()) if isinstance(heatmap, dict) else [heatmap]
        values += [item["q"] for item in config["suppress"]]
    assert {1, 5, 10, 20, 30} <= set(values)
    for q in values:  # the names the earlier formats gave them
        assert format_q(q) == f"{float(q):g}" == f"{float(q):.10f}".rstrip("0").rstrip(".")


@pytest.mark.parametrize("q", [0, 100, -3, 150, "ten"])
def test_q_outside_open_interval_is_rejected(q):
    with pytest.raises(LokiInputError, match="q must"):
        select_nodes(np.ones((2, 2, 10), dtype=np.float32), q)


def test_q_that_selects_nothing_is_rejected():
    with pytest.raises(LokiInputError, match="selects no node"):
        select_nodes(np.ones((2, 2, 10), dtype=np.float32), 5)


def test_unknown_strategy_is_rejected():
    with pytest.raises(LokiInputError, match="unknown selection strategy 'lowest'"):
        select_nodes(np.ones((2, 2, 10), dtype=np.float32), 50, "lowest")


# ---------------------------------------------------------------------------- bad kva.h5 files
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_kva_with_nan_or_inf_is_rejected_naming_file_and_sample(tmp_path, bad):
    a = np.ones((5, 2, 10), dtype=np.float32)
    a[3, 1, 4] = bad
    path = write_kva(tmp_path / "kva.h5", a)
    with pytest.raises(LokiInputError, match=r"kva.h5: sample 3: attributions hold NaN or inf"):
        select_nodes(path, 50, chunk_size=2)
    with pytest.raises(LokiInputError, match=r"NaN or inf \(sample 3\)"):
        select_nodes(a, 50, chunk_size=2)  # an in-memory array is checked chunk by chunk


def test_kva_whose_rows_were_not_all_written_is_refused_by_selection(tmp_path):
    """A row that differs from its checksum (a write that never reached the disk) is refused."""
    a = np.ones((4, 2, 10), dtype=np.float32)
    path = write_kva(tmp_path / "kva.h5", a)
    with h5py.File(path, "r+") as fh:
        fh["attributions"][2] = 0.0  # as if the last write of row 2 had been lost
    with pytest.raises(LokiInputError, match=r"kva.h5: sample 2: row checksum does not match"):
        select_nodes(path, 50)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    with pytest.raises(LokiInputError, match="kva.h5"):
        select_nodes(path, 50)


def test_kva_missing_attribute_or_dataset_is_rejected(tmp_path):
    a = np.ones((3, 2, 10), dtype=np.float32)
    with pytest.raises(LokiInputError, match="missing file attribute.*num_layers"):
        select_nodes(write_kva(tmp_path / "a.h5", a, num_layers=None), 50)
    with pytest.raises(LokiInputError, match="complete=False"):
        select_nodes(write_kva(tmp_path / "b.h5", a, complete=False), 50)
    with pytest.raises(LokiInputError, match="d_model=9 disagrees"):
        select_nodes(write_kva(tmp_path / "c.h5", a, d_model=9), 50)
    with h5py.File(tmp_path / "d.h5", "w") as fh:
        fh.create_dataset("scores", data=a)
    with pytest.raises(LokiInputError, match="d.h5: missing dataset 'attributions'"):
        select_nodes(tmp_path / "d.h5", 50)
    with pytest.raises(LokiInputError, match="not found"):
        select_nodes(tmp_path / "nope.h5", 50)


# ------------------------------------------------------------------------------ selection files
def test_json_round_trip_keeps_contract_and_sorted_lists(tmp_path):
    path = tmp_path / "layer_balanced_low_q10.json"
    save_selection(
        path, [[3, 1], [0, 2]], model="tiny", strategy="layer_balanced_low", q=10.0,
        num_layers=2, nodes_per_layer=4,
    )  # fmt: skip
    doc = json.loads(path.read_text())
    assert doc == {
        "model": "tiny", "strategy": "layer_balanced_low", "q": 10, "num_layers": 2,
        "nodes_per_layer": 4, "positions": [[1, 3], [0, 2]],
    }  # fmt: skip
    assert load_selection(path) == [[1, 3], [0, 2]]
    assert load_selection(path, num_layers=2, nodes_per_layer=4) == [[1, 3], [0, 2]]


def test_upstream_plain_list_of_lists_loads_sorted(tmp_path):
    path = tmp_path / "10.json"
    path.write_text(json.dumps([[7, 2, 5], [1, 0, 9]], indent=4))
    assert load_selection(path) == [[2, 5, 7], [0, 1, 9]]
    assert read_selection(path) == {"positions": [[2, 5, 7], [0, 1, 9]]}
    with pytest.raises(LokiInputError, match=r"10.json: layer 1 node 9 is outside \[0, 8\)"):
        load_selection(path, num_layers=2, nodes_per_layer=8)


@pytest.mark.parametrize(
    ("positions", "message"),
    [
        ([[0, 1]], "has 1 layer lists but the model has 2 layers"),
        ([[0, 1], [1, 1]], "layer 1 repeats node"),
        ([[0, -1], [1]], "node -1 is outside"),
        ([[0, 4], [1]], "node 4 is outside"),
        ([[0, 1.5], [1]], "must be integers"),
        ([[0, True], [1]], "must be integers"),
        ([[0], 3], "layer 1 is not a list"),
    ],
)
def test_selection_that_does_not_fit_the_model_is_rejected(positions, message):
    with pytest.raises(LokiInputError, match=message):
        validate_selection(positions, 2, 4, source="sel.json")


def test_selection_file_made_for_another_model_is_rejected(tmp_path):
    path = tmp_path / "s.json"
    save_selection(path, [[0], [1]], model="m", strategy="global_low", q=5, num_layers=2,
                   nodes_per_layer=4)  # fmt: skip
    with pytest.raises(LokiInputError, match="has 2 layer lists .* but the model has 3 layers"):
        load_selection(path, num_layers=3, nodes_per_layer=4)
    with pytest.raises(LokiInputError, match="nodes_per_layer=4 .* has d_model=8: .*another"):
        load_selection(path, num_layers=2, nodes_per_layer=8)
    path.write_text("{not json")
    with pytest.raises(LokiInputError, match="not valid JSON"):
        load_selection(path)


def test_torch_tensor_input_gives_the_numpy_selection():
    import torch

    a = np.random.default_rng(6).standard_normal((5, 2, 16)).astype(np.float32)
    for strategy in STRATEGIES:
        assert select_nodes(torch.from_numpy(a), 25, strategy) == select_nodes(a, 25, strategy)


def test_upstream_tie_break_keeps_the_higher_index_among_equal_counts():
    # 2 prompts, 2 layers x 4 nodes, q=25: T=2 nodes over all layers. Prompt 0 votes for flat
    # nodes 0 and 1, prompt 1 for 6 and 7: four nodes counted once each, a tie for 2 places.
    a = np.ones((2, 2, 4), dtype=np.float32)
    a[0, 0, :2] = [-2.0, -1.0]
    a[1, 1, 2:] = [-2.0, -1.0]
    assert select_nodes(a, 25, "global_low") == [[0, 1], []]  # lower flat index
    assert select_nodes(a, 25, "global_low", tie_break="upstream") == [[], [2, 3]]
    # upstream's own lines (a stable ascending argsort of the counts, reversed) say the same
    counts = np.zeros(8, dtype=int)
    counts[[0, 1, 6, 7]] = 1
    assert sorted(np.argsort(counts, kind="stable")[::-1][:2].tolist()) == [6, 7]
    # G-H mirrors it; the layer-balanced strategies keep their rule whatever tie_break says
    assert select_nodes(-a, 25, "global_high", tie_break="upstream") == [[], [2, 3]]
    assert select_nodes(a, 25, "layer_balanced_low", tie_break="upstream") == select_nodes(
        a, 25, "layer_balanced_low"
    )
    with pytest.raises(LokiInputError, match="tie_break='lowest'"):
        select_nodes(a, 25, "global_low", tie_break="lowest")


@pytest.mark.parametrize("strategy", ["global_low", "global_high"])
def test_upstream_tie_break_follows_upstreams_steps_on_random_attributions(strategy):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 3, 50)).astype(np.float32)
    # 7 prompts: count ties are certain at q=10 on 150 nodes; compare against upstream's steps
    # written out directly (normalise, argsort, count; stable ascending argsort reversed)
    counts = np.zeros(150, dtype=int)
    for row in a.reshape(7, -1):
        norm = (row - row.min()) / (row.max() - row.min())
        counts[np.argsort(-norm if strategy == "global_high" else norm)[:15]] += 1
    flat = sorted(np.argsort(counts, kind="stable")[::-1][:15].tolist())
    expected = [[i % 50 for i in flat if i // 50 == layer] for layer in range(3)]
    assert select_nodes(a, 10, strategy, tie_break="upstream") == expected
