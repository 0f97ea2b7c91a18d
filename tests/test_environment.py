"""environment.yml (for conda users) installs what pyproject.toml declares, with the same bounds.

pyproject.toml is the source of truth: the package's dependencies plus its `book` and `dev`
extras. environment.yml lists each of them as a conda-forge package (under the conda-forge name
where it differs) with the same version specifier, or, for a package conda-forge lacks, as a pip
requirement; it must list nothing else besides python and pip, and it must install the project
itself with pip. When one file changes, this test names what the other one needs.
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
