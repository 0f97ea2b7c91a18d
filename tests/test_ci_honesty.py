"""CI that fails when something is wrong.

- `make test` checks what it could regenerate (the table of contents) instead of rewriting it, so
  a clean clone stays clean and a table of contents that misses a chapter fails the run.
- Both installs take their versions from requirements-lock.txt: `make lab` the book extra only,
  `make test` the dev extra as well.
- Under CI=true a test whose optional part is missing fails with the reason; on a reader's machine
  it is skipped with the same reason. Every skip in tests/ goes through tests/_optional.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import _optional
import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
MAKE = shutil.which("make")


def dry_run(*targets: str) -> str:
    """What `make -n -B TARGET` would run (every recipe line, nothing executed)."""
    if MAKE is None:
        _optional.missing("needs make (apt-get install make; .ci/run installs it)")
    proc = subprocess.run(
        [MAKE, "-n", "-B", "--no-print-directory", *targets],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_make_test_checks_the_table_of_contents_and_rewrites_nothing():
    commands = dry_run("test")
    toc_lines = [line for line in commands.splitlines() if "update_toc.py" in line]
    assert toc_lines, "make test no longer checks _toc.yml"
    assert all("--check" in line for line in toc_lines), (
        f"make test rewrites _toc.yml instead of checking it: {toc_lines}"
    )
    for rewriting in ("jupytext --to", "--sync", "nbconvert", "--inplace", "ruff check --fix",
                      "ruff format"):
        assert rewriting not in commands, f"make test runs a command that rewrites files: {rewriting}"


def test_make_test_installs_the_lock_with_both_extras():
    commands = dry_run("test")
    install = [line for line in commands.splitlines() if "pip install" in line and "-e" in line]
    assert install, "make test installs nothing"
    assert any("-r requirements-lock.txt" in line and "-c requirements-lock.txt" in line
               and '".[book,dev]"' in line for line in install), install
    assert "pip check" in commands


def test_make_lab_installs_the_book_extra_from_the_lock_without_the_dev_tools():
    commands = dry_run("lab")
    install = [line for line in commands.splitlines() if "pip install" in line and "-e" in line]
    assert len(install) == 1, install
    assert "-c requirements-lock.txt" in install[0] and '".[book]"' in install[0], install[0]
    assert "dev" not in install[0] and "-r requirements-lock.txt" not in install[0], install[0]
    assert "jupyter lab" in commands


def test_ci_checks_that_make_test_left_the_clone_clean():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "git status --porcelain" in ci


# ---------------------------------------------------------------------------- optional parts
SKIPS = re.compile(r"pytest\.skip\(|importorskip|mark\.skip\b|mark\.skipif|\.skip\(")


def test_every_skip_in_tests_goes_through_the_helper():
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name == "_optional.py" or path == Path(__file__):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if SKIPS.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, (
        "skip through tests/_optional.py (missing, require_module, needs, not_here), so that CI "
        "fails where a reader's machine skips:\n  " + "\n  ".join(offenders)
    )


@pytest.mark.parametrize("ci", ["true", "1", "TRUE", "yes"])
def test_missing_fails_under_ci(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="no widget frobnicator"):
        _optional.missing("no widget frobnicator")


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_missing_skips_on_a_readers_machine(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="no widget frobnicator"):
        _optional.missing("no widget frobnicator")
    with pytest.raises(pytest.skip.Exception, match="no_such_module_here"):
        _optional.require_module("no_such_module_here", "needs the frobnicator")


def test_require_module_returns_the_module():
    assert _optional.require_module("json").dumps([1]) == "[1]"


SAMPLE = textwrap.dedent(
    """
    import pytest
    from _optional import missing, needs, not_here, require_module

    pytestmark = needs(True, "always there")

    @needs(False, "needs the frobnicator")
    def test_marked():
        pass

    def test_module():
        require_module("no_such_module_here", "needs no_such_module_here")

    def test_call():
        missing("no Chromium at /nowhere")

    @not_here(True, "this machine has a GPU")
    def test_not_here():
        pass

    def test_fine():
        pass
    """
)


@pytest.mark.parametrize("ci", ["true", None])
def test_a_test_run_skips_for_readers_and_fails_in_ci(tmp_path, ci):
    (tmp_path / "test_sample.py").write_text(SAMPLE, encoding="utf-8")
    shutil.copy(TESTS / "_optional.py", tmp_path)
    shutil.copy(TESTS / "conftest.py", tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), "-c", os.devnull, str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    if ci:
        assert proc.returncode == 1, out
        assert "2 failed, 1 passed, 1 skipped, 1 error" in out, out  # the mark fails in setup
        for reason in ("needs the frobnicator", "needs no_such_module_here", "no Chromium at /nowhere"):
            assert reason in out, out
    else:
        assert proc.returncode == 0, out
        assert "1 passed, 4 skipped" in out, out
