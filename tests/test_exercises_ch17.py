"""The chapter 17 exercise checks: a right answer passes, each usual mistake gets its own hint."""

from __future__ import annotations

import pytest
import torch

from attention_book.exercises import ch17
from transformer_core.t5 import relative_position_bucket


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def first_shared_by_search():
    b = relative_position_bucket(torch.arange(1, 200), True, 32, 128)
    return next(d + 1 for d in range(198) if b[d] == b[d + 1])


def test_first_shared_bucket_right(capsys):
    ok, out = verdict(ch17.check_first_shared_bucket, first_shared_by_search, capsys)
    assert ok and "✓" in out


@pytest.mark.parametrize(
    "answer, hint",
    [(4, "16 buckets"), (16, "causal"), (1, "causal"), (5, "still differ"), (12, "smaller offset"),
     (None, "return"), ("8", "one int")],
)
def test_first_shared_bucket_mistakes(answer, hint, capsys):
    ok, out = verdict(ch17.check_first_shared_bucket, lambda: answer, capsys)
    assert not ok and hint in out


def span_targets_right(ids, noise, sentinels):
    out, s = [], 0
    for i, (t, h) in enumerate(zip(ids, noise, strict=True)):
        if h and (i == 0 or not noise[i - 1]):
            out.append(sentinels[s])
            s += 1
        if h:
            out.append(t)
    return out + [sentinels[s]]


def test_span_targets_right(capsys):
    ok, out = verdict(ch17.check_span_targets, span_targets_right, capsys)
    assert ok and "✓" in out


def test_span_targets_mistakes(capsys):
    no_end = lambda ids, noise, s: span_targets_right(ids, noise, s)[:-1]  # noqa: E731
    assert "one more sentinel" in verdict(ch17.check_span_targets, no_end, capsys)[1]

    def kept(ids, noise, s):
        return span_targets_right(ids, [not h for h in noise], s)

    assert "hidden" in verdict(ch17.check_span_targets, kept, capsys)[1]

    def one_sentinel(ids, noise, s):
        return span_targets_right(ids, noise, [s[0]] * len(s))

    assert "own sentinel" in verdict(ch17.check_span_targets, one_sentinel, capsys)[1]

    def per_token(ids, noise, s):
        out, k = [], 0
        for t, h in zip(ids, noise, strict=True):
            if h:
                out += [s[k], t]
                k += 1
        return out + [s[k]]

    assert "one span" in verdict(ch17.check_span_targets, per_token, capsys)[1]
    assert "not attempted" in verdict(ch17.check_span_targets, lambda *a: (_ for _ in ()).throw(NotImplementedError), capsys)[1]
