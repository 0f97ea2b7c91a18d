"""The chapter 12a exercise check: the measured range passes, each usual mistake gets its own hint."""

from __future__ import annotations

import pytest

from attention_book.exercises import ch12a


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


def test_smallest_miss_accepts_the_measured_range(capsys):
    for found in (0.0084, ch12a.SMALLEST_MISS[0], ch12a.SMALLEST_MISS[1]):
        ok, out = verdict(ch12a.check_smallest_miss, lambda found=found: found, capsys)
        assert ok is True, out
        assert out.startswith("✓ smallest_miss")


@pytest.mark.parametrize(
    ("answer", "message", "hint"),
    [(-0.0084, "is too low", "measured minus predicted"), (0.0377, "is too high", "the smallest of the three")],
)
def test_smallest_miss_explains_a_wrong_answer(answer, message, hint, capsys):
    ok, out = verdict(ch12a.check_smallest_miss, lambda: answer, capsys)
    assert ok is False
    assert out.startswith("✗ smallest_miss")
    assert message in out and hint in out, out
    assert "0.005 to 0.0172 nats/char" in out


def test_smallest_miss_not_attempted(capsys):
    ok, out = verdict(ch12a.check_smallest_miss, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out
