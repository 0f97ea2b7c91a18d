"""A reader's install (`make lab`: the package with its book extra, and attention_book) holds every
module the chapters import: a chapter that imports a developer-only package would fail for readers."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
MAGIC = ("%", "!", ":")  # IPython magics, shell escapes and MyST cell options are not Python
LOCAL_FOLDERS = ("benchmarks", "scripts", "chapters")
CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [node.module]
    return []


def _chapter_imports() -> dict[str, set[str]]:
    """Top-level module name -> the chapters (and solutions) that import it."""
    found: dict[str, set[str]] = {}
    for md in sorted((ROOT / "chapters").rglob("*.md")):
        for cell in CODE_CELL.findall(md.read_text(encoding="utf-8")):
            if cell.startswith("---\n"):  # the cell's options as a YAML block (nbgrader's metadata)
                cell = cell.split("\n---\n", 1)[1]
            lines = [line for line in cell.splitlines() if not line.lstrip().startswith(MAGIC)]
            for node in ast.walk(ast.parse("\n".join(lines))):
                for name in _imported(node):
                    found.setdefault(name.split(".")[0], set()).add(md.relative_to(ROOT).as_posix())
    return found


def _reader_distributions() -> set[str]:
    """transformer_core's requirements with the book extra, attention_book's, and everything they need."""
    todo = [("transformer_core", {"book"}), ("attention_book", set())]
    seen: set[str] = set()
    while todo:
        name, extras = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen and not extras:
            continue
        seen.add(key)
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append((req.name, set(req.extras)))
    return seen


def test_every_module_a_chapter_imports_comes_with_the_readers_install():
    to_dist = metadata.packages_distributions()
    reader = _reader_distributions()
    missing = {}
    for module, chapters in _chapter_imports().items():
        if module in sys.stdlib_module_names or module in ("transformer_core", "attention_book"):
            continue
        if any((ROOT / folder / f"{module}.py").exists() for folder in LOCAL_FOLDERS):
            continue  # the repository's own scripts, which a chapter puts on sys.path
        dists = {d.lower().replace("_", "-") for d in to_dist.get(module, [])}
        if not dists & reader:
            missing[module] = sorted(chapters)
    assert not missing, (
        f"chapters import modules that `make lab` does not install: {missing}; add their distribution "
        "to the book extra in pyproject.toml (and environment.yml)"
    )
