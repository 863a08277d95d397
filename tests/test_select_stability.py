"""Stability table: overlaps equal direct set arithmetic on selections made independently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_select import write_kva

from loki_pipeline.errors import LokiInputError
from loki_pipeline.select import select_nodes
from loki_pipeline.select.stability import (
    SUBJECT_GROUPS,
    read_stability_csv,
    stability_table,
    subject_group,
    write_stability_csv,
)


def test_subject_groups_cover_mmlus_57_subjects_as_lm_eval_groups_them():
    import yaml

    lm_eval = pytest.importorskip(
        "lm_eval", reason='lm-eval not installed: `pip install -e ".[test]"`'
    )
    task_dir = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    tags = {}
    for f in task_dir.glob("mmlu_*.yaml"):
        doc = yaml.safe_load(f.read_text())
        tags[doc["dataset_name"]] = doc["tag"]
    names = {"mmlu_stem_tasks": "STEM", "mmlu_humanities_tasks": "humanities",
             "mmlu_social_sciences_tasks": "social sciences", "mmlu_other_tasks": "other"}  # fmt: skip
    assert len(tags) == 57
    assert {s: subject_group(s) for s in tags} == {s: names[t] for s, t in tags.items()}
    assert sum(len(v) for v in SUBJECT_GROUPS.values()) == 57
    assert subject_group("High School Physics") == "STEM"
    assert subject_group("cooking") is None


def _overlap(a, b):
    common = sum(len(set(x) & set(y)) for x, y in zip(a, b, strict=True))
    return common / min(sum(map(len, a)), sum(map(len, b)))


def test_rows_match_selections_recomputed_from_the_subsets(tmp_path):
    rng = np.random.default_rng(0)
    n = 24
    # a shared structure plus per-prompt noise, so overlaps are neither 0 nor 1
    a = (rng.standard_normal((1, 3, 40)) + 0.8 * rng.standard_normal((n, 3, 40))).astype(np.float32)
    subjects = ["college_physics", "philosophy", "sociology", "virology", "cooking", "anatomy"] * 4
    path = write_kva(tmp_path / "kva.h5", a, subjects=subjects)
    rows = stability_table(path, 10, seeds=(0, 1), q_list=(5, 20), chunk_size=5)
    full = select_nodes(a, 10)
    by_label = {r["label"]: r for r in rows}
    assert [r["kind"] for r in rows] == ["random_half"] * 2 + ["subject_group"] * 4 + ["q"] * 2

    for seed in (0, 1):
        half = np.sort(np.random.default_rng(seed).permutation(n)[: n // 2])
        row = by_label[f"half, seed {seed}"]
        assert row["samples"] == 12
        assert row["overlap"] == pytest.approx(_overlap(select_nodes(a[half], 10), full))
    stem = np.array([subject_group(s) == "STEM" for s in subjects])
    assert by_label["STEM"]["samples"] == 8  # college_physics and anatomy
    assert by_label["STEM"]["overlap"] == pytest.approx(_overlap(select_nodes(a[stem], 10), full))
    for q in (5, 20):
        sel = select_nodes(a, q)
        row = by_label[f"q={q}"]
        assert row["overlap"] == pytest.approx(_overlap(sel, full))
        assert row["selected"] == sum(map(len, sel))
    assert by_label["q=20"]["chance_overlap"] == pytest.approx(8 / 40)
    assert all(0 <= r["min_layer_overlap"] <= r["overlap"] <= 1 for r in rows)

    write_stability_csv(tmp_path / "s.csv", rows)
    back = read_stability_csv(tmp_path / "s.csv")
    assert [r["label"] for r in back] == [r["label"] for r in rows]
    assert back[0]["overlap"] == pytest.approx(rows[0]["overlap"], abs=1e-4)


def test_identical_prompts_give_full_overlap(tmp_path):
    a = np.repeat(np.random.default_rng(1).standard_normal((1, 2, 30)), 10, axis=0)
    path = write_kva(tmp_path / "kva.h5", a.astype(np.float32))
    rows = stability_table(path, 10, seeds=(0,))
    assert {r["label"]: r["overlap"] for r in rows} == {"half, seed 0": 1.0, "STEM": 1.0}


def test_stability_needs_the_subject_dataset(tmp_path):
    import h5py

    path = write_kva(tmp_path / "kva.h5", np.ones((4, 2, 10), dtype=np.float32))
    with h5py.File(path, "a") as fh:
        del fh["subject"]
    with pytest.raises(LokiInputError, match="missing per-sample dataset 'subject'"):
        stability_table(path, 10)


def test_selecting_never_imports_the_plotting_modules():
    """select computes, figures draws: select.stability drew its own figure (an import cycle)."""
    import ast

    import loki_pipeline.select

    for path in Path(loki_pipeline.select.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )  # fmt: skip
            assert not any(n.startswith("loki_pipeline.figures") for n in names), path.name


def test_stability_report_writes_the_table_and_draws_it(tmp_path):
    from loki_pipeline.figures.stability import stability_report

    a = np.random.default_rng(2).standard_normal((8, 2, 30)).astype(np.float32)
    path = write_kva(tmp_path / "kva.h5", a, subjects=["anatomy", "philosophy"] * 4)
    figures = [tmp_path / "s.png", tmp_path / "s.pdf"]
    rows = stability_report(path, 10, tmp_path / "s.csv", figures, seeds=(0,), q_list=(20,))
    assert rows == stability_table(path, 10, seeds=(0,), q_list=(20,))
    assert [r["label"] for r in read_stability_csv(tmp_path / "s.csv")] == [
        r["label"] for r in rows
    ]
    assert all(f.stat().st_size > 0 for f in figures)


def test_dataset_overlap_compares_the_loki_selections_of_two_prompt_sets(tmp_path):
    from loki_pipeline.select import select_nodes
    from loki_pipeline.select.stability import dataset_overlap

    rng = np.random.default_rng(3)
    full = rng.standard_normal((12, 3, 40)).astype(np.float32)
    subset = full[:5] + 0.3 * rng.standard_normal((5, 3, 40)).astype(np.float32)
    a = write_kva(tmp_path / "kva.h5", subset)
    b = write_kva(tmp_path / "full.h5", full)
    row = dataset_overlap(a, b, 20, label="hf:cais/mmlu")
    # oracle: the two selections made directly, and the share of nodes both pick
    ref, other = select_nodes(subset, 20), select_nodes(full, 20)
    common = sum(len(set(x) & set(y)) for x, y in zip(ref, other, strict=True))
    assert (row["kind"], row["label"], row["samples"]) == ("dataset", "hf:cais/mmlu", 12)
    assert row["common"] == common and row["overlap"] == pytest.approx(common / 24)
    assert 0 < row["overlap"] < 1 and row["chance_overlap"] == pytest.approx(8 / 40)
    assert dataset_overlap(a, a, 20)["overlap"] == 1.0
    with pytest.raises(LokiInputError, match="KVA of another model"):
        dataset_overlap(a, write_kva(tmp_path / "o.h5", full[:, :2]), 20)


def test_a_prompt_sets_own_subjects_are_its_subject_groups(tmp_path):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((1, 3, 40)) + rng.standard_normal((12, 3, 40))).astype(np.float32)
    subjects = ["geography", "science", "history"] * 4
    path = write_kva(tmp_path / "kva.h5", a, subjects=subjects, dataset_format="prompts")
    rows = [r for r in stability_table(path, 10, seeds=(0,)) if r["kind"] == "subject_group"]
    assert [r["label"] for r in rows] == ["geography", "science", "history"]
    full = select_nodes(a, 10)
    for row in rows:
        member = np.array([s == row["label"] for s in subjects])
        assert row["samples"] == 4
        assert row["overlap"] == pytest.approx(_overlap(select_nodes(a[member], 10), full))
    # one subject only (a file without subjects, an lm-eval task): no group is a part
    one = write_kva(tmp_path / "one.h5", a, subjects=["all"] * 12, dataset_format="prompts")
    assert [r["kind"] for r in stability_table(one, 10, seeds=(0,))] == ["random_half"]
    # the same subjects in an MMLU-format file are not MMLU's: left out, as before
    mmlu = write_kva(tmp_path / "mmlu.h5", a, subjects=subjects)
    assert [r["kind"] for r in stability_table(mmlu, 10, seeds=(0,))] == ["random_half"]
