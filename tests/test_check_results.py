"""Quoted numbers stay honest (issue 25 §3): a snapshot of a run's tables, the comparison of a
fresh run with it (every differing cell), and the check of every number README.md and docs/*.md
quote against it, on a small synthetic snapshot; and the repository's own documents."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from loki_pipeline.report.check_results import (
    SNAPSHOTS,
    check_quotes,
    compare_tables,
    config_fingerprint,
    default_documents,
    main,
    stale_snapshots,
    update_snapshot,
)
from loki_pipeline.report.comparison import comparison_columns
from loki_pipeline.report.tables import write_table

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TASK_COLUMNS = [("run", "run", ""), ("overall", "overall", "ci"), ("learned", "learned", "")]


def write_run(results: Path, loki: float = 37.5, lora: float = 39.58) -> Path:
    folder = results / "tables" / "m" / "toolace"
    rows = [
        {"run": "base", "overall": 25.0, "overall_n": 24, "overall_lo": 12.2, "overall_hi": 44.5},
        {"run": "toolace-loki_q10", "overall": loki, "overall_n": 24, "overall_lo": 28.94,
         "overall_hi": 46.9, "learned": "yes"},
        {"run": "toolace-lora_r16", "overall": lora, "overall_n": 24, "learned": "yes"},
    ]  # fmt: skip
    write_table(rows, TASK_COLUMNS, folder / "task")
    verdicts = [{"run_a": "toolace-loki_q10", "run_b": "toolace-lora_r16", "metric": "Avg",
                 "delta": -29.06, "lo": -50.2, "hi": -8.0, "verdict": "a is better"}]  # fmt: skip
    write_table(verdicts, comparison_columns(), folder / "comparison")
    return results


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository root with the shipped configs and a filled snapshot ``default`` (two extra
    seeds)."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    run = write_run(tmp_path / "results")
    seeds = {
        "1": write_run(tmp_path / "seed1", loki=33.3),
        "2": write_run(tmp_path / "seed2", 41.7),
    }
    update_snapshot(run, tmp_path / SNAPSHOTS / "default", config="config/config.yaml",
                    command="snakemake --cores 1 all", seeds=seeds, commit=COMMIT, dirty=False)  # fmt: skip
    return tmp_path


def doc(root: Path, body: str, *, commit: bool = True) -> Path:
    path = root / "docs" / "results.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text(("Run at commit 0123456.\n\n" if commit else "") + body)
    return path


def q(row: str, column: str, text: str, table: str = "m/toolace/task.csv", agg: str = "") -> str:
    return f"<!-- result default {table} {row} {column} {agg}-->{text}<!-- /result -->"


def test_update_copies_every_table_and_records_where_it_came_from(repo):
    snap = repo / SNAPSHOTS / "default"
    meta = json.loads((snap / "snapshot.json").read_text())
    assert meta.pop("config_fingerprint") == config_fingerprint(ROOT / "config" / "config.yaml")
    assert meta == {"config": "config/config.yaml", "command": "snakemake --cores 1 all",
                    "commit": COMMIT, "dirty": False, "seeds": ["1", "2"]}  # fmt: skip
    assert (snap / "tables" / "m" / "toolace" / "task.csv").is_file()
    assert (snap / "seeds" / "2" / "tables" / "m" / "toolace" / "comparison.csv").is_file()


def test_a_fresh_run_equal_to_the_snapshot_has_no_difference(repo):
    assert compare_tables(repo / "results", repo / SNAPSHOTS / "default") == []


def test_compare_reports_every_differing_cell_row_and_table(repo, tmp_path):
    fresh = write_run(tmp_path / "fresh", loki=37.6, lora=40.0)
    (fresh / "tables" / "m" / "toolace" / "comparison.csv").unlink()
    extra = fresh / "tables" / "m" / "other" / "task.csv"
    extra.parent.mkdir(parents=True)
    extra.write_text("run,overall\nbase,1\n")
    diffs = compare_tables(fresh, repo / SNAPSHOTS / "default")
    assert "m/toolace/comparison.csv: in the snapshot, not in the run" in diffs
    assert "m/other/task.csv: in the run, not in the snapshot" in diffs
    assert "m/toolace/task.csv [toolace-loki_q10, overall]: snapshot '37.5', run '37.6'" in diffs
    assert "m/toolace/task.csv [toolace-lora_r16, overall]: snapshot '39.58', run '40.0'" in diffs
    assert len(diffs) == 4


def test_quotes_equal_to_the_snapshot_pass(repo):
    body = (
        "| run | overall |\n|---|---:|\n"
        f"| loki | {q('toolace-loki_q10', 'overall', '37.5 [28.9, 46.9] (n=24)')} |\n"
        f"| lora | {q('toolace-lora_r16', 'overall', '39.6')} |\n"
        "LoKI against LoRA: "
        + q("toolace-loki_q10|toolace-lora_r16|Avg", "delta", "−29.1 [−50.2, −8.0]",
            table="m/toolace/comparison.csv")
        + ", over seeds " + q("toolace-loki_q10", "overall", "33.3", agg="min ")
        + "–" + q("toolace-loki_q10", "overall", "41.7", agg="max ") + ".\n"
    )  # fmt: skip
    assert check_quotes([doc(repo, body)], repo) == []


@pytest.mark.parametrize(
    ("quote", "expected"),
    [
        (q("toolace-loki_q10", "overall", "37.4"), "quoted 37.4, the snapshot has 37.5"),
        (q("toolace-loki_q10", "overall", "37.5 [28.8, 46.9]"), "overall_lo]: quoted 28.8"),
        (q("toolace-loki_q10", "overall", "37.5 (n=25)"), "overall_n]: quoted 25"),
        (q("toolace-loki_q10", "overall", "40.0", agg="max "), "max: quoted 40.0"),
        (q("toolace-full", "overall", "1.0"), "no row 'toolace-full'"),
        (q("base", "overall", "25.0", table="m/reranker/task.csv"), "no table"),
        (q("base", "overall", "text"), "no number inside the marker"),
        (q("toolace-lora_r16", "overall", "39.6 [1.0, 2.0]"), "overall_lo]: '' is not a number"),
    ],
)
def test_a_quote_that_is_not_the_snapshots_cell_fails(repo, quote, expected):
    problems = check_quotes([doc(repo, f"x {quote} y\n")], repo)
    assert problems and expected in problems[0], problems
    assert all(p.startswith(f"{repo / 'docs' / 'results.md'}:3:") for p in problems)


def test_a_document_must_name_the_commit_of_the_snapshot_it_quotes(repo):
    path = doc(repo, q("toolace-loki_q10", "overall", "37.5"), commit=False)
    (problem,) = check_quotes([path], repo)
    assert "does not name its commit 0123456" in problem


def test_a_quote_of_a_missing_snapshot_fails_until_it_is_filled(tmp_path):
    path = doc(tmp_path, q("base", "overall", "25.0"))
    (problem,) = check_quotes([path], tmp_path)
    assert "no snapshot" in problem and "update" in problem


def test_cli_update_compare_and_quotes_exit_codes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("models: {}\n")
    write_run(tmp_path / "results")
    snap = str(tmp_path / SNAPSHOTS / "default")
    assert main(["update", "--snapshot", snap, "--config", "c.yaml", "--command", "x"]) == 0
    assert json.loads((Path(snap) / "snapshot.json").read_text())["command"] == "x"
    assert main(["compare", "--snapshot", snap]) == 0
    write_run(tmp_path / "results", loki=12.0)
    assert main(["compare", "--snapshot", snap]) == 1
    assert "snapshot '37.5', run '12.0'" in capsys.readouterr().out
    assert main(["update", "--results", "nowhere", "--snapshot", snap, "--config", "c.yaml",
                 "--command", "x"]) == 2  # fmt: skip
    capsys.readouterr()
    # not a git checkout: no commit, so not known to be clean
    assert json.loads((Path(snap) / "snapshot.json").read_text())["dirty"] is None
    assert main(["quotes"]) == 1 and "not known to be clean" in capsys.readouterr().out
    (tmp_path / "c.yaml").write_text("models: {m: {}}\n")
    assert main(["quotes"]) == 1
    assert "c.yaml (with what it extends) changed" in capsys.readouterr().out


def test_a_change_to_the_config_a_snapshot_extends_makes_it_stale(repo):
    """The worked example's numbers went stale when the default it extends changed: its
    snapshot's fingerprint covers what it extends."""
    update_snapshot(repo / "results", repo / SNAPSHOTS / "example_task",
                    config="config/example_task.yaml", command="x", commit=COMMIT, dirty=False)  # fmt: skip
    assert stale_snapshots(repo) == []
    default = repo / "config" / "config.yaml"
    default.write_text(default.read_text() + "\n# a comment changes nothing\n")
    assert stale_snapshots(repo) == []
    default.write_text(default.read_text().replace("seed: 42", "seed: 43"))
    stale = stale_snapshots(repo)
    assert len(stale) == 2 and all("rerun `" in p for p in stale)
    update_snapshot(repo / "results", repo / SNAPSHOTS / "default", config="config/config.yaml",
                    command="x", commit=COMMIT, dirty=True)  # fmt: skip
    assert any("uncommitted changes" in p for p in stale_snapshots(repo))
    assert any("config/example_task.yaml (with what it extends) changed" in p for p in stale)


def test_every_number_the_repository_documents_quote_is_its_snapshots():
    """README.md and docs/*.md: every marked number equals the committed snapshot's cell, each
    document names the commit the snapshot was made at, and no snapshot's config has changed
    since its run (docs/results.md, "Quoted results, and how they stay true")."""
    assert stale_snapshots(ROOT) == []
    assert check_quotes(default_documents(ROOT), ROOT) == []


def test_a_marker_shown_as_code_is_an_example_not_a_quote(repo):
    wrong = q("toolace-loki_q10", "overall", "99.9")
    body = f"`{wrong}`\n\n  ```\n  {wrong}\n  ```\n\n-   an item\n\n    {wrong}\n"
    (problem,) = check_quotes([doc(repo, body)], repo)
    # only the one outside code: an indented line is a list item's text, checked
    assert ":11: " in problem and "quoted 99.9" in problem


def test_update_records_the_checked_out_commit_and_whether_tracked_files_changed(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x")
    (tmp_path / "README.md").write_text("r\n")
    git("add", "README.md")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "readme")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    write_run(tmp_path / "results")
    (tmp_path / "c").write_text("{}\n")
    snap = tmp_path / SNAPSHOTS / "default"

    def meta():
        cwd = Path.cwd()
        os.chdir(tmp_path)
        try:
            update_snapshot(Path("results"), snap, config="c", command="x")
        finally:
            os.chdir(cwd)
        return json.loads((snap / "snapshot.json").read_text())

    assert (meta()["commit"], meta()["dirty"]) == (head, False)
    git("add", "docs")  # a committed snapshot refilled does not count as a change
    assert meta()["dirty"] is False
    (tmp_path / "README.md").write_text("changed\n")
    assert meta()["dirty"] is True


def test_a_column_named_with_spaces_is_quoted_in_double_quotes(repo):
    table = repo / SNAPSHOTS / "default" / "tables" / "m" / "toolace" / "forgetting.csv"
    table.write_text(
        "run,Avg drop (points),Avg drop (points)_lo,Avg drop (points)_hi\n"
        "toolace-loki_q10,7.916,-1.25,17.916\n"
    )
    column, where = '"Avg drop (points)"', "m/toolace/forgetting.csv"
    right = q("toolace-loki_q10", column, "7.9 [-1.2, 17.9]", table=where)
    assert check_quotes([doc(repo, right)], repo) == []
    wrong = q("toolace-loki_q10", column, "8.9 [-1.2, 17.9]", table=where)
    (problem,) = check_quotes([doc(repo, wrong)], repo)
    assert "quoted 8.9" in problem
