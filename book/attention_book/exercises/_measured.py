"""The check behind every experiment exercise: the reader measured a number; is it in the measured range?

An experiment exercise asks the reader to find something out by running the chapter's code (a
learning rate, a vocabulary size, a number of bits). Its answer is a number the reader's function
returns. The range it must fall in was measured by ``scripts/experiment_ranges.py`` over several
seeds (each check's constant says how); an answer below or above it gets a hint on what to look at.
"""

from __future__ import annotations

from collections.abc import Callable

from ._checker import Feedback, need_number, run_check


def check_measured(
    name: str,
    answer: Callable[[], object],
    low: float,
    high: float,
    *,
    unit: str = "",
    too_low: str,
    too_high: str,
) -> bool:
    """Call ``answer()`` and pass when its number lies in ``[low, high]``; explain a miss.

    ``too_low`` / ``too_high``: what a reader whose answer is below / above the range should look at.
    """

    def body() -> None:
        value = need_number(answer(), f"{getattr(answer, '__name__', 'your function')}()")
        span = f"{low:g}{unit}" if low == high else f"{low:g} to {high:g}{unit}"
        if value < low:
            raise Feedback(f"{value:g}{unit} is too low: runs of the experiment over three seeds give {span}. {too_low}")
        if value > high:
            raise Feedback(f"{value:g}{unit} is too high: runs of the experiment over three seeds give {span}. {too_high}")

    return run_check(name, body)
