"""Auto-checks for the chapters' exercises.

Each chapter has a module ``chNN`` here with one ``check_...`` function per exercise. A check runs the
reader's code on small inputs, compares it with transformer_core's answer, and prints friendly, specific
feedback: what went wrong and the most likely reason. Checks never raise on a wrong or unfinished
answer (so "Run all" still reaches the end of a chapter); they return ``True`` only when it passes.

The chapters' exercise cells start as stubs that ``raise NotImplementedError``; the solutions live in
``chapters/solutions/`` and pass the same checks.
"""

from ._checker import Feedback, run_check

__all__ = ["Feedback", "run_check"]
