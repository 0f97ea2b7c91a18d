#!/usr/bin/env python3
"""Write nbgrader's cell metadata into the chapters' exercises (make nbgrader-tags).

    python scripts/nbgrader_metadata.py                      # every chapter in chapters/
    python scripts/nbgrader_metadata.py chapters/01_*.ipynb  # some (.ipynb or .md, either twin)
    python scripts/nbgrader_metadata.py --check              # change nothing; exit 1 if out of date

Each exercise (scripts/exercises_layout.py: a check cell `chNN.check_name(...)`, its answer cell the
code cell above it) gets nbgrader's metadata (schema version 3, nbgrader 0.9):

- its answer cell, a solution cell ("autograded answer"): `solution: true`, id `chNN-name-answer`;
- its check cell, an autograded test cell: `grade: true`, `locked: true`, `points` (POINTS, what
  make grade gives an exercise), id `chNN-name`, where `name` is the check's name without `check_`.

Every other cell loses any nbgrader metadata it had, so a removed or renamed exercise leaves none
behind; running it twice changes nothing. The ids come from the chapter and the check, so they stay
the same when cells are added around them. Both twins are written: the .ipynb with only its cells'
metadata changed (outputs, sources and formatting as they were), the .md through jupytext, cell
for cell; a pair whose cells disagree is refused (bring it in step first). The other cells are not
locked here: the book's nbgrader settings (scripts/nbgrader_book_config.py) make every cell of a
released notebook read-only but the answers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exercises_layout import POINTS, exercises, source  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = REPO / "chapters"
SCHEMA_VERSION = 3  # nbgrader 0.9's cell metadata schema (nbgrader/nbgraderformat/v3.json)


def grade_id(module: str, check: str) -> str:
    """`ch01-stable_softmax` for ch01.check_stable_softmax: the test cell's id."""
    return f"{module}-{check.removeprefix('check_')}"


def expected_metadata(cells: list[dict]) -> dict[int, dict]:
    """The nbgrader metadata each exercise cell should carry, by cell index."""
    wanted: dict[int, dict] = {}
    for answer, check, match in exercises(cells):
        test_id = grade_id(match["module"], match["check"])
        if answer is None or answer in wanted:
            raise ValueError(f"{test_id}: the check cell has no answer cell of its own above it")
        wanted[answer] = {
            "grade": False,
            "grade_id": f"{test_id}-answer",
            "locked": False,
            "schema_version": SCHEMA_VERSION,
            "solution": True,
            "task": False,
        }
        wanted[check] = {
            "grade": True,
            "grade_id": test_id,
            "locked": True,
            "points": POINTS,
            "schema_version": SCHEMA_VERSION,
            "solution": False,
            "task": False,
        }
    return wanted


def apply(cells: list, wanted: dict[int, dict]) -> bool:
    """Give each cell its wanted nbgrader metadata (none if it is not an exercise cell); changed?"""
    changed = False
    for i, cell in enumerate(cells):
        metadata = cell.setdefault("metadata", {})
        if i in wanted:
            if metadata.get("nbgrader") != wanted[i]:
                metadata["nbgrader"] = dict(wanted[i])
                changed = True
        elif "nbgrader" in metadata:
            del metadata["nbgrader"]
            changed = True
    return changed


def notebook_text(nb: dict) -> str:
    """The notebook as Jupyter writes it (nbformat.write: sorted keys, indent 1, UTF-8)."""
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def tag_pair(ipynb: Path, write: bool = True) -> bool:
    """Tag one chapter's .ipynb and .md twin; True if either was (or, with write=False, would be)
    changed."""
    import jupytext

    md = ipynb.with_suffix(".md")
    nb = json.loads(ipynb.read_text(encoding="utf-8"))
    wanted = expected_metadata(nb["cells"])
    changed_nb = apply(nb["cells"], wanted)
    text = md.read_text(encoding="utf-8")
    twin = jupytext.reads(text, fmt="md:myst")
    if len(twin.cells) != len(nb["cells"]) or any(
        source(a).strip() != source(b).strip() or a["cell_type"] != b["cell_type"]
        for a, b in zip(twin.cells, nb["cells"], strict=True)
    ):
        raise ValueError(
            f"{ipynb.name} and {md.name} hold different cells: bring the pair in step first"
        )
    changed_md = apply(twin.cells, wanted)
    if write and changed_nb:
        ipynb.write_text(notebook_text(nb), encoding="utf-8")
    if write and changed_md:
        md.write_text(jupytext.writes(twin, fmt="md:myst"), encoding="utf-8")
    return changed_nb or changed_md


def chapter_notebooks() -> list[Path]:
    return sorted(p for p in CHAPTERS.glob("[0-9]*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", type=Path, help="chapter notebooks (default: all)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if out of date")
    args = parser.parse_args(argv)
    paths = [p.with_suffix(".ipynb") for p in args.chapters] or chapter_notebooks()
    stale = []
    for path in paths:
        if tag_pair(path, write=not args.check):
            stale.append(path)
            print(f"{'out of date' if args.check else 'tagged'}: {path}")
    if args.check and stale:
        print(
            "run: python scripts/nbgrader_metadata.py " + " ".join(map(str, stale)), file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
