"""Auto-checks for chapter 17, *T5: the encoder-decoder since 2017*.

The bucket experiment is checked against ``relative_position_bucket`` itself (no answer is typed in),
and the usual wrong turns (the chapter's 16 buckets instead of T5-small's 32, the decoder's causal
buckets, an offset that still has a bucket of its own) get their own hint. The span-target check
compares the reader's targets with the chapter's rule on random masks and names the usual slips.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from transformer_core.t5 import relative_position_bucket

from ._checker import Feedback
from ._checker import run_seeded_check as _check

__all__ = ["check_first_shared_bucket", "check_span_targets"]


def _first_shared(bidirectional: bool, num_buckets: int, max_distance: int, sign: int = 1) -> int:
    offsets = sign * torch.arange(1, 4 * max_distance)
    b = relative_position_bucket(offsets, bidirectional, num_buckets, max_distance)
    return next(d + 1 for d in range(len(b) - 1) if b[d] == b[d + 1])


def check_first_shared_bucket(first_shared_bucket: Callable[[], object]) -> bool:
    """Check the smallest d >= 1 whose encoder bucket equals that of d + 1, for 32 buckets / 128."""

    def body() -> None:
        answer = first_shared_bucket()
        if answer is None:
            raise Feedback("first_shared_bucket returned None: did you forget a `return`?")
        if isinstance(answer, torch.Tensor) and answer.numel() == 1:
            answer = int(answer)
        if isinstance(answer, bool) or not isinstance(answer, int):
            raise Feedback(f"return one int, the offset d, got {answer!r}")
        right = _first_shared(True, 32, 128)
        if answer == right:
            return
        if answer == _first_shared(True, 16, 64):
            raise Feedback(f"{answer} is the answer for the chapter's 16 buckets and max_distance 64; "
                           "T5-small has num_buckets=32 and max_distance=128.")
        if answer == _first_shared(False, 32, 128, sign=-1) or answer == _first_shared(False, 32, 128):
            raise Feedback(f"{answer} comes from the decoder's causal buckets (bidirectional=False); "
                           "the encoder's are bidirectional=True, with half the buckets for each side.")
        b = relative_position_bucket(torch.tensor([answer, answer + 1]), True, 32, 128)
        if answer < right:
            raise Feedback(f"offsets {answer} and {answer + 1} have buckets {b[0]} and {b[1]}: "
                           "they still differ. Look further out.")
        raise Feedback(f"offsets {answer} and {answer + 1} do share a bucket ({b[0]}), but a "
                       "smaller offset already shares one with its neighbour: find the first.")

    return _check("first shared bucket", body)


def _targets(ids: list[int], noise: list[bool], sentinels: list[int]) -> list[int]:
    out: list[int] = []
    s = 0
    for i, (tok, hidden) in enumerate(zip(ids, noise, strict=True)):
        if hidden and (i == 0 or not noise[i - 1]):
            out.append(sentinels[s])
            s += 1
        if hidden:
            out.append(tok)
    return out + [sentinels[s]]


def check_span_targets(span_targets: Callable) -> bool:
    """Check ``span_targets(ids, noise, sentinels) -> list`` against T5's rule on random masks."""

    def body() -> None:
        sentinels = [99, 98, 97, 96, 95, 94, 93, 92, 91, 90, 89]
        cases = [([5, 6, 7, 8, 9, 10], [False, True, True, False, False, True])]
        for _ in range(20):
            n = int(torch.randint(4, 16, ()))
            noise = (torch.rand(n) < 0.3).tolist()
            cases.append((torch.randint(2, 80, (n,)).tolist(), noise))
        for ids, noise in cases:
            want = _targets(ids, noise, sentinels)
            got = span_targets(list(ids), list(noise), list(sentinels))
            if isinstance(got, torch.Tensor):
                got = got.tolist()
            if got is None:
                raise Feedback("span_targets returned None: did you forget a `return`?")
            got = list(got)
            if got == want:
                continue
            shown = f"for ids {ids} and noise {[int(x) for x in noise]} you returned {got}, T5's target is {want}"
            if got == want[:-1]:
                raise Feedback(f"{shown}: the target ends with one more sentinel after the last span.")
            if [t for t in got if t not in sentinels] == [t for t, h in zip(ids, noise, strict=True) if not h]:
                raise Feedback(f"{shown}: the target holds the *hidden* tokens; the kept ones stay in the input.")
            if len(got) == len(want) and set(got) & set(sentinels) == {sentinels[0]}:
                raise Feedback(f"{shown}: each span gets its own sentinel, sentinels[0], sentinels[1], ...")
            if sum(t in sentinels for t in got) > sum(t in sentinels for t in want):
                raise Feedback(f"{shown}: a run of neighbouring hidden tokens is one span with one sentinel.")
            raise Feedback(shown)

    return _check("span targets", body)
