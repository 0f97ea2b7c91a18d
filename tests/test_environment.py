"""environment.yml (for conda users) installs what pyproject.toml declares, with the same bounds;
requirements-lock.txt pins a version of each within those bounds.

pyproject.toml is the source of truth: the package's dependencies plus its `book` and `dev`
extras. environment.yml lists each of them as a conda-forge package (under the conda-forge name
where it differs) with the same version specifier, or, for a package conda-forge lacks, as a pip
requirement; it must list nothing else besides python and pip, and it must install the project
itself with pip. When one file changes, this test names what the other one needs.

The book's own package, attention_book (book/pyproject.toml), is installed beside it (make install,
environment.yml): it requires transformer_core and otherwise only what pyproject.toml already
declares, with the same bounds, so the lock, made from pyproject.toml, pins all of it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli, the same parser
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
EXTRAS = ("book", "dev")
BOOK_PYPROJECT = REPO / "book" / "pyproject.toml"

# pip name -> conda-forge name, where they differ
CONDA_NAME = {
    "torch": "pytorch",
    "matplotlib": "matplotlib-base",  # matplotlib without the Qt GUI toolkit
}
NOT_FROM_PYPROJECT = {"python", "pip"}


def pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in EXTRAS:
        lines += project["optional-dependencies"][extra]
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs}


def environment() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text(encoding="utf-8"))


CONDA_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*$")


def conda_requirements() -> dict[str, SpecifierSet]:
    """conda dependencies (MatchSpecs such as 'numpy>=1.24' or 'python=3.11') by name."""
    found = {}
    for dep in environment()["dependencies"]:
        if isinstance(dep, dict):
            continue
        name, spec = CONDA_SPEC.match(dep).groups()
        if name in NOT_FROM_PYPROJECT:
            found[name] = spec
            continue
        assert "[" not in spec and " " not in spec, (
            f"environment.yml: write '{dep}' as name plus a pip-style specifier (numpy>=1.24), "
            "so that this test can compare it with pyproject.toml"
        )
        found[canonicalize_name(name)] = SpecifierSet(spec)
    return found


def pip_lines() -> list[str]:
    lines = []
    for dep in environment()["dependencies"]:
        if isinstance(dep, dict):
            lines += dep.get("pip", [])
    return lines


def pip_requirements() -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in pip_lines() if not line.startswith("-")]
    return {canonicalize_name(r.name): r for r in reqs}


def test_every_pyproject_requirement_is_in_environment_yml_with_the_same_bounds():
    conda, pip = conda_requirements(), pip_requirements()
    problems = []
    for name, req in sorted(pyproject_requirements().items()):
        conda_name = canonicalize_name(CONDA_NAME.get(name, name))
        if conda_name in conda or name in conda:
            found = conda_name if conda_name in conda else name
            got, where = conda[found], f"conda package '{found}'"
        elif name in pip:
            got, where = pip[name].specifier, f"pip requirement '{name}'"
        else:
            problems.append(f"{req} (pyproject.toml) is missing: add '{conda_name}{req.specifier}'")
            continue
        if got != req.specifier:
            problems.append(
                f"{req.name}: pyproject.toml says '{req.specifier}', environment.yml's {where} "
                f"says '{got}'"
            )
    if problems:
        pytest.fail(
            "environment.yml is out of step with pyproject.toml:\n  " + "\n  ".join(problems),
            pytrace=False,
        )


def test_environment_yml_installs_nothing_pyproject_does_not_declare():
    declared = {canonicalize_name(CONDA_NAME.get(n, n)) for n in pyproject_requirements()}
    declared |= set(pyproject_requirements())
    extra = sorted(
        name
        for name in [*conda_requirements(), *pip_requirements()]
        if name not in declared and name not in NOT_FROM_PYPROJECT
    )
    assert not extra, (
        f"environment.yml installs {extra}, which pyproject.toml does not declare: add them to "
        "pyproject.toml (dependencies or the book/dev extras) or remove them from environment.yml"
    )


def test_environment_yml_installs_the_package_with_its_extras():
    project_lines = [line for line in pip_lines() if line.startswith("-e")]
    assert project_lines, "environment.yml's pip section must install the book's own package: -e ."
    match = re.fullmatch(r"-e\s+\.(?:\[([^\]]*)\])?", project_lines[0].strip())
    extras = {e.strip() for e in (match.group(1) or "").split(",")} if match else set()
    assert match and extras >= set(EXTRAS), (
        f"environment.yml installs '{project_lines[0]}'; write -e .[{','.join(EXTRAS)}], or pip "
        "and conda disagree on what the environment holds"
    )


def test_environment_yml_installs_the_books_own_package():
    assert "-e ./book" in [line.strip() for line in pip_lines()], (
        "environment.yml's pip section must install the book's own package as well: -e ./book"
    )


def book_requirements() -> dict[str, Requirement]:
    project = tomllib.loads(BOOK_PYPROJECT.read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(line) for line in project["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


def test_the_book_package_requires_only_what_the_library_declares():
    """attention_book needs transformer_core (any version of this one) and otherwise packages of
    pyproject.toml with the same bounds: then the lock and environment.yml cover it too."""
    library = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    book = book_requirements()
    core = book.pop(canonicalize_name(library["name"]), None)
    assert core is not None, "book/pyproject.toml must require transformer_core"
    assert core.specifier.contains(library["version"]), (
        f"book/pyproject.toml wants {core}, but the library is {library['version']}"
    )
    declared = pyproject_requirements()
    problems = [
        f"{req} (book/pyproject.toml): pyproject.toml "
        + (f"says '{declared[name].specifier}'" if name in declared else "does not declare it")
        for name, req in sorted(book.items())
        if name not in declared or declared[name].specifier != req.specifier
    ]
    assert not problems, (
        "book/pyproject.toml needs what pyproject.toml (and so the lock) does not hold; add it to "
        "pyproject.toml (the book extra) with the same bounds, then make lock:\n  "
        + "\n  ".join(problems)
    )


def test_python_pin_satisfies_requires_python():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pin = conda_requirements().get("python", "")
    match = re.fullmatch(r"=?=?(\d+\.\d+)(?:\.\*)?", pin)
    if match is None:
        pytest.fail(
            f"environment.yml should pin python to a minor version (python=3.11), not {pin!r}"
        )
    assert Version(match.group(1)) in SpecifierSet(project["requires-python"]), (
        f"environment.yml pins python={match.group(1)}, outside pyproject's requires-python "
        f"{project['requires-python']}"
    )


# ---------------------------------------------------------------------------- the lock file
LOCK = REPO / "requirements-lock.txt"
LOCK_LINE = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)\s*(?:#\s*via\s+(.*))?$")
PROJECT_SOURCE = "transformer_core (pyproject.toml)"


def lock_entries() -> dict[str, tuple[Version, list[str]]]:
    """requirements-lock.txt: name -> (pinned version, what requires it)."""
    entries = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = LOCK_LINE.match(line.strip())
        assert match, f"requirements-lock.txt: cannot read {line!r}; regenerate it with make lock"
        name, version, via = match.groups()
        entries[canonicalize_name(name)] = (
            Version(version), [v.strip() for v in (via or "").split(",") if v.strip()]
        )
    return entries


def constraint_pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def test_the_lock_says_how_it_is_made():
    assert "#    make lock" in LOCK.read_text(encoding="utf-8"), (
        "requirements-lock.txt was not made by `make lock`: run make lock"
    )


def test_the_lock_pins_every_requirement_of_pyproject_within_its_range():
    lock = lock_entries()
    problems = []
    for name, req in sorted(pyproject_requirements().items()):
        if name not in lock:
            problems.append(f"{req} (pyproject.toml) is not in the lock")
        elif not req.specifier.contains(lock[name][0], prereleases=True):
            problems.append(f"{req} (pyproject.toml), but the lock pins {name}=={lock[name][0]}")
        elif PROJECT_SOURCE not in lock[name][1]:
            problems.append(f"the lock does not list {name} as required by pyproject.toml")
    for name, (_, via) in sorted(lock.items()):
        if PROJECT_SOURCE in via and name not in pyproject_requirements():
            problems.append(f"the lock says pyproject.toml requires {name}, which it no longer does")
    if problems:
        pytest.fail(
            "requirements-lock.txt is out of step with pyproject.toml (run make lock):\n  "
            + "\n  ".join(problems),
            pytrace=False,
        )


def test_the_lock_fits_environment_yml_and_constraints_txt():
    lock = lock_entries()
    problems = []
    for conda_name, spec in conda_requirements().items():
        if conda_name in NOT_FROM_PYPROJECT:
            continue
        pip_name = next((p for p, c in CONDA_NAME.items() if c == conda_name), conda_name)
        pinned = lock.get(canonicalize_name(pip_name))
        if pinned is None:
            problems.append(f"environment.yml installs {conda_name}, which the lock lacks")
        elif not spec.contains(pinned[0], prereleases=True):
            problems.append(f"environment.yml wants {conda_name}{spec}, the lock pins {pinned[0]}")
    for name, version in constraint_pins().items():
        pinned = lock.get(name)
        if pinned is None or pinned[0] != version:
            problems.append(f"constraints.txt pins {name}=={version}, the lock "
                            f"{'lacks it' if pinned is None else f'pins {pinned[0]}'}"
                            " (make lock drops torch's local label, +cpu)")
    if problems:
        pytest.fail(
            "requirements-lock.txt disagrees with environment.yml or constraints.txt (run make "
            "lock):\n  " + "\n  ".join(problems),
            pytrace=False,
        )


def test_the_lock_holds_nothing_that_nothing_requires():
    lock = lock_entries()
    orphans = sorted(
        name
        for name, (_, via) in lock.items()
        if not any(v == PROJECT_SOURCE or canonicalize_name(v) in lock for v in via)
    )
    assert not orphans, (
        f"requirements-lock.txt pins {orphans}, which nothing in it or in pyproject.toml requires: "
        "run make lock"
    )


def test_this_environment_holds_the_locked_versions():
    """make test installs the lock: what runs the tests is what the lock says."""
    from importlib import metadata

    wrong = []
    for name, (version, _) in sorted(lock_entries().items()):
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}=={version} is not installed")
            continue
        if installed.public != version.public:  # torch 2.13.0+cpu is the locked torch==2.13.0
            wrong.append(f"{name}: {installed} installed, the lock pins {version}")
    if wrong:
        pytest.fail(
            "this environment is not the locked one (make install reinstalls it; by hand: "
            "pip install -c requirements-lock.txt -r requirements-lock.txt -e '.[book,dev]' "
            "-e ./book):\n  "
            + "\n  ".join(wrong),
            pytrace=False,
        )
