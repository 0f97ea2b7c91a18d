#!/usr/bin/env python3
"""Write the student edition of the book (make student): the chapters without solutions.

    python scripts/student_edition.py                 # into _build/student/
    python scripts/student_edition.py --out DIR       # elsewhere

DIR/chapters/ gets every chapter notebook of chapters/ (never chapters/solutions/), with each
exercise's answer cell set back to its starter (signature, docstring, `raise NotImplementedError`;
a cell that already is a stub stays as it is) and the outputs of the answer and check cells
cleared; the chapters' data files go along (chapters/data/). The notebooks lose their jupytext
pairing, so a student's JupyterLab writes no .md twins beside them.

DIR also gets a Jupyter Book source for the student site: _toc.yml (the book's, without the
Solutions part), _config.yml (the book's), and the images and extensions it names. Build it with
`make student-book`. The script refuses to finish if a line found only in the solutions
notebooks reached DIR (tests/test_student_edition.py checks the same).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exercises_layout import blank_answer, exercises, source  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = REPO / "chapters"
SOLUTIONS = CHAPTERS / "solutions"
SOLUTIONS_CAPTION = "Solutions"


def student_notebook(nb: dict) -> dict:
    nb = copy.deepcopy(nb)
    cells = nb["cells"]
    for answer, check, _ in exercises(cells):
        for i in (answer, check):
            if i is None:
                continue
            cells[i]["outputs"] = []
            cells[i]["execution_count"] = None
        if answer is not None:
            cells[answer]["source"] = blank_answer(source(cells[answer]))
    nb.get("metadata", {}).get("jupytext", {}).pop("formats", None)
    return nb


def student_toc(toc: dict) -> dict:
    toc = copy.deepcopy(toc)
    parts = [p for p in toc.get("parts", []) if p.get("caption") != SOLUTIONS_CAPTION]
    for part in parts:
        part["chapters"] = [
            c
            for c in part.get("chapters", [])
            if not c.get("file", "").startswith("chapters/solutions/")
        ]
    toc["parts"] = [p for p in parts if p["chapters"]]
    return toc


def notebook_text(nb: dict, skip: set[int] = frozenset()) -> str:
    """The cells' text as a reader sees it (sources and text outputs), cells in skip left out."""
    parts = []
    for i, cell in enumerate(nb["cells"]):
        if i in skip:
            continue
        parts.append(source(cell))
        for output in cell.get("outputs", []):
            for value in [output.get("text", "")] + list(output.get("data", {}).values()):
                parts.append("".join(value) if isinstance(value, list) else str(value))
    return "\n".join(parts)


def solution_only_lines(repo: Path = REPO) -> set[str]:
    """Lines (stripped, 16 characters or more) of the solutions' .md files that the chapters do not
    show: neither in a chapter's .md nor in the outputs of a chapter's cells other than its
    exercises (the chapters print the package's code with inspect.getsource, which a solution
    may share lines with)."""
    shown: set[str] = set()
    for md in (repo / "chapters").glob("*.md"):
        shown.update(line.strip() for line in md.read_text(encoding="utf-8").splitlines())
    for path in (repo / "chapters").glob("*.ipynb"):
        nb = json.loads(path.read_text(encoding="utf-8"))
        skip = {i for a, c, _ in exercises(nb["cells"]) for i in (a, c) if i is not None}
        shown.update(line.strip() for line in notebook_text(nb, skip).splitlines())
    unique: set[str] = set()
    for md in (repo / "chapters" / "solutions").glob("*.md"):
        for line in md.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if len(line) >= 16 and line not in shown:
                unique.add(line)
    return unique


def leaks(out: Path, repo: Path = REPO) -> list[tuple[str, str]]:
    """(file, line) for each solution-only line found in a text file under out."""
    found = []
    unique = solution_only_lines(repo)
    for path in sorted(out.rglob("*")):
        if not path.is_file() or path.suffix not in {
            ".ipynb",
            ".md",
            ".yml",
            ".py",
            ".txt",
            ".csv",
        }:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".ipynb":  # the cells' text as a reader sees it, not JSON-escaped
            text = notebook_text(json.loads(text))
        lines = {line.strip() for line in text.splitlines()}
        found += [(str(path.relative_to(out)), line) for line in sorted(unique & lines)]
    return found


def write(out: Path, repo: Path = REPO) -> list[Path]:
    chapters_out = out / "chapters"
    if chapters_out.exists():
        shutil.rmtree(chapters_out)
    chapters_out.mkdir(parents=True)
    written = []
    for path in sorted((repo / "chapters").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        target = chapters_out / path.name
        target.write_text(
            json.dumps(student_notebook(nb), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        written.append(target)
    if (repo / "chapters" / "data").is_dir():
        shutil.copytree(repo / "chapters" / "data", chapters_out / "data")
    # the student site's Jupyter Book source
    toc = yaml.safe_load((repo / "_toc.yml").read_text(encoding="utf-8"))
    (out / "_toc.yml").write_text(
        "# The student edition's table of contents: the book's, without the solutions.\n"
        + yaml.safe_dump(student_toc(toc), sort_keys=False),
        encoding="utf-8",
    )
    config = yaml.safe_load((repo / "_config.yml").read_text(encoding="utf-8"))
    config["title"] = f"{config.get('title', 'The book')} (student edition)"
    config.setdefault("sphinx", {}).setdefault("config", {})["tc_node_modules"] = str(
        repo / "node_modules"
    )
    (out / "_config.yml").write_text(
        "# The student site's configuration: the book's _config.yml (scripts/student_edition.py).\n"
        + yaml.safe_dump(config, sort_keys=False),
        encoding="utf-8",
    )
    for folder in ("images", "_ext"):
        if (repo / folder).is_dir():
            shutil.rmtree(out / folder, ignore_errors=True)
            shutil.copytree(
                repo / folder, out / folder, ignore=shutil.ignore_patterns("__pycache__")
            )
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "_build" / "student")
    args = parser.parse_args()
    written = write(args.out)
    found = leaks(args.out)
    if found:
        for name, line in found[:20]:
            print(f"error: solution text in {name}: {line}", file=sys.stderr)
        return 1
    print(f"student edition: {len(written)} chapter notebooks in {args.out / 'chapters'}")
    print(f"student site source: {args.out} (make student-book builds it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
