#!/usr/bin/env python3
"""A chapter as an nbgrader assignment (make nbgrader CHAPTER=01 [NBGRADER_COURSE=dir]).

    python scripts/nbgrader_course.py 01 [--course _build/nbgrader]

Sets up (or adds to) an nbgrader course directory and releases the chapter in it:

- COURSE/nbgrader_config.py, if the course has none yet: it loads the book's settings
  (scripts/nbgrader_book_config.py). A course with a config of its own is told the line to add;
  its file is never changed.
- COURSE/source/chNN/: the chapter notebook (its exercise cells carry nbgrader's metadata, see
  scripts/nbgrader_metadata.py) and the chapters' data files (data/), replaced on every run;
- `nbgrader generate_assignment chNN --force`, run in COURSE: the student version in
  COURSE/release/chNN/ and the assignment, its solution and test cells in COURSE/gradebook.db.

Then, in COURSE: hand out release/chNN/, collect each student's notebook into
submitted/STUDENT/chNN/, run `nbgrader autograde chNN`, and read the grades with
`nbgrader export` (grades.csv) or the formgrader.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exercises_layout import chapter_number  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = REPO / "chapters"
BOOK_CONFIG = REPO / "scripts" / "nbgrader_book_config.py"
LOAD_LINE = f'load_subconfig(r"{BOOK_CONFIG}")  # noqa: F821 -- the book\'s nbgrader settings'


def find_chapter(name: str) -> Path:
    """The chapter notebook for "01", "00a", "ch01" or a path to a chapter's .ipynb or .md."""
    path = Path(name)
    if path.suffix in (".ipynb", ".md") and path.with_suffix(".ipynb").is_file():
        return path.with_suffix(".ipynb").resolve()
    number = name.removeprefix("ch")
    found = sorted(CHAPTERS.glob(f"{number}_*.ipynb"))
    if not found:
        raise SystemExit(f"no chapter {name!r} in {CHAPTERS}")
    return found[0]


def nbgrader_env() -> dict[str, str]:
    """The environment nbgrader runs in: this Python's scripts first (nbgrader calls `alembic` by
    name), no NBGRADER_EXECUTION left over, and the explorers as the chapters are executed."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("NBGRADER_EXECUTION", None)
    env.setdefault("TRANSFORMER_CORE_WIDGET_MODE", "static")
    return env


def write_config(course: Path) -> None:
    config = course / "nbgrader_config.py"
    if not config.exists():
        config.write_text(
            "# An nbgrader course for Attention Zero To One (scripts/nbgrader_course.py wrote it).\n"
            "c = get_config()  # noqa: F821\n" + LOAD_LINE + "\n",
            encoding="utf-8",
        )
    elif str(BOOK_CONFIG) not in config.read_text(encoding="utf-8"):
        print(
            f"note: {config} is the course's own; to use the book's settings, add:\n  {LOAD_LINE}"
        )


def release(chapter: Path, course: Path) -> str:
    """Copy the chapter into COURSE/source/chNN/ and generate the assignment; its name."""
    assignment = "ch" + chapter_number(chapter)
    course.mkdir(parents=True, exist_ok=True)
    write_config(course)
    source = course / "source" / assignment
    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    shutil.copy2(chapter, source / chapter.name)
    if (CHAPTERS / "data").is_dir():
        shutil.copytree(CHAPTERS / "data", source / "data")
    subprocess.run(
        [sys.executable, "-m", "nbgrader", "generate_assignment", assignment, "--force"],
        cwd=course,
        env=nbgrader_env(),
        check=True,
    )
    return assignment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapter", help='the chapter: "01", "00a" or its notebook')
    parser.add_argument("--course", type=Path, default=REPO / "_build" / "nbgrader")
    args = parser.parse_args(argv)
    course = args.course.resolve()
    assignment = release(find_chapter(args.chapter), course)
    print(
        f"released {assignment}: {course / 'release' / assignment}\n"
        f"collect the students' notebooks into {course}/submitted/STUDENT/{assignment}/, then in "
        f"{course}:\n  nbgrader autograde {assignment}\n  nbgrader export"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
