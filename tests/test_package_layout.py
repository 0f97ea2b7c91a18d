"""Two packages, imports one way: transformer_core (the library) never imports attention_book (the
book's exercise checks and figures, in book/), installs without it, and needs matplotlib and
ipywidgets only for transformer_core.viz, when a name of it is used."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli, the same parser
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "transformer_core"
BOOK = REPO / "book"


def _imported_modules(path: Path) -> set[str]:
    """Every module a source file imports: import statements and import_module("...") calls."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def test_no_library_source_imports_the_book_package():
    offenders = sorted(
        f"{path.relative_to(REPO)} imports {name}"
        for path in LIBRARY.rglob("*.py")
        for name in _imported_modules(path)
        if name.split(".")[0] == "attention_book"
    )
    assert not offenders, (
        "transformer_core must not import the book's package (attention_book imports "
        "transformer_core, never the reverse):\n  " + "\n  ".join(offenders)
    )


def test_the_book_package_is_outside_the_library():
    assert not (LIBRARY / "exercises").exists() and not (LIBRARY / "viz" / "figures.py").exists()
    library = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    book = tomllib.loads((BOOK / "pyproject.toml").read_text(encoding="utf-8"))
    assert library["tool"]["setuptools"]["packages"]["find"]["include"] == ["transformer_core*"]
    assert book["tool"]["setuptools"]["packages"]["find"]["include"] == ["attention_book*"]
    assert (BOOK / "attention_book" / "exercises" / "_checker.py").is_file()
    # the story corpus's ground truth (its grammar, entropy floor, translation task) is the book's
    for module in ("grammar", "floor", "translation"):
        assert not (LIBRARY / f"{module}.py").exists() and (BOOK / "attention_book" / f"{module}.py").is_file()


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    env.pop("MPLBACKEND", None)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


BLOCK = """
import sys

class Block:
    '''Refuse to import these packages, as on a machine that does not have them.'''
    def __init__(self, *names):
        self.names = names
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, Block(*BLOCKED))
"""


def test_every_library_module_imports_with_the_book_package_blocked():
    code = "BLOCKED = ('attention_book',)\n" + BLOCK + """
import pkgutil
import transformer_core
from transformer_core import viz

names = [m.name for m in pkgutil.walk_packages(transformer_core.__path__, 'transformer_core.')]
for name in names:
    __import__(name)
for name in viz.__all__:
    getattr(viz, name)
assert not [m for m in sys.modules if m.startswith('attention_book')]
print(len(names), 'modules')
"""
    result = _run(code)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "modules" in result.stdout


def test_the_library_imports_without_matplotlib_and_ipywidgets():
    code = "BLOCKED = ('matplotlib', 'ipywidgets', 'attention_book')\n" + BLOCK + """
import transformer_core
import transformer_core.training
import transformer_core.viz as viz
from transformer_core.viz import LiveLossPlot  # draws nothing until a record arrives

try:
    viz.AttentionExplorer
except ImportError as err:
    assert "transformer_core[book]" in str(err), err
else:
    raise AssertionError("viz.AttentionExplorer imported without matplotlib")
assert not [m for m in sys.modules if m.split('.')[0] in BLOCKED]
print('ok')
"""
    result = _run(code)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")


def test_the_library_wheel_holds_transformer_core_alone(tmp_path):
    """`pip install .` builds this wheel: the library, its assets, nothing of the book."""
    src = tmp_path / "src"  # a copy, so that the build leaves no build/ or egg-info in the repo
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(LIBRARY, src / "transformer_core",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("transformer_core-*.whl")
    files = zipfile.ZipFile(wheel).namelist()
    packages = {f.split("/")[0] for f in files if not f.split("/")[0].endswith(".dist-info")}
    assert packages == {"transformer_core"}, packages
    assert "transformer_core/viz/attention.py" in files
    assert "transformer_core/assets/story_model.pt" in files
    assert not [f for f in files if "exercises" in f or "attention_book" in f]
