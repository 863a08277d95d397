"""Figures: binned densities against a direct loop; every figure lands as PNG and PDF."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_select import write_kva

from loki_pipeline.figures import heatmap_density, plot_global_layer_counts, plot_stability
from loki_pipeline.figures.heatmap import draw_kva_heatmap
from loki_pipeline.figures.layer_counts import draw_global_layer_counts
from loki_pipeline.figures.tradeoff import point_label, run_family
from loki_pipeline.runs import parse_run
from loki_pipeline.select import save_selection, select_nodes


def test_heatmap_density_is_the_mean_pick_rate_per_bin():
    counts = np.random.default_rng(0).integers(0, 9, size=(3, 10))
    density = heatmap_density(counts, num_samples=8, bins=4)  # bins of 3, 3, 3, 1 nodes
    assert density.shape == (4, 3)
    for layer in range(3):
        for b, (lo, hi) in enumerate([(0, 3), (3, 6), (6, 9), (9, 10)]):
            assert density[b, layer] == pytest.approx(counts[layer, lo:hi].mean() / 8)


def _is_png_and_pdf(stem):
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    return png


def test_kva_heatmap_is_drawn_from_a_kva_file(tmp_path):
    from matplotlib.image import imread

    a = np.random.default_rng(1).standard_normal((6, 5, 40)).astype(np.float32)
    kva = write_kva(tmp_path / "kva.h5", a)
    stem = tmp_path / "fig" / "kva_heatmap_q10"
    draw_kva_heatmap(kva, 10, [stem.with_suffix(".png"), stem.with_suffix(".pdf")], bins=8)
    height, width = imread(_is_png_and_pdf(stem)).shape[:2]
    assert width > 1000 and height > 800  # 7 in wide at 200 dpi: paper size
    assert not list((tmp_path / "fig").glob(".*tmp"))  # atomic writes leave no temporaries


def test_global_layer_counts_and_stability_figures(tmp_path):
    a = np.random.default_rng(2).standard_normal((6, 4, 20)).astype(np.float32)
    a[:, 2] *= 5  # layer 2 holds the extremes, so the global strategies favour it
    paths = {}
    for strategy in ("global_high", "global_low"):
        paths[strategy] = tmp_path / f"{strategy}_q10.json"
        save_selection(paths[strategy], select_nodes(a, 10, strategy), model="tiny",
                       strategy=strategy, q=10, num_layers=4, nodes_per_layer=20)  # fmt: skip
    assert json.loads(paths["global_high"].read_text())["positions"][2]  # layer 2 is favoured
    stem = tmp_path / "global_layer_counts_q10"
    draw_global_layer_counts(paths["global_high"], paths["global_low"],
                             [stem.with_suffix(".png"), stem.with_suffix(".pdf")])  # fmt: skip
    _is_png_and_pdf(stem)

    rows = [
        dict(kind="random_half", label="half, seed 0", samples=3, overlap=0.9, chance_overlap=0.1,
             reference_q=10),
        dict(kind="q", label="q=5", samples=6, overlap=0.7, chance_overlap=0.1, reference_q=10),
    ]  # fmt: skip
    stem = tmp_path / "stability"
    plot_stability(rows, model="tiny", paths=[stem.with_suffix(".png"), stem.with_suffix(".pdf")])
    _is_png_and_pdf(stem)
    plot_global_layer_counts([[1]] * 4, [[2]] * 4, model="m", q=5, nodes_per_layer=20,
                             paths=[tmp_path / "x.png"])  # fmt: skip
    assert (tmp_path / "x.png").stat().st_size > 0


@pytest.mark.parametrize(
    "run,family",
    [
        ("base", "base"),
        ("toolace-loki_q10", "loki"),
        ("toolace-loki_lora_q30_r32", "loki"),
        ("toolace-loki_layer_balanced_low_q10", "loki"),
        ("toolace-loki_global_high_q10", "ablation"),
        ("toolace-loki_layer_balanced_high_lora_q10_r4", "ablation"),
        ("suppress-layer_balanced_high_q1", "suppress"),
        ("toolace-lora_r16", "baseline"),
        ("toolace-full", "baseline"),
        ("global-model-v2", "external"),  # no substring guess: 'global' is not an ablation
    ],
)
def test_tradeoff_families_come_from_the_parsed_run_name(run, family):
    assert run_family(parse_run(run, ["toolace"])) == family


def test_tradeoff_labels_a_hyphenated_tasks_run_by_its_method():
    run = parse_run("my-task-loki_q10", ["my-task"])
    assert point_label(run, ["my-task-loki_q10"]) == "loki_q10 (no learning)"
    assert point_label(parse_run("base", ["my-task"]), []) == "base"


def test_kva_figures_name_the_attributed_set_in_their_titles(tmp_path, monkeypatch):
    import loki_pipeline.figures.common as common
    from loki_pipeline.figures.stability import stability_report

    titles = []

    def keep_titles(fig, paths):
        titles.append(" | ".join(
            t.get_text() for t in [fig._suptitle, *(ax.title for ax in fig.axes)] if t
        ))  # fmt: skip

    monkeypatch.setattr(common, "save_figure", keep_titles)
    a = np.random.default_rng(4).standard_normal((6, 4, 20)).astype(np.float32)
    mmlu = write_kva(tmp_path / "mmlu.h5", a)  # written before the format was recorded
    own = write_kva(tmp_path / "own.h5", a, subjects=["geo", "sci"] * 3,
                    dataset="data/example_task/protect.jsonl", dataset_format="prompts")  # fmt: skip
    for kva in (mmlu, own):
        draw_kva_heatmap(kva, 10, [tmp_path / "h.png"], bins=4)
        stability_report(kva, 10, tmp_path / "s.csv", [tmp_path / "s.png"], seeds=(0,))
        sel = {}
        for strategy in ("global_high", "global_low"):
            sel[strategy] = tmp_path / f"{strategy}.json"
            save_selection(sel[strategy], select_nodes(a, 10, strategy), model="tiny",
                           strategy=strategy, q=10, num_layers=4, nodes_per_layer=20)  # fmt: skip
        draw_global_layer_counts(sel["global_high"], sel["global_low"], [tmp_path / "g.png"],
                                 kva_path=kva)  # fmt: skip
    assert len(titles) == 6
    assert all("MMLU (6 prompts)" in t for t in titles[:3])
    assert all("data/example_task/protect.jsonl (prompts, 6)" in t for t in titles[3:])


def test_the_heatmap_and_its_report_caption_say_the_panels_likeness_is_the_finding(
    tmp_path, monkeypatch
):
    """A newcomer sees two similar panels: the figure and the report's caption say that their
    likeness is the paper's finding and what to compare."""
    from loki_pipeline.figures import common

    drawn = []
    monkeypatch.setattr(common, "save_figure", lambda fig, paths: drawn.append(fig))
    a = np.random.default_rng(3).standard_normal((4, 3, 16)).astype(np.float32)
    draw_kva_heatmap(write_kva(tmp_path / "kva.h5", a), 10, [tmp_path / "h.png"], bins=4)
    texts = " ".join(t.get_text() for t in drawn[0].texts).replace("\n", " ")
    caption = (Path(__file__).resolve().parents[1] / "workflow" / "report"
               / "select_heatmap.rst").read_text().replace("\n", " ")  # fmt: skip
    for text in (texts, caption):
        assert "finding" in text and "same layers" in text
        assert "Compare the columns (layers)" in text

