"""`snakemake --report` shows the tables themselves, not only links.

Snakemake's report (a single-page app with every file embedded as a data URI in a ``results``
JSON object) displays images, PDFs and HTML in place and offers any other file, a CSV among
them, only as a download. So the workflow registers each table's HTML page (``write_table``) as
the report item of category "Tables" and keeps the CSV under "Table files". These tests build a
real report of a tiny workflow with ``write_table`` output and read the embedded data back (the
same check a browser's view makes: the page's mime type and its cells), and check that the
pipeline's rules register the HTML pages.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))

SNAKEFILE = """
from loki_pipeline.report.tables import write_table

ROWS = [{"run": "base", "x": 50.0, "x_n": 20, "x_lo": 29.9, "x_hi": 70.1},
        {"run": "loki_q10", "x": 45.0, "x_n": 20, "x_lo": 25.8, "x_hi": 65.8}]

rule all:
    input: "t/forgetting.html", "t/forgetting.csv"

rule table:
    output:
        html=report("t/forgetting.html", category="Tables"),
        csv=report("t/forgetting.csv", category="Table files"),
    run:
        write_table(ROWS, [("run", "run", ""), ("x", "X", "ci")], "t/forgetting",
                    caption="a caption", notes=["a note"])
"""


def _snakemake(cwd: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                     os.environ.get("PYTHONPATH")]))}  # fmt: skip
    proc = subprocess.run([SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _embedded_results(report: Path) -> dict[str, dict]:
    text = report.read_text()
    match = re.search(r"var results = (\{.*?\});\n", text, re.S)
    assert match, "the report embeds no results object"
    return json.loads(match.group(1))


def test_report_embeds_each_table_as_an_html_page_it_shows_in_place(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    _snakemake(tmp_path, "--cores", "1", "--quiet")
    _snakemake(tmp_path, "--report", "report.html")
    results = _embedded_results(tmp_path / "report.html")
    page = results["t/forgetting.html"]
    assert page["mime_type"] == "text/html"
    html = base64.b64decode(page["data_uri"].split(";base64,", 1)[1]).decode()
    assert "<td>loki_q10</td><td>45.0 [25.8, 65.8]</td>" in html and "X (n=20)" in html
    assert "a note" in html
    # the viewer shows text/html in place; a CSV falls through to a download link
    viewer = (tmp_path / "report.html").read_text()
    assert 'case "text/html":' in viewer and 'case "text/csv":' not in viewer
    assert results["t/forgetting.csv"]["mime_type"] == "text/csv"


def _chromium() -> str | None:
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    return next((path for path in map(shutil.which, names) if path), None)


def test_report_shows_the_table_in_a_headless_browser(tmp_path):
    """The report opened in a real browser: Tables > the table > view shows its cells, and a
    screenshot of it is drawn (the check a reader makes, beside the embedded-data test above)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason='needs playwright: `pip install -e ".[test]"`'
    )
    chromium = _chromium()
    if chromium is None:
        pytest.skip("needs a Chromium browser: `apt-get install chromium`")
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    _snakemake(tmp_path, "--cores", "1", "--quiet")
    _snakemake(tmp_path, "--report", "report.html")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto((tmp_path / "report.html").as_uri())
            page.get_by_text("Tables", exact=True).first.click()
            page.locator("tr", has_text="t/forgetting.html").locator("a[iconname=eye]").click()
            frame_texts = []
            for _ in range(50):  # the page is shown in an iframe once its data URI loads
                frame_texts = [f.locator("body").inner_text() for f in page.frames[1:]]
                if any("45.0 [25.8, 65.8]" in t for t in frame_texts):
                    break
                page.wait_for_timeout(100)
            shot = page.screenshot(path=str(tmp_path / "table.png"))
        finally:
            browser.close()
    shown = "\n".join(frame_texts)
    assert "loki_q10" in shown and "45.0 [25.8, 65.8]" in shown and "X (n=20)" in shown
    assert "a caption" in shown and "a note" in shown
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000


def test_pipeline_registers_html_tables_and_keeps_csvs_as_files():
    """Every report item of category "Tables" in the rules is a table's HTML page."""
    rules = (ROOT / "workflow" / "rules" / "report.smk").read_text()
    # an output path is written results_path("...") (inside the config's results folder)
    items = re.findall(
        r'report\(\s*(?:results_path\()?"([^"]+)"\)?,[^)]*?category="([^"]+)"', rules, re.S
    )
    tables = [path for path, category in items if category == "Tables"]
    files = [path for path, category in items if category == "Table files"]
    assert len(tables) == 4 and all(p.endswith(".html") for p in tables)
    assert sorted(p.removesuffix(".html") for p in tables) == sorted(
        p.removesuffix(".csv") for p in files
    )


def test_every_report_caption_cites_the_paper():
    """Captions cite the LoKI paper (arXiv 2505.22120), not a notes file."""
    for caption in sorted((ROOT / "workflow" / "report").glob("*.rst")):
        text = caption.read_text()
        assert "2505.22120" in text, caption.name
        assert not re.search(r"\b[\w/]+\.md\b", text), caption.name


def test_report_captions_name_the_attributed_prompt_set():
    """The workflow page and the KVA figures' captions say which set KVA attributed, from the
    config, rendered as Snakemake renders captions (jinja2, its options)."""
    from types import SimpleNamespace

    import yaml
    from jinja2 import Environment

    from loki_pipeline.config import validate_config

    config = validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    wildcards = SimpleNamespace(model="smollm2-135m", q="10", task="toolace", method="loki_q10")
    env = Environment(trim_blocks=True, lstrip_blocks=True)

    def render(name):
        text = (ROOT / "workflow" / "report" / name).read_text()
        return env.from_string(text).render(
            snakemake=SimpleNamespace(config=config, wildcards=wildcards)
        )

    names = ["workflow.rst", "select_heatmap.rst", "select_stability.rst",
             "select_layer_counts.rst"]  # fmt: skip
    for name in names:
        assert "``data/mmlu/mmlu_mini.jsonl`` (format mmlu)" in render(name), name
    config["kva"]["dataset"].update(source="data/example_task/protect.jsonl", format="prompts")
    for name in names:
        assert "``data/example_task/protect.jsonl`` (format prompts)" in render(name), name
