"""The documentation stays whole: a short README that links every page of docs/, links that
lead somewhere, and a set-up that CI runs exactly as the README tells a user to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: drafts other branches leave for the docs pages (not pages themselves)
INCOMING = ROOT / "docs" / "_incoming"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return sorted(p for p in (ROOT / "docs").rglob("*.md") if INCOMING not in p.parents)


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_there_are_docs_pages_and_the_readme_links_every_one():
    assert pages(), "docs/ has no pages"
    linked = {(README.parent / t.split("#")[0]).resolve() for t in relative_links(README)}
    unlinked = [str(p.relative_to(ROOT)) for p in pages() if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


@pytest.mark.parametrize("page", [README, *pages()], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, broken


def test_the_readme_is_a_front_door():
    """At most ~200 lines; the set-up, the main command and the test command within the
    first 80."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    first = "\n".join(lines[:80])
    for command in ('    pip install -e ".[test]"', "    scripts/setup-test-extras.sh",
                    "    snakemake --cores 1 all", "    pytest\n"):  # fmt: skip
        assert command in first + "\n", command


def test_ci_installs_as_the_readme_says():
    """.ci/run installs torch with the README's own line and runs the same extras script."""
    readme, ci = README.read_text(encoding="utf-8"), (ROOT / ".ci" / "run").read_text()
    torch = re.search(r"^    (pip install torch==\S+ --index-url \S+)", readme, flags=re.M)
    assert torch and f"python -m {torch.group(1)}" in ci.replace(" --quiet", "")
    assert "\nscripts/setup-test-extras.sh\n" in ci
    assert "pip install --quiet \"torch" not in ci and "pip install torch\n" not in ci
    assert (ROOT / "scripts" / "setup-test-extras.sh").stat().st_mode & 0o111  # executable
