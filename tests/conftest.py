"""Hooks for tests/ only (the repository's conftest.py serves the chapters' nbval run too)."""

from __future__ import annotations

from _optional import missing


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs(condition, reason): skip without it (fail under CI=true); see tests/_optional.py",
    )


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs"):
        condition, reason = mark.args
        if not condition:
            missing(reason)
