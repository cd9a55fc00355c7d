"""The documentation stays true to the code and to itself: docs/stages.md is
the stage registry's own output, every relative link leads somewhere, the
README stays a quickstart, and no page speaks of how flow was built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flow.cli import main

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_stages_md_is_the_registry_s_output(capsys):
    assert main(["stages", "--format", "markdown", "--builtin"]) == 0
    generated = capsys.readouterr().out
    shipped = (ROOT / "docs" / "stages.md").read_text(encoding="utf-8")
    assert shipped == generated, "docs/stages.md is out of date: run make docs"


def test_the_readme_is_a_quickstart():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; the reference belongs in docs/"


FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation
    but `-` and `_` dropped, spaces as `-`."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))  # code is not links
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


# Words that tell how flow was built rather than what it is. A bare "session"
# is not among them: aiohttp's ClientSession and the run's HTTP sessions are
# part of what the docs describe, so only phrases that mean a work session are.
HISTORY = (
    "closing note",
    "project brief",
    "the brief",
    "issue #",
    "next, the",
    "and, next,",
    "this session",
    "previous session",
    "next session",
    "earlier session",
    "a session of",
)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_describe_flow_as_it_is(page):
    text = page.read_text(encoding="utf-8").lower()
    found = [phrase for phrase in HISTORY if phrase in text]
    assert not found, f"{page.relative_to(ROOT)} speaks of how flow was built: {found}"
