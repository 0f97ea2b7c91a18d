"""Auto-checks for the chapters' exercises.

Each chapter has a module ``chNN`` here with one ``check_...`` function per exercise. A check runs the
reader's code on small inputs, compares it with transformer_core's answer, and prints friendly, specific
feedback: what went wrong and the most likely reason. Checks never raise on a wrong or unfinished
answer (so "Run all" still reaches the end of a chapter); they return ``True`` only when it passes.
Under nbgrader's autograder or validator (``NBGRADER_EXECUTION`` set) a check that did not pass
raises :class:`CheckFailed` after its message, since nbgrader counts a test cell as failed only
when it raises.

The chapters' exercise cells start as stubs that ``raise NotImplementedError``; the solutions live in
``chapters/solutions/`` and pass the same checks.
"""

from ._checker import CheckFailed, Feedback, run_check

__all__ = ["CheckFailed", "Feedback", "run_check"]
