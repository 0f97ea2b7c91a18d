"""The chapters as nbgrader assignments: the cell metadata, and nbgrader itself grading chapter 01.

scripts/nbgrader_metadata.py tags every exercise (answer cell: a solution cell; check cell: an
autograded test cell worth POINTS); scripts/nbgrader_course.py releases a chapter in a course
directory with the book's settings (scripts/nbgrader_book_config.py); the checks raise under
nbgrader when they fail (attention_book.exercises.CheckFailed), since nbgrader counts a test cell
as failed only when it raises.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest
from _optional import require_module

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import nbgrader_course  # noqa: E402
import nbgrader_metadata  # noqa: E402
from exercises_layout import POINTS, blank_answer, exercises, source  # noqa: E402

CHAPTERS = REPO / "chapters"
NOTEBOOKS = sorted(CHAPTERS.glob("[0-9]*.ipynb"))
GRADED = "01_attention_as_a_soft_lookup"


def metadata_problems(cells: list[dict]) -> list[str]:
    """What is wrong with a chapter's nbgrader metadata, said independently of the script."""
    problems = []
    found = exercises(cells)
    tagged = set()
    ids: list[str] = []
    for answer, check, match in found:
        name = f"{match['module']}.{match['check']}"
        expected_id = f"{match['module']}-{match['check'].removeprefix('check_')}"
        test = cells[check].get("metadata", {}).get("nbgrader")
        if not test:
            problems.append(f"{name}: the check cell carries no nbgrader metadata")
        elif not (
            test.get("grade") is True
            and test.get("solution") is False
            and test.get("locked") is True
            and test.get("points") == POINTS
            and test.get("schema_version") == 3
            and test.get("grade_id") == expected_id
        ):
            problems.append(
                f"{name}: the check cell is not an autograded test cell {expected_id}: {test}"
            )
        sol = cells[answer].get("metadata", {}).get("nbgrader") if answer is not None else None
        if not sol:
            problems.append(f"{name}: the answer cell carries no nbgrader metadata")
        elif not (
            sol.get("solution") is True
            and sol.get("grade") is False
            and sol.get("locked") is False
            and sol.get("schema_version") == 3
            and sol.get("grade_id") == f"{expected_id}-answer"
        ):
            problems.append(
                f"{name}: the answer cell is not a solution cell {expected_id}-answer: {sol}"
            )
        tagged |= {answer, check}
    for i, cell in enumerate(cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is not None:
            ids.append(meta.get("grade_id"))
            if i not in tagged:
                problems.append(
                    f"cell {i} carries nbgrader metadata but is no exercise's cell: {meta}"
                )
    problems += [
        f"grade id {i} is used twice" for i in sorted({i for i in ids if ids.count(i) > 1})
    ]
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_carries_nbgrader_metadata(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    assert not metadata_problems(cells), (
        f"{path.name}: "
        + "; ".join(metadata_problems(cells))
        + f"\nrun: python scripts/nbgrader_metadata.py {path.relative_to(REPO)}"
    )
    twin = jupytext.read(path.with_suffix(".md"))
    assert [c.metadata.get("nbgrader") for c in twin.cells] == [
        c.get("metadata", {}).get("nbgrader") for c in cells
    ], f"{path.with_suffix('.md').name} does not carry the notebook's nbgrader metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_nbgrader_accepts_the_chapters_metadata(path):
    nbformat = require_module("nbformat")
    formats = require_module("nbgrader.nbgraderformat", "needs nbgrader (the dev extra)")
    nb = nbformat.read(path, as_version=4)
    formats.MetadataValidator().validate_nb(nb)  # raises on a bad cell or a duplicate id


def test_the_metadata_test_fails_for_an_untagged_exercise():
    cells = json.loads((CHAPTERS / f"{GRADED}.ipynb").read_text(encoding="utf-8"))["cells"]
    assert not metadata_problems(cells)
    answer, check, _ = exercises(cells)[1]
    untagged = json.loads(json.dumps(cells))
    del untagged[check]["metadata"]["nbgrader"]
    assert any("check cell carries no" in p for p in metadata_problems(untagged))
    del untagged[answer]["metadata"]["nbgrader"]
    assert any("answer cell carries no" in p for p in metadata_problems(untagged))
    wrong_points = json.loads(json.dumps(cells))
    wrong_points[check]["metadata"]["nbgrader"]["points"] = POINTS + 1
    assert metadata_problems(wrong_points)
    stray = json.loads(json.dumps(cells))
    stray[0].setdefault("metadata", {})["nbgrader"] = dict(cells[check]["metadata"]["nbgrader"])
    assert any("no exercise's cell" in p for p in metadata_problems(stray))
    assert any("used twice" in p for p in metadata_problems(stray))


def test_the_script_tags_a_pair_idempotently_and_keeps_every_output(tmp_path):
    """Chapter 01 with its tags removed, tagged again: both twins as committed, byte for byte."""
    for suffix in (".ipynb", ".md"):
        shutil.copy(CHAPTERS / f"{GRADED}{suffix}", tmp_path)
    ipynb, md = tmp_path / f"{GRADED}.ipynb", tmp_path / f"{GRADED}.md"
    nb = json.loads(ipynb.read_text(encoding="utf-8"))
    assert nbgrader_metadata.apply(nb["cells"], {})  # strip them
    ipynb.write_text(nbgrader_metadata.notebook_text(nb), encoding="utf-8")
    twin = jupytext.read(md)
    nbgrader_metadata.apply(twin.cells, {})
    jupytext.write(twin, md, fmt="md:myst")
    assert "nbgrader" not in md.read_text(encoding="utf-8")

    assert nbgrader_metadata.tag_pair(ipynb) is True
    assert ipynb.read_bytes() == (CHAPTERS / f"{GRADED}.ipynb").read_bytes()
    assert md.read_bytes() == (CHAPTERS / f"{GRADED}.md").read_bytes()
    assert nbgrader_metadata.tag_pair(ipynb) is False  # nothing left to do
    assert nbgrader_metadata.main(["--check", str(ipynb)]) == 0


def test_the_script_refuses_a_pair_out_of_step(tmp_path):
    for suffix in (".ipynb", ".md"):
        shutil.copy(CHAPTERS / f"{GRADED}{suffix}", tmp_path)
    md = tmp_path / f"{GRADED}.md"
    md.write_text(
        md.read_text(encoding="utf-8") + "\n```{code-cell} ipython3\nx = 1\n```\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match="different cells"):
        nbgrader_metadata.tag_pair(tmp_path / f"{GRADED}.ipynb")


def test_checks_raise_only_under_nbgrader(monkeypatch, capsys):
    from attention_book.exercises import CheckFailed, Feedback, run_check

    def wrong():
        raise Feedback("row 3 does not sum to 1")

    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert run_check("f", wrong) is False
    assert run_check("f", lambda: None) is True
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(CheckFailed, match="row 3 does not sum to 1"):
        run_check("f", wrong)
    with pytest.raises(CheckFailed, match="not attempted yet"):
        run_check("f", lambda: (_ for _ in ()).throw(NotImplementedError))
    assert run_check("f", lambda: None) is True
    out = capsys.readouterr().out
    assert out.count("✗ f: row 3 does not sum to 1") == 2  # the message is printed either way


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    """nbgrader itself: chapter 01 released, two students' notebooks autograded."""
    require_module("nbgrader", "needs nbgrader (the dev extra)")
    course = tmp_path_factory.mktemp("course")
    env = nbgrader_course.nbgrader_env()
    env["JUPYTER_CONFIG_DIR"] = str(course / ".jupyter")  # no user-wide nbgrader settings
    assignment = "ch01"
    # generous limits: they guard against a hang; on a quiet two-core machine it all takes ~1 min
    made = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "nbgrader_course.py"),
            "01",
            "--course",
            str(course),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    released_path = course / "release" / assignment / f"{GRADED}.ipynb"
    released = json.loads(released_path.read_text(encoding="utf-8"))
    solutions = json.loads(
        (CHAPTERS / "solutions" / f"{GRADED}_solutions.ipynb").read_text(encoding="utf-8")
    )
    answers = {
        m["check"]: source(solutions["cells"][a]) for a, _, m in exercises(solutions["cells"])
    }

    def submit(student: str, solved: set[str]) -> None:
        nb = json.loads(json.dumps(released))
        for answer, _, match in exercises(nb["cells"]):
            if match["check"] in solved:
                nb["cells"][answer]["source"] = answers[match["check"]]
        folder = course / "submitted" / student / assignment
        folder.mkdir(parents=True)
        (folder / released_path.name).write_text(json.dumps(nb), encoding="utf-8")
        shutil.copytree(released_path.parent / "data", folder / "data")

    submit("unchanged", set())
    submit("solved", set(answers))
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", "autograde", assignment],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    from nbgrader.api import Gradebook

    grades = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student in ("unchanged", "solved"):
            nb = gb.find_submission_notebook(GRADED, assignment, student)
            grades[student] = {g.name: (g.score, g.max_score) for g in nb.grades}
    return {"course": course, "released": released, "grades": grades}


def test_the_released_chapter_keeps_the_books_starters_and_locks_the_rest(graded_course):
    chapter = json.loads((CHAPTERS / f"{GRADED}.ipynb").read_text(encoding="utf-8"))
    cells = graded_course["released"]["cells"]
    assert len(cells) == len(chapter["cells"])
    answers = {a for a, _, _ in exercises(cells)}
    for answer, check, _ in exercises(cells):
        assert source(cells[answer]) == blank_answer(source(chapter["cells"][answer]))
        assert "def " in source(cells[answer])  # the signature the exercise gives survived
        assert cells[check]["metadata"]["editable"] is False
    assert all(
        cell["metadata"].get("editable") is False
        for i, cell in enumerate(cells)
        if i not in answers
    )
    assert all(cells[i]["metadata"].get("editable", True) is not False for i in answers)
    assert not any(cell.get("outputs") for cell in cells)


def test_nbgrader_grades_chapter_01(graded_course):
    grades = graded_course["grades"]
    tests = {
        f"ch01-{m['check'].removeprefix('check_')}"
        for _, _, m in exercises(graded_course["released"]["cells"])
    }
    assert len(tests) == 4
    for student in grades:
        assert set(grades[student]) == tests
        assert all(max_score == POINTS for _, max_score in grades[student].values())
    assert {name: score for name, (score, _) in grades["unchanged"].items()} == dict.fromkeys(
        tests, 0
    )
    assert {name: score for name, (score, _) in grades["solved"].items()} == dict.fromkeys(
        tests, POINTS
    )
