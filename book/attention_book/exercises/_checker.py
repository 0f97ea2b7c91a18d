"""The small machinery behind every exercise check."""

from __future__ import annotations

import os
from collections.abc import Callable


class Feedback(Exception):
    """Raised inside a check with a message for the reader: what is wrong and what to look at."""


class CheckFailed(AssertionError):
    """A check that did not pass, raised only under nbgrader (autograde or validate).

    nbgrader gives an autograded test cell its points unless the cell raises (a returned ``False``
    would count as a pass), and it tells the notebook it is grading by setting
    ``NBGRADER_EXECUTION``. Everywhere else a check prints its verdict and returns it.
    """


def _verdict(passed: bool, message: str) -> bool:
    print(message)
    if not passed and os.environ.get("NBGRADER_EXECUTION"):
        raise CheckFailed(message) from None
    return passed


def run_check(name: str, body: Callable[[], None]) -> bool:
    """Run one check and print its verdict; return True when the reader's answer passed.

    ``body`` raises :class:`Feedback` with a hint when the answer is wrong. A ``NotImplementedError``
    from the reader's stub means "not attempted yet"; any other exception is reported with its
    message, since a crash in the reader's code is feedback too.

    Under nbgrader (``NBGRADER_EXECUTION`` set) a check that did not pass raises
    :class:`CheckFailed` after printing, so that nbgrader gives its test cell no points.
    """
    try:
        body()
    except Feedback as fb:
        return _verdict(False, f"✗ {name}: {fb}")
    except NotImplementedError:
        return _verdict(
            False,
            f"… {name}: not attempted yet. Replace the `raise NotImplementedError` with your code.",
        )
    except Exception as err:  # the reader's code crashed: show why, briefly
        return _verdict(False, f"✗ {name}: your code raised {type(err).__name__}: {err}")
    return _verdict(True, f"✓ {name}: correct. Well done!")


def need_number(value: object, what: str) -> float:
    """The reader's function returned ``value``: one number (int, float or one-element tensor), as a float.

    Anything else raises :class:`Feedback` saying what came back instead (``None`` usually means a
    forgotten ``return``).
    """
    if value is None:
        raise Feedback(f"{what} returned None: did you forget a `return`?")
    if hasattr(value, "numel") and hasattr(value, "shape"):  # a torch tensor
        if value.numel() != 1:
            raise Feedback(f"{what} should return one number, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Feedback(f"{what} should return a number, got {type(value).__name__}")
    return float(value)


def run_seeded_check(name: str, body: Callable[[], None], seed: int = 0) -> bool:
    """:func:`run_check` with the check's own random numbers: seeded, and kept apart from the reader's.

    The body runs inside ``torch.random.fork_rng`` after ``torch.manual_seed(seed)``, so the check's
    inputs are the same every time and running it leaves the reader's random state as it was.
    """
    import torch  # here, so that checks without random numbers do not need torch at import

    def isolated() -> None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            body()

    return run_check(name, isolated)
