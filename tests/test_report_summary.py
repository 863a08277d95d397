"""The end-of-run summary (``report.summary.summarize``, printed by ``onsuccess:``): each table's
files and, per run, Avg and the primary task score with n and 95% interval, read from table
CSVs written by ``write_table`` (the format the pipeline writes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from loki_pipeline.report.summary import summarize
from loki_pipeline.report.tables import write_table

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))

FORGETTING = [
    {"run": "base", "Avg": None},
    {"run": "toolace-loki_q10", "Avg": 2.5, "Avg_n": 86, "Avg_lo": -1.25, "Avg_hi": 6.75},
    {"run": "toolace-lora_r16", "Avg": 12.5, "Avg_n": 86},  # no interval (base 0 too often)
]
TASK = [
    {"run": "base", "overall": 37.5, "overall_n": 12, "overall_lo": 16.5, "overall_hi": 64.56,
     "live": 50.0, "live_n": 4, "live_lo": 15.0, "live_hi": 85.0},
    {"run": "toolace-loki_q10", "overall": 62.5, "overall_n": 12, "overall_lo": 35.44,
     "overall_hi": 83.5, "live": 75.0, "live_n": 4, "live_lo": 30.1, "live_hi": 95.4,
     "learned": "yes"},
    {"run": "toolace-lora_r16", "overall": 18.75, "overall_n": 12, "overall_lo": 11.63,
     "overall_hi": 28.8, "live": 0.0, "live_n": 4, "live_lo": 0.0, "live_hi": 49.0,
     "learned": "no"},
]  # fmt: skip


def write_tables(root: Path) -> list[Path]:
    folder = root / "results" / "tables" / "m" / "toolace"
    folder.mkdir(parents=True)
    written = write_table(FORGETTING, [("run", "run", ""), ("Avg", "Avg", "ci")],
                          folder / "forgetting")  # fmt: skip
    written += write_table(TASK, [("run", "run", ""), ("overall", "overall", "ci"),
                                  ("live", "live", "ci"), ("learned", "learned", "")],
                           folder / "task")  # fmt: skip
    return written


def _line(text: str, run: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.split() and ln.split()[0] == run]
    return " ".join(line.split())


def test_summary_names_tables_and_gives_avg_and_primary_score_per_run(tmp_path):
    written = write_tables(tmp_path)
    text = summarize([*written, tmp_path / "missing" / "forgetting.csv", tmp_path / "x.png"])
    folder = tmp_path / "results" / "tables" / "m" / "toolace"
    assert f"{folder}/forgetting.{{csv,md,tex,html}}" in text
    assert f"{folder}/task.{{csv,md,tex,html}}" in text
    assert "overall %" in text and "live %" not in text  # the primary metric only
    assert _line(text, "base") == "base – 37.5 [16.5, 64.6] n=12"
    assert _line(text, "toolace-loki_q10") == (
        "toolace-loki_q10 2.5 [-1.2, 6.8] n=86 62.5 [35.4, 83.5] n=12"
    )
    assert _line(text, "toolace-lora_r16") == (
        "toolace-lora_r16 12.50 (no interval) n=86 18.8 [11.6, 28.8] n=12 "
        "† no learning beyond noise"
    )


def test_summary_is_empty_without_tables(tmp_path):
    assert summarize([tmp_path / "results" / "tables" / "m" / "t" / "forgetting.csv"]) == ""


def test_onsuccess_prints_the_summary_of_the_configs_tables(tmp_path):
    """The real report rules' ``print_summary`` at the end of a run, over the default config's
    table targets (a stand-in job runs, so onsuccess fires; no pipeline job is run)."""
    assert "onsuccess:\n    print_summary()" in (ROOT / "Snakefile").read_text()
    folder = tmp_path / "results" / "tables" / "smollm2-135m"
    write_tables(tmp_path)
    (tmp_path / "results" / "tables" / "m").rename(folder)
    (tmp_path / "Snakefile").write_text(
        f'configfile: "{ROOT}/config/config.yaml"\n'
        f'include: "{ROOT}/workflow/rules/common.smk"\n'
        f'include: "{ROOT}/workflow/rules/report.smk"\n'
        'rule stamp:\n    output: "stamp"\n    shell: "touch {output}"\n'
        "onsuccess:\n    print_summary()\n"
    )
    src = str(ROOT / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}  # fmt: skip
    proc = subprocess.run([SNAKEMAKE, "--cores", "1", "stamp"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "results/tables/smollm2-135m/toolace/task.{csv,md,tex,html}" in out
    assert "toolace-loki_q10  2.5 [-1.2, 6.8] n=86" in out


def test_summary_prints_avg_drop_and_the_comparison_verdicts(tmp_path):
    from loki_pipeline.report.comparison import comparison_columns
    from loki_pipeline.report.tables import forgetting_columns

    folder = tmp_path / "results" / "tables" / "m" / "toolace"
    folder.mkdir(parents=True)
    rows = [
        {"run": "base"},
        {"run": "toolace-loki_q10", "Avg": 2.5, "Avg_drop": 1.0, "Avg_drop_n": 86,
         "Avg_drop_lo": -2.0, "Avg_drop_hi": 4.0},
    ]  # fmt: skip
    written = write_table(rows, forgetting_columns([]), folder / "forgetting")
    verdicts = [
        {"run_a": "toolace-loki_q10", "run_b": "toolace-lora_r16", "metric": "Avg",
         "delta": -29.06, "lo": -50.2, "hi": -8.0, "verdict": "a is better"},
        {"run_a": "toolace-loki_q10", "run_b": "toolace-lora_r16", "metric": "overall",
         "delta": 2.0, "lo": None, "hi": None, "verdict": "within noise"},
    ]  # fmt: skip
    written += write_table(verdicts, comparison_columns(), folder / "comparison")
    text = summarize(written)
    assert f"{folder}/comparison.{{csv,md,tex,html}}" in text
    assert "Avg drop (points)" in text
    lines = [" ".join(ln.split()) for ln in text.splitlines()]
    assert "toolace-loki_q10 2.50 (no interval) 1.0 [-2.0, 4.0] n=86" in lines
    assert "toolace-loki_q10 vs toolace-lora_r16 Avg -29.1 [-50.2, -8.0] a is better" in lines
    assert "toolace-loki_q10 vs toolace-lora_r16 overall +2.0 within noise" in lines
