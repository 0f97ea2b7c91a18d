"""The student edition (make student, scripts/student_edition.py) holds no solution text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import student_edition  # noqa: E402
from exercises_layout import exercises, source  # noqa: E402


def test_student_edition_holds_no_solution_text(tmp_path):
    out = tmp_path / "student"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "student_edition.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert student_edition.solution_only_lines(), "found no solution-only lines to look for"
    assert student_edition.leaks(out) == []
    names = sorted(p.name for p in (out / "chapters").glob("*.ipynb"))
    assert names == sorted(p.name for p in (REPO / "chapters").glob("*.ipynb"))
    assert not list(out.rglob("*solutions*"))
    toc = yaml.safe_load((out / "_toc.yml").read_text(encoding="utf-8"))
    assert "solutions" not in json.dumps(toc)
    assert [p["caption"] for p in toc["parts"]][:1] == ["Chapters"]


def test_committed_answers_are_blanked_back_to_their_starters():
    """A chapter with its answers committed (here: a solutions notebook) loses them."""
    unique = student_edition.solution_only_lines()
    path = REPO / "chapters" / "solutions" / "01_attention_as_a_soft_lookup_solutions.ipynb"
    nb = json.loads(path.read_text(encoding="utf-8"))
    student = student_edition.student_notebook(nb)
    found = exercises(student["cells"])
    assert len(found) >= 3
    for answer, check, _ in found:
        text = source(student["cells"][answer])
        assert "raise NotImplementedError" in text
        assert not {line.strip() for line in text.splitlines()} & unique
        assert student["cells"][check]["outputs"] == []
    assert "formats" not in student["metadata"].get("jupytext", {})
