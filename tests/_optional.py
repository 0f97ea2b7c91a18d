"""One way for a test to say that an optional part of the setup is missing.

On a reader's machine a test whose optional part is absent (Chromium, playwright, ONNX Runtime,
Hugging Face transformers, torch.distributed with gloo, Node.js and npm, ...) is skipped with the
reason. Under ``CI=true`` the same test fails with that reason instead: CI installs every optional
part, so one that is missing there is a broken setup, not something to skip past quietly.

Every skip in tests/ goes through here (tests/test_ci_honesty.py checks it):

- ``missing(reason)``: skip, or fail under CI, right now (inside a test or a fixture);
- ``require_module(name, reason)``: import and return a module, or ``missing(reason)``;
- ``needs(condition, reason)``: a mark for a test or a module (``pytestmark = needs(...)``),
  checked before the test runs (tests/conftest.py);
- ``not_here(condition, reason)``: a mark for a test that does not apply to this machine (a GPU
  test on a machine without one): that is a skip everywhere, CI included.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

CI_VALUES = {"1", "true", "yes", "on"}


def in_ci() -> bool:
    """True under CI (the environment variable CI set to true, 1, yes or on)."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def missing(reason: str) -> None:
    """Skip the running test with ``reason``; under CI fail it with the same reason."""
    if in_ci():
        pytest.fail(
            f"{reason}\n(CI=true: an optional part that is missing fails the run instead of "
            "skipping; install it, see .ci/run)",
            pytrace=False,
        )
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str, reason: str | None = None) -> ModuleType:
    """``import name`` and return it; when it cannot be imported, :func:`missing` with ``reason``."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        missing(f"{reason or f'needs {name}'} ({err})")
        raise  # not reached: missing() skips or fails


def needs(condition: object, reason: str) -> pytest.MarkDecorator:
    """A mark: when ``condition`` is false the test is skipped (under CI: fails) with ``reason``."""
    return pytest.mark.needs(bool(condition), reason)


def not_here(condition: object, reason: str) -> pytest.MarkDecorator:
    """A mark for a test that does not apply to this machine: skipped when ``condition`` is true."""
    return pytest.mark.skipif(bool(condition), reason=reason)
