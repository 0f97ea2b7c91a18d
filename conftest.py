"""pytest hooks shared by tests/ and the chapters' nbval run.

After an nbval run, print each notebook's run time (kernel start plus every cell), so that every
`make test` log shows what each chapter costs on that machine against the book's budget of a
minute per chapter. A report, not a test: timings on shared machines are too noisy to assert.
"""

from __future__ import annotations

from collections import defaultdict

BUDGET_S = 60.0

_notebook_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] += report.duration  # setup (kernel start), call and teardown


def pytest_terminal_summary(terminalreporter):
    if not _notebook_seconds:
        return
    write = terminalreporter.write_line
    terminalreporter.section("notebook run times (nbval)")
    for path, seconds in sorted(_notebook_seconds.items()):
        flag = "  over the one-minute budget" if seconds > BUDGET_S else ""
        write(f"{seconds:7.1f} s  {path}{flag}")
    write(f"{sum(_notebook_seconds.values()):7.1f} s  in all")
