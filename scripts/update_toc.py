#!/usr/bin/env python3
"""Write _toc.yml (the book's table of contents) from the chapter notebooks that exist.

    python scripts/update_toc.py           # rewrite _toc.yml   (make toc)
    python scripts/update_toc.py --check   # exit 1 when _toc.yml lists other files

The first page is chapters/00_how_to_use_this_book; then every other chapters/NN_*.ipynb in
order of its name: 00a-12 as the part "Chapters", 13 onward as "Beyond the paper"; then the
notebooks in chapters/solutions/ as the part "Solutions". A letter after the number slots a
chapter in without renumbering the others: 00a_before_attention comes after 00 and before 01.
Only notebooks that exist are listed: `jupyter-book build -W` fails on a missing file, and with
only_build_toc_files a notebook left out of _toc.yml silently drops out of the site.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOC = REPO / "_toc.yml"
ROOT = "chapters/00_how_to_use_this_book"

HEADER = """\
# The book's table of contents (Jupyter Book 1): one entry per chapter notebook, no extension.
# Written by scripts/update_toc.py (make toc) from the notebooks in chapters/ and
# chapters/solutions/; tests/test_book_toc.py fails when this file and chapters/ disagree.
# Hand edits (order, parts) are fine, the test only checks that every notebook is listed and
# every listed notebook exists; but `make toc` rewrites the file from scratch.
"""


# Chapters 01-12 build the paper's Transformer and the GPT; 13 onward go beyond the paper.
LAST_PAPER_CHAPTER = 12


def chapter_number(path: str) -> int:
    """The NN of chapters/NN_topic or NNa_topic (a name without a number sorts with the paper's chapters)."""
    stem = path.rsplit("/", 1)[-1]
    head = stem.split("_", 1)[0]
    digits = head[: len(head) - len(head.lstrip("0123456789"))]
    return int(digits) if digits else 0


def notebooks(folder: Path) -> list[str]:
    return [p.relative_to(REPO).with_suffix("").as_posix() for p in sorted(folder.glob("*.ipynb"))]


def render() -> str:
    chapters = [c for c in notebooks(REPO / "chapters") if c != ROOT]
    paper = [c for c in chapters if chapter_number(c) <= LAST_PAPER_CHAPTER]
    beyond = [c for c in chapters if chapter_number(c) > LAST_PAPER_CHAPTER]
    solutions = notebooks(REPO / "chapters" / "solutions")
    lines = [HEADER, "format: jb-book", f"root: {ROOT}"]
    parts = [
        (caption, files)
        for caption, files in (
            ("Chapters", paper),
            ("Beyond the paper", beyond),
            ("Solutions", solutions),
        )
        if files
    ]
    if parts:
        lines.append("parts:")
    for caption, files in parts:
        lines += [f"  - caption: {caption}", "    chapters:"]
        lines += [f"      - file: {f}" for f in files]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only report whether _toc.yml is current"
    )
    args = parser.parse_args()
    text = render()
    current = TOC.read_text(encoding="utf-8") if TOC.exists() else ""
    if args.check:
        if current != text:
            print("_toc.yml is not what scripts/update_toc.py would write; run: make toc")
            return 1
        print("_toc.yml is current")
        return 0
    if current == text:
        print("_toc.yml is current")
    else:
        TOC.write_text(text, encoding="utf-8")
        print(f"wrote {TOC.relative_to(REPO)}:")
        print(text[len(HEADER) :], end="")
    if not (REPO / f"{ROOT}.ipynb").exists():
        print(f"note: {ROOT}.ipynb does not exist yet; the book cannot be built without it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
