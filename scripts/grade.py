#!/usr/bin/env python3
"""Grade a class's notebooks (make grade SUBMISSIONS=dir): run each, run each exercise's check.

    python scripts/grade.py SUBMISSIONS [--out grades.csv] [--timeout 600]

SUBMISSIONS holds one folder per student, each with the student's chapter notebooks, named as
the chapters are (`01_attention_as_a_soft_lookup.ipynb`; any name that starts with the chapter's
number will do); a notebook directly in SUBMISSIONS is graded with its file name as the student.
Each notebook runs headlessly in a kernel of its own (nbclient), in a subprocess with a time limit
(--timeout seconds, for the whole notebook), from chapters/ so that the chapter's data files are
found. Every exercise of the chapter (its check cells, see scripts/exercises_layout.py) is
checked where the student's notebook checks it, or at its end if the student deleted the check
cell; the check is the book's own (attention_book.exercises), whatever the cell held.

grades.csv has one row per exercise: student, chapter, exercise, passed, points (1 or 0), message
(the check's feedback). A notebook that is not a notebook, a cell that raised, a notebook that ran
past its time limit: a row with the exercise `-` says so, and the run goes on.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exercises_layout import POINTS, chapter_number, exercises, source  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = REPO / "chapters"
COLUMNS = ["student", "chapter", "exercise", "passed", "points", "message"]

WRAPPER = """\
import contextlib as _grade_cl, io as _grade_io, json as _grade_json
_grade_buf = _grade_io.StringIO()
try:
    from attention_book.exercises import {module}
    with _grade_cl.redirect_stdout(_grade_buf):
        _grade_passed = bool({call})
    _grade_msg = _grade_buf.getvalue().strip()
except BaseException as _grade_err:
    _grade_passed = False
    _grade_msg = f"the check could not run: {{type(_grade_err).__name__}}: {{_grade_err}}"
with open({results!r}, "a", encoding="utf-8") as _grade_file:
    _grade_file.write(_grade_json.dumps({{"exercise": {check!r}, "passed": _grade_passed,
                                         "message": _grade_msg}}) + "\\n")
print(_grade_msg)
"""


def chapter_for(path: Path) -> Path | None:
    number = chapter_number(path)
    if number is None:
        return None
    found = sorted(p for p in CHAPTERS.glob(f"{number}_*.ipynb"))
    return found[0] if found else None


def graded_notebook(submission: dict, chapter: dict, results: Path) -> tuple[dict, list[str]]:
    """The submission with every check cell of the chapter replaced by the grader's."""
    canonical = [
        (m["module"], m["check"], source(chapter["cells"][c]).strip())
        for _, c, m in exercises(chapter["cells"])
    ]
    cells = submission["cells"]
    placed = set()
    by_check = {m["check"]: c for _, c, m in exercises(cells)}
    for module, check, call in canonical:
        code = WRAPPER.format(module=module, call=call, check=check, results=str(results))
        if check in by_check:
            cells[by_check[check]]["source"] = code
            placed.add(check)
        else:
            cells.append(
                {
                    "cell_type": "code",
                    "metadata": {},
                    "source": code,
                    "outputs": [],
                    "execution_count": None,
                }
            )
    return submission, [check for _, check, _ in canonical]


def worker(notebook: Path, timeout: int) -> int:
    """Run one prepared notebook (in the subprocess); report cells that raised as JSON lines."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        allow_errors=True,
        kernel_name="python3",
        resources={"metadata": {"path": str(CHAPTERS)}},
    )
    problems = []
    try:
        client.execute()
    except CellTimeoutError:
        problems.append(f"ran past its time limit of {timeout} s")
    except DeadKernelError as err:
        problems.append(f"the kernel died: {err}")
    except Exception as err:  # noqa: BLE001 -- anything a submission does is recorded, never raised
        problems.append(f"could not run: {type(err).__name__}: {err}")
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(
                    f"cell {i + 1} raised {output.get('ename')}: {output.get('evalue')}"
                )
    for problem in problems:
        print(json.dumps({"problem": problem}), flush=True)
    return 0


def grade_one(path: Path, student: str, timeout: int) -> list[dict]:
    def row(chapter, exercise, passed, message):
        return {
            "student": student,
            "chapter": chapter,
            "exercise": exercise,
            "passed": passed,
            "points": POINTS if passed else 0,
            "message": " / ".join(str(message).splitlines()),
        }

    chapter_path = chapter_for(path)
    chapter = chapter_path.stem if chapter_path else (chapter_number(path) or "?")
    try:
        submission = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(submission, dict) or not isinstance(submission.get("cells"), list):
            raise ValueError("no cells")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return [row(chapter, "-", False, f"not a notebook ({path.name}): {err}")]
    if chapter_path is None:
        return [row(chapter, "-", False, f"no chapter of the book is named like {path.name}")]
    canonical_nb = json.loads(chapter_path.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        results = Path(tmp, "results.jsonl")
        results.touch()
        prepared, checks = graded_notebook(submission, canonical_nb, results)
        notebook = Path(tmp, "submission.ipynb")
        notebook.write_text(json.dumps(prepared), encoding="utf-8")
        env = dict(os.environ, MPLBACKEND="Agg", TRANSFORMER_CORE_WIDGET_MODE="static")
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(notebook), "--timeout", str(timeout)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,
        )
        problems = []
        try:
            out, _ = proc.communicate(timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            problems.append(f"ran past its time limit of {timeout} s")
        for line in out.splitlines():
            try:
                problems.append(json.loads(line)["problem"])
            except (ValueError, KeyError, TypeError):
                pass
        done = {}
        for line in results.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            done[record["exercise"]] = record
    rows = [row(chapter, "-", False, problem) for problem in problems]
    for check in checks:
        record = done.get(check)
        if record is None:
            reason = "not checked: " + (problems[0] if problems else "the check cell did not run")
            rows.append(row(chapter, check, False, reason))
        else:
            rows.append(row(chapter, check, bool(record["passed"]), record["message"]))
    return rows


def submissions(folder: Path) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            found += [
                (path.name, p)
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and ".ipynb_checkpoints" not in p.parts
                and not p.name.startswith(".")
            ]
        elif path.is_file():
            found.append((path.stem, path))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("submissions", type=Path, nargs="?")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"))
    parser.add_argument("--timeout", type=int, default=600, help="seconds per notebook")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.timeout)
    if args.submissions is None or not args.submissions.is_dir():
        parser.error("SUBMISSIONS must be a folder (one folder per student)")
    rows = []
    for student, path in submissions(args.submissions):
        print(f"==> {student}: {path.name}", flush=True)
        rows += grade_one(path, student, args.timeout)
    with args.out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    passed = sum(r["points"] for r in rows)
    print(f"{len(rows)} rows, {passed} exercises passed: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
