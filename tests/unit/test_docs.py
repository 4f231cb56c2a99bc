"""The user docs stay what they are for: a short README, pages that exist, no development history."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
USER_DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_readme_is_a_short_guide() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text) <= 12_000, f"README.md has {len(text)} characters; details belong in docs/"
    for heading in ("## Two commands", "## Quickstart", "## The CLI", "## Documentation"):
        assert heading in text


@pytest.mark.parametrize("page", USER_DOCS, ids=lambda p: p.name)
def test_relative_links_point_at_files_that_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


@pytest.mark.parametrize("page", USER_DOCS, ids=lambda p: p.name)
def test_user_docs_speak_of_the_project_not_of_its_making(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    found = re.findall(r"\bissue \d+|\(before\)|\(now\)|used to take turns|how \w+ got there", text, re.I)
    assert found == [], f"{page.name}: development history belongs in commit messages: {found}"


def test_every_file_the_quickstart_names_is_shipped() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w/])(?:examples|playbooks)/[\w./-]+\.(?:yaml|jsonl|json)\b", text))
    assert {
        "examples/quickstart/agent.yaml",
        "examples/quickstart/alert.json",
        "playbooks/examples/error-spike-after-rollout.jsonl",
    } <= named
    for path in named:
        assert (REPO / path).is_file(), path
