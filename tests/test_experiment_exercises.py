"""Every chapter 02-16 (and 12a) asks the reader to find something out: an experiment exercise.

An experiment exercise is a check built on ``check_measured`` (a range measured over seeds by
``scripts/experiment_ranges.py``), called from the chapter's own exercise cells, with its
measurement in the script, so that the range can be measured again when the numerics change.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = [f"{n:02d}" for n in range(2, 17)] + ["12a"]


def _experiment_checks(module) -> list[str]:
    """The check functions of ``module`` whose body calls check_measured."""
    names = []
    for name, fn in inspect.getmembers(module, inspect.isfunction):
        if name.startswith("check_") and fn.__module__ == module.__name__:
            tree = ast.parse(inspect.getsource(fn))
            calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            if "check_measured" in calls:
                names.append(name)
    return names


def _experiments() -> dict:
    spec = importlib.util.spec_from_file_location("experiment_ranges", REPO / "scripts" / "experiment_ranges.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script.EXPERIMENTS


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_chapter_has_an_experiment_exercise(chapter):
    module = importlib.import_module(f"attention_book.exercises.ch{chapter}")
    checks = _experiment_checks(module)
    assert checks, f"attention_book.exercises.ch{chapter} has no check built on check_measured"
    (md,) = REPO.glob(f"chapters/{chapter}_*.md")
    text = md.read_text()
    assert any(f"ch{chapter}.{name}(" in text for name in checks), (
        f"{md.name} calls none of its experiment checks {checks}"
    )
    assert f"ch{chapter}" in _experiments(), f"scripts/experiment_ranges.py does not measure ch{chapter}"


def test_every_measurement_has_a_chapter():
    for name, (fn, what, tolerance) in _experiments().items():
        assert name.removeprefix("ch") in CHAPTERS, name
        assert callable(fn) and fn.__doc__ and what and tolerance >= 0, name
