"""make grade (scripts/grade.py): a class's notebooks in, grades.csv out, whatever they hold."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTER = "01_attention_as_a_soft_lookup"


def tiny_notebook(*sources: str) -> str:
    cells = [
        {"cell_type": "code", "metadata": {}, "source": s, "outputs": [], "execution_count": None}
        for s in sources
    ]
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


@pytest.fixture(scope="module")
def grades(tmp_path_factory):
    root = tmp_path_factory.mktemp("grade")
    subs = root / "submissions"
    for student in ("solved", "unchanged", "broken"):
        (subs / student).mkdir(parents=True)
    shutil.copy(REPO / "chapters" / "solutions" / f"{CHAPTER}_solutions.ipynb", subs / "solved")
    shutil.copy(REPO / "chapters" / f"{CHAPTER}.ipynb", subs / "unchanged")
    (subs / "broken" / f"{CHAPTER}.ipynb").write_text("this is not json", encoding="utf-8")
    (subs / "broken" / "01_raises.ipynb").write_text(
        tiny_notebook("1 / 0", "x = 1"), encoding="utf-8"
    )
    (subs / "broken" / "01_loops.ipynb").write_text(
        tiny_notebook("while True:\n    pass"), encoding="utf-8"
    )
    out = root / "grades.csv"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "grade.py"),
            str(subs),
            "--out",
            str(out),
            "--timeout",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with out.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == [
        "student",
        "chapter",
        "exercise",
        "passed",
        "points",
        "message",
    ]
    return rows


def test_the_solutions_pass_every_exercise(grades):
    rows = [r for r in grades if r["student"] == "solved"]
    assert len(rows) == 4
    assert all(r["passed"] == "True" and r["points"] == "1" for r in rows), rows
    assert {r["chapter"] for r in rows} == {CHAPTER}


def test_the_unchanged_chapter_fails_every_exercise(grades):
    rows = [r for r in grades if r["student"] == "unchanged"]
    assert len(rows) == 4
    assert all(r["passed"] == "False" and r["points"] == "0" for r in rows)
    assert all("not attempted" in r["message"] for r in rows)


def test_broken_submissions_are_recorded_and_do_not_stop_the_run(grades):
    rows = [r for r in grades if r["student"] == "broken"]
    messages = " | ".join(r["message"] for r in rows)
    assert "not a notebook" in messages
    assert "raised ZeroDivisionError" in messages
    assert "time limit" in messages
    assert all(r["passed"] == "False" for r in rows)
