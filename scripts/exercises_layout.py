"""How the chapters lay out their exercises, for scripts/student_edition.py and scripts/grade.py.

An exercise is a code cell that holds nothing but its check, `chNN.check_name(answer, ...)`
(CONTRIBUTING.md: "Each has a stub cell (`raise NotImplementedError`) followed by a check cell").
Its answer cell is the nearest code cell above it. No tags are needed: the rule is the one the
chapters already follow.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

CHECK_CELL = re.compile(r"^(?P<module>ch\d+[a-z]?)\.(?P<check>check_\w+)\((?P<args>.*)\)$", re.S)
STUB_MARK = "raise NotImplementedError"
CHAPTER_NUMBER = re.compile(r"^(?P<number>\d+[a-z]?)_")
# What an exercise is worth: make grade's grades.csv and the chapters' nbgrader test cells.
POINTS = 1


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def check_call(cell: dict) -> re.Match | None:
    """The match of a check cell (`chNN.check_name(...)` and nothing else), or None."""
    if cell.get("cell_type") != "code":
        return None
    return CHECK_CELL.match(source(cell).strip())


def exercises(cells: list[dict]) -> list[tuple[int | None, int, re.Match]]:
    """(answer cell index or None, check cell index, check match) for each exercise, in order."""
    found = []
    for i, cell in enumerate(cells):
        match = check_call(cell)
        if match is None:
            continue
        answer = next(
            (j for j in range(i - 1, -1, -1) if cells[j].get("cell_type") == "code"), None
        )
        found.append((answer, i, match))
    return found


def chapter_number(path: str | Path) -> str | None:
    """ "01" for 01_attention_as_a_soft_lookup(.ipynb|_solutions.ipynb), "00a" for 00a_..."""
    match = CHAPTER_NUMBER.match(Path(path).name)
    return match["number"] if match else None


def blank_answer(src: str) -> str:
    """The starter of an answer cell: each top-level def/class keeps its signature and docstring,
    its body becomes `raise NotImplementedError`; a cell that is already a stub is left as it is."""
    if STUB_MARK in src:
        return src
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return "# your code here\n" + STUB_MARK
    lines = src.splitlines()
    out: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = node.body[0]
            has_doc = (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            )
            head_end = first.end_lineno if has_doc else first.lineno - 1
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            out += lines[start - 1 : head_end]
            indent = " " * (first.col_offset)
            out += [f"{indent}# your code here", f"{indent}{STUB_MARK}", ""]
    if not out:
        return "# your code here\n" + STUB_MARK
    return "\n".join(out).rstrip() + "\n"
