"""Tables and the trade-off figure built from evaluation files laid out as the pipeline writes
them (general.json + lm_eval/results.json + lm_eval/samples_<task>.jsonl; task.json with items):
n and 95% bounds in every format, the learned flag with its marker, footnote and warning, and
error bars, hollow markers and non-overlapping labels on the figure."""

from __future__ import annotations

import csv
import json
import logging
from html.parser import HTMLParser

import pytest

from loki_pipeline.evaluate.general import DEFAULT_METRICS
from loki_pipeline.report.build import build_task_tables, build_tradeoff
from loki_pipeline.tasks.driver import bfcl_summary

TASKS = ("gsm8k", "winogrande")
CATEGORIES = ("simple_python", "live_simple")


def write_general(folder, per_task: dict[str, list[int]]):
    """general.json with lm-eval's results.json and samples files beside it (20 items each)."""
    lm = folder / "lm_eval"
    lm.mkdir(parents=True)
    scores = {t: sum(v) / len(v) for t, v in per_task.items()}
    results = {
        "results": {t: {DEFAULT_METRICS[t]: s} for t, s in scores.items()},
        "n-samples": {t: {"original": 500, "effective": len(v)} for t, v in per_task.items()},
    }
    (lm / "results.json").write_text(json.dumps(results))
    for task, values in per_task.items():
        metric, _, flt = DEFAULT_METRICS[task].partition(",")
        lines = [json.dumps({"doc_id": i, "filter": flt, metric: v}) for i, v in enumerate(values)]
        (lm / f"samples_{task}.jsonl").write_text("\n".join(lines) + "\n")
    path = folder / "general.json"
    metrics = {t: DEFAULT_METRICS[t] for t in per_task}
    path.write_text(json.dumps({"scores": scores, "metrics": metrics}))
    return path


def write_task(folder, correct_of, output_of=None):
    """task.json of a BFCL evaluation, 20 items per category, wrapped as run_task_eval writes."""
    output_of = output_of or (lambda c, i: f"[f(x={int(correct_of(c, i))})]")
    records = [
        {"id": f"{c}_{i}", "category": c, "output": output_of(c, i),
         "correct": bool(correct_of(c, i))}
        for c in CATEGORIES
        for i in range(20)
    ]  # fmt: skip
    metrics, counts = bfcl_summary(records)
    summary = {"task": "toolace", "primary_metric": "overall", "metrics": metrics,
               "counts": counts, "items": records}  # fmt: skip
    path = folder / "task.json"
    path.write_text(json.dumps({"tasks": {"toolace": summary}}))
    return path


@pytest.fixture
def evals(tmp_path):
    base_items = {t: [1, 0] * 10 for t in TASKS}  # 10/20
    general, task = {}, {}
    for run, per_task, correct in (
        ("base", base_items, lambda c, i: i % 4 == 0),
        ("toolace-lora_r16", {t: [1, 0, 0, 0] * 5 for t in TASKS}, lambda c, i: i % 4 == 0),
        ("toolace-loki_q10", base_items, lambda c, i: i % 5 != 0),
    ):
        folder = tmp_path / "eval" / run
        general[run] = write_general(folder, per_task)
        task[run] = write_task(folder, correct)
    return general, task


def test_tables_carry_n_bounds_and_the_learned_flag(evals, tmp_path, caplog):
    general, task = evals
    out = tmp_path / "tables"
    with caplog.at_level(logging.WARNING):
        build_task_tables("toolace", general, task, {}, out, caption_model="tiny")
    # forgetting: CSV columns for n and bounds, Markdown/LaTeX cells with bounds, n in header
    rows = {r["run"]: r for r in csv.DictReader((out / "forgetting.csv").open())}
    lora = rows["toolace-lora_r16"]
    assert lora["GSM8K_n"] == "20" and float(lora["GSM8K"]) == pytest.approx(25.0)
    assert float(lora["GSM8K_lo"]) == pytest.approx(11.19, abs=0.01)  # Wilson 5/20
    assert float(lora["GSM8K_hi"]) == pytest.approx(46.87, abs=0.01)
    assert float(lora["Avg"]) == pytest.approx(50.0) and lora["Avg_n"] == "40"
    assert 0 < float(lora["Avg_lo"]) < 50 < float(lora["Avg_hi"])
    same = rows["toolace-loki_q10"]
    assert float(same["Avg"]) == 0 and float(same["Avg_lo"]) == float(same["Avg_hi"]) == 0
    md = (out / "forgetting.md").read_text()
    assert "| GSM8K (n=20) |" in md and "| 25.0 [11.2, 46.9] |" in md
    assert "Wilson" in md and "Within noise" in md and "toolace-loki_q10" in md.split("\n\n")[-1]
    tex = (out / "forgetting.tex").read_text()
    assert "GSM8K (n=20)" in tex and "25.0 [11.2, 46.9]" in tex and r"\footnotesize" in tex
    # task: learned column, marker and footnote; the warning names the run
    t_rows = {r["run"]: r for r in csv.DictReader((out / "task.csv").open())}
    assert t_rows["toolace-lora_r16"]["learned"] == "no"
    assert t_rows["toolace-loki_q10"]["learned"] == "yes" and t_rows["base"]["learned"] == ""
    assert t_rows["toolace-lora_r16"]["overall_n"] == "40"
    assert float(t_rows["toolace-loki_q10"]["Δoverall vs base_lo"]) > 0
    assert t_rows["toolace-lora_r16"]["Δoverall vs base_hi"] == "0.0"
    task_md = (out / "task.md").read_text()
    assert "| toolace-lora_r16 † |" in task_md and "| toolace-loki_q10 |" in task_md
    assert "† learned = no" in task_md and "overall (n=40)" in task_md
    assert r"toolace-lora\_r16 $^\dagger$" in (out / "task.tex").read_text()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("toolace-lora_r16" in m and "no learning" in m for m in warned)
    assert not any("toolace-loki_q10" in m for m in warned)


def test_tradeoff_figure_renders_with_error_bars_and_hollow_non_learners(evals, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.container import ErrorbarContainer

    general, task = evals
    path = build_tradeoff("toolace", general, task, tmp_path / "tradeoff.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    import matplotlib.pyplot as plt

    from loki_pipeline.figures.tradeoff import draw_tradeoff

    fig, ax = plt.subplots()
    draw_tradeoff(
        ax,
        {"base": (0.0, 25.0), "toolace-lora_r16": (50.0, 25.0)},
        task="toolace",
        score_label="s",
        intervals={"base": (None, (12.0, 40.0)), "toolace-lora_r16": ((30.0, 70.0), (12.0, 40.0))},
        no_learning=["toolace-lora_r16"],
    )
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2 and bars[1].has_xerr and bars[1].has_yerr
    assert bars[1].lines[0].get_markerfacecolor() == "white"  # hollow: no learning
    plt.close(fig)


def test_tradeoff_labels_do_not_overlap_when_points_crowd():
    points = {f"toolace-method_{i}": (1.0 + 0.05 * i, 30.0 + 0.1 * (i % 3)) for i in range(6)}
    points["base"] = (0.0, 10.0)
    _assert_nothing_overlaps(points, {}, {})


def test_the_legend_covers_no_suppression_label_and_no_point_label():
    """The default's clean-clone run: "best" put the legend inside the axes, over the label of
    the S-H line at the bottom right."""
    points = {"base": (0.0, 25.0), "toolace-loki_q10": (41.07, 37.5),
              "toolace-lora_r16": (70.24, 39.6)}  # fmt: skip
    bars = {"base": (None, (12.2, 44.5)), "toolace-loki_q10": (None, (28.9, 46.9)),
            "toolace-lora_r16": (None, (34.3, 45.1))}  # fmt: skip
    vlines = {"suppress-layer_balanced_low_q1": 25.6, "suppress-layer_balanced_high_q1": 67.26}
    _assert_nothing_overlaps(points, bars, vlines)


def _assert_nothing_overlaps(points, bars, vlines):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from loki_pipeline.figures.tradeoff import draw_tradeoff, place_labels

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    draw_tradeoff(ax, points, task="toolace", score_label="s", vlines=vlines, intervals=bars)
    fig.tight_layout()
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    labels = place_labels(ax, list(points.values()), list(points))
    renderer = fig.canvas.get_renderer()
    texts = [t for t in ax.texts if t not in labels]  # the suppression lines' labels
    assert len(texts) == len(vlines)
    boxes = [t.get_window_extent(renderer) for t in [*labels, *texts]]
    boxes.append(ax.get_legend().get_window_extent(renderer))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)
    plt.close(fig)


def test_forgetting_notes_say_why_an_avg_has_no_interval():
    from loki_pipeline.report.build import forgetting_notes
    from loki_pipeline.report.tables import forgetting_columns

    columns = forgetting_columns(["triviaqa"])
    rows = [
        {"run": "base", "triviaqa": 5.0, "triviaqa_n": 20, "Avg": None},
        {"run": "toolace-loki_q10", "triviaqa": 5.0, "triviaqa_n": 20, "Avg": 2.78},
        {"run": "toolace-lora_r16", "triviaqa": 5.0, "triviaqa_n": 20, "Avg": 1.0,
         "Avg_lo": -3.0, "Avg_hi": 4.0},
    ]  # fmt: skip
    notes = forgetting_notes(rows, columns)
    undefined = [n for n in notes if n.startswith("Avg without an interval")]
    assert len(undefined) == 1 and undefined[0].endswith(": toolace-loki_q10.")


def test_an_external_run_that_is_the_base_itself_has_avg_0_and_is_marked(evals, tmp_path):
    general, task = evals
    # a released model whose checkpoint is the base: the same scores item for item
    folder = tmp_path / "eval" / "released-x"
    general["released-x"] = write_general(folder, {t: [1, 0] * 10 for t in TASKS})
    task["released-x"] = write_task(folder, lambda c, i: i % 4 == 0)
    out = tmp_path / "tables"
    build_task_tables(
        "toolace", general, task, {}, out, reference="released-x",
        external={"released-x": "hf:org/released"},
    )  # fmt: skip
    rows = {r["run"]: r for r in csv.DictReader((out / "forgetting.csv").open())}
    assert float(rows["released-x"]["Avg"]) == 0 and rows["released-x"]["external"] == (
        "hf:org/released"
    )
    assert rows["toolace-loki_q10"]["external"] == ""
    md = (out / "forgetting.md").read_text()
    assert "| released-x ‡ |" in md and "‡ external: a released model" in md
    assert r"released-x $^\ddagger$" in (out / "forgetting.tex").read_text()
    t_rows = {r["run"]: r for r in csv.DictReader((out / "task.csv").open())}
    # the task table is relative to the named row: 0 for itself, 0 for base (same items)
    assert float(t_rows["released-x"]["Δoverall vs released-x (%)"]) == 0
    assert float(t_rows["base"]["Δoverall vs released-x (%)"]) == 0
    assert float(t_rows["toolace-loki_q10"]["Δoverall vs released-x (%)"]) > 0
    assert "| released-x † ‡ |" in (out / "task.md").read_text()  # no learning, external


def test_an_external_run_is_its_own_family_in_the_tradeoff_figure(evals, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from loki_pipeline.figures.tradeoff import FAMILY_COLOURS, draw_tradeoff

    general, task = evals
    folder = tmp_path / "eval" / "released-x"
    general["released-x"] = write_general(folder, {t: [1, 0] * 10 for t in TASKS})
    task["released-x"] = write_task(folder, lambda c, i: i % 4 == 0)
    assert build_tradeoff("toolace", general, task, tmp_path / "t.png").is_file()
    fig, ax = plt.subplots()
    draw_tradeoff(ax, {"base": (0.0, 25.0), "released-x": (0.0, 25.0)}, task="toolace",
                  score_label="s")  # fmt: skip
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert legend == {"base", "external"}
    assert ax.containers[1].lines[0].get_color() == FAMILY_COLOURS["external"]
    plt.close(fig)


def test_the_tables_script_puts_external_runs_after_the_training_runs(evals, tmp_path):
    # the rule's inputs: general/task per run (base, training runs, external runs), params
    # only for the training runs; the script pairs them by the rule's params
    from test_settings_stages import Named, run_script

    general, task = evals
    folder = tmp_path / "eval" / "released-x"
    general["released-x"] = write_general(folder, {t: [1, 0] * 10 for t in TASKS})
    task["released-x"] = write_task(folder, lambda c, i: i % 4 == 0)
    runs = ["base", "toolace-lora_r16", "toolace-loki_q10", "released-x"]
    params = []
    for run, count in (("toolace-lora_r16", 42), ("toolace-loki_q10", 188)):
        path = tmp_path / f"{run}.json"
        path.write_text(json.dumps({"trainable_params": count}))
        params.append(str(path))
    out = tmp_path / "tables"
    run_script(
        "tables", tmp_path,
        input=Named(general=[str(general[r]) for r in runs], task=[str(task[r]) for r in runs],
                    params=params),
        output=Named(forgetting=str(out / "forgetting.csv")),
        params=Named(runs=runs, trained=["toolace-lora_r16", "toolace-loki_q10"],
                     external={"released-x": "hf:org/released"}, reference="released-x"),
        wildcards=Named(model="tiny", task="toolace"),
    )  # fmt: skip
    rows = {r["run"]: r for r in csv.DictReader((out / "forgetting.csv").open())}
    assert rows["toolace-loki_q10"]["#params"] == "188" and rows["released-x"]["#params"] == ""
    assert float(rows["released-x"]["Avg"]) == 0 and rows["released-x"]["external"]
    assert "Δoverall vs released-x (%)" in (out / "task.csv").read_text()


class _Cells(HTMLParser):
    """Texts of the <th>/<td> cells and <p> notes of an HTML page, and any <script> tag."""

    def __init__(self):
        super().__init__()
        self.rows, self.notes, self.scripts, self._tag = [], [], 0, None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th", "p"):
            self._tag = tag
            (self.notes.append("") if tag == "p" else self.rows[-1].append(""))
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th", "p"):
            self._tag = None

    def handle_data(self, data):
        if self._tag == "p":
            self.notes[-1] += data
        elif self._tag:
            self.rows[-1][-1] += data


def _markdown_cells(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|") and not ln.startswith("|---")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_tables_have_a_standalone_html_page_with_every_cell_and_note(evals, tmp_path):
    """The report shows tables as HTML (a CSV is only a download there): the page holds the
    same header, cells and notes as the Markdown table, escaped, with no script."""
    general, task = evals
    out = tmp_path / "tables"
    written = build_task_tables("toolace", general, task, {}, out, caption_model="m<1>")
    for stem in ("forgetting", "task"):
        page = out / f"{stem}.html"
        assert page in written
        text = page.read_text()
        parsed = _Cells()
        parsed.feed(text)
        md = (out / f"{stem}.md").read_text()
        assert parsed.rows == _markdown_cells(md)
        assert parsed.notes and parsed.notes == [n.strip() for n in md.split("\n\n")[1:]]
        assert parsed.scripts == 0 and "m&lt;1&gt;" in text and "m<1>" not in text
