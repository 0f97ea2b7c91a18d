"""The book's site lists every chapter, and renders the notebooks as they are committed.

With `only_build_toc_files`, a notebook that _toc.yml forgets drops out of the site without a
warning; a listed file that does not exist fails `make book`. `make toc` rewrites _toc.yml
from the notebooks in chapters/.
"""

from __future__ import annotations

from pathlib import Path

import _optional
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROOT = "chapters/00_how_to_use_this_book"


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text(encoding="utf-8"))


def toc_files(node) -> list[str]:
    """Every `root:` and `file:` entry of a Jupyter Book table of contents, in order."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("root", "file"):
                found.append(str(value))
            else:
                found += toc_files(value)
    elif isinstance(node, list):
        for item in node:
            found += toc_files(item)
    return found


def chapter_notebooks() -> list[str]:
    return sorted(
        p.relative_to(REPO).with_suffix("").as_posix()
        for p in (REPO / "chapters").rglob("*.ipynb")
        if not any(part.startswith((".", "_build")) for part in p.relative_to(REPO).parts)
    )


def test_toc_starts_with_how_to_use_this_book():
    toc = load("_toc.yml")
    assert toc["format"] == "jb-book"
    assert toc["root"] == ROOT


def test_toc_lists_every_chapter_notebook_and_only_those():
    notebooks = chapter_notebooks()
    if not notebooks:
        _optional.missing(
            "no chapter notebooks in chapters/ yet: the table of contents has nothing to list"
        )
    listed = toc_files(load("_toc.yml"))
    missing = [nb for nb in notebooks if nb not in listed]
    absent = [f for f in listed if f not in notebooks]
    twice = sorted({f for f in listed if listed.count(f) > 1})
    problems = []
    if missing:
        problems.append(f"not in _toc.yml, so not in the site: {missing}")
    if absent:
        problems.append(f"in _toc.yml but no such notebook (the build fails): {absent}")
    if twice:
        problems.append(f"listed more than once: {twice}")
    if problems:
        pytest.fail(
            "_toc.yml and chapters/ disagree:\n  "
            + "\n  ".join(problems)
            + "\nRun `make toc` (scripts/update_toc.py) to list the notebooks that exist.",
            pytrace=False,
        )


def test_site_renders_the_committed_notebooks_only():
    config = load("_config.yml")
    assert config["execute"]["execute_notebooks"] == "off", (
        "the chapters' outputs are committed and checked by nbval; the site must not re-run them"
    )
    assert config["only_build_toc_files"] is True
    assert "chapters/**.md" in config["exclude_patterns"], (
        "the jupytext twins (.md) must be excluded, or Sphinx finds two sources for every chapter"
    )
