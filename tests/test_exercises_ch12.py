"""The chapter 12 exercise checks: a right answer passes, each usual mistake gets its own hint."""

from __future__ import annotations

import pytest
import torch

from attention_book.exercises import ch12
from transformer_core.distributed import shard_batch


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------------ FLOPs per token
def flops(param_coef=6, attn_coef=12):
    return lambda n, layers, t, d: param_coef * n + attn_coef * layers * t * d


def test_flops_reference():
    assert ch12.flops_per_token(10, 2, 3, 4) == 60 + 12 * 24


def test_flops_right(capsys):
    ok, out = verdict(ch12.check_flops_per_token, flops(), capsys)
    assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (flops(2, 4), "forward pass only"),
        (flops(3, 6), "a multiply-add is 2 FLOPs"),
        (flops(1, 2), "a multiply-add is 2 FLOPs"),
        (flops(6, 0), "attention term is missing"),
        (flops(6, 4), "forward pass only"),
        (flops(6, 6), "2 FLOPs per multiply-add"),
        (flops(6, 24), "twice too much"),
        (lambda n, layers, t, d: 6 * n + 12 * 4 * t * d, "in proportion"),
        (lambda n, layers, t, d: None, "forget a `return`"),
    ],
)
def test_flops_mistakes(fn, words, capsys):
    ok, out = verdict(ch12.check_flops_per_token, fn, capsys)
    assert not ok and out.startswith("✗") and words in out, out


def test_flops_stub(capsys):
    ok, out = verdict(ch12.check_flops_per_token, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------ MFU
def mfu(param_coef=6, attn_coef=12, scale=1.0, inverted=False):
    def f(tps, n, layers, t, d, peak):
        achieved = tps * (param_coef * n + attn_coef * layers * t * d)
        return scale * (peak / achieved if inverted else achieved / peak)

    return f


def test_mfu_right(capsys):
    ok, out = verdict(ch12.check_mfu, mfu(), capsys)
    assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (mfu(2, 4), "forward-only FLOPs"),
        (mfu(3, 6), "multiply-add as 1 FLOP"),
        (mfu(6, 0), "attention term"),
        (mfu(scale=100), "percentage"),
        (mfu(inverted=True), "upside down"),
        (lambda tps, n, layers, t, d, peak: 0.5, "expected"),
    ],
)
def test_mfu_mistakes(fn, words, capsys):
    ok, out = verdict(ch12.check_mfu, fn, capsys)
    assert not ok and out.startswith("✗") and words in out, out


def test_mfu_stub(capsys):
    ok, out = verdict(ch12.check_mfu, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------ sharding
def contiguous(batch, rank, world):
    per = batch.shape[0] // world
    return batch[rank * per : (rank + 1) * per]


@pytest.mark.parametrize(
    "fn", [contiguous, lambda b, r, w: b[r::w], lambda b, r, w: shard_batch(b, r, w)]
)
def test_shard_right(fn, capsys):
    ok, out = verdict(ch12.check_shard, fn, capsys)
    assert ok and out.startswith("✓"), out


def overlapping(batch, rank, world):
    per = batch.shape[0] // world
    return batch[rank : rank + per]  # forgot to multiply by the shard size


def dropping(batch, rank, world):
    per = batch.shape[0] // world
    return batch[rank * per : (rank + 1) * per - 1]  # off by one at the end


def uneven(batch, rank, world):
    per = batch.shape[0] // world
    if world > 1 and rank == 0:
        return batch[: per + 1]
    if world > 1 and rank == 1:
        return batch[per + 1 : 2 * per]
    return contiguous(batch, rank, world)


@pytest.mark.parametrize(
    "fn, words",
    [
        (overlapping, "more than one rank"),
        (dropping, "went to no rank"),
        (lambda b, r, w: b[: b.shape[0] // w], "must depend on `rank`"),
        (uneven, "unequal size"),
        (lambda b, r, w: b[:, :2], "whole rows"),
        (lambda b, r, w: contiguous(b, r, w).tolist(), "return a tensor"),
        (lambda b, r, w: contiguous(b, r, w) + 1, "unchanged"),
    ],
)
def test_shard_mistakes(fn, words, capsys):
    ok, out = verdict(ch12.check_shard, fn, capsys)
    assert not ok and out.startswith("✗") and words in out, out


def test_shard_stub(capsys):
    ok, out = verdict(ch12.check_shard, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------ tokens per update
def test_tokens_right(capsys):
    ok, out = verdict(ch12.check_tokens_per_update, lambda b, a, w, t: b * a * w * t, capsys)
    assert ok and out.startswith("✓"), out
    assert ch12.tokens_per_update(4, 2, 2, 32) == 512


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda b, a, w, t: b * a * w, "number of sequences"),
        (lambda b, a, w, t: b * a * t, "multiply by world_size"),
        (lambda b, a, w, t: b * a * t / w, "world_size divides nothing"),
        (lambda b, a, w, t: b * w * t, "multiply by grad_accum"),
        (lambda b, a, w, t: b * t, "multiply by both"),
        (lambda b, a, w, t: b, "one rank's micro-batch"),
        (lambda b, a, w, t: b + a + w + t, "expected"),
    ],
)
def test_tokens_mistakes(fn, words, capsys):
    ok, out = verdict(ch12.check_tokens_per_update, fn, capsys)
    assert not ok and out.startswith("✗") and words in out, out


def test_tokens_stub(capsys):
    ok, out = verdict(ch12.check_tokens_per_update, stub, capsys)
    assert not ok and "not attempted" in out


def test_checks_leave_the_random_state_alone():
    state = torch.get_rng_state()
    ch12.check_shard(contiguous)
    assert torch.equal(state, torch.get_rng_state())


# ------------------------------------------------------------------------ critical_batch (experiment)
def test_critical_batch_accepts_the_measured_range(capsys):
    for found in (4, 8):
        ok, out = verdict(ch12.check_critical_batch, lambda found=found: found, capsys)
        assert ok is True, out
        assert out.startswith("✓ critical_batch")


@pytest.mark.parametrize(
    ("answer", "message", "hint"),
    [(2, "is too low", "0.05 nats above the best"), (32, "is too high", "the same 65,536 tokens")],
)
def test_critical_batch_explains_a_wrong_answer(answer, message, hint, capsys):
    ok, out = verdict(ch12.check_critical_batch, lambda: answer, capsys)
    assert ok is False
    assert out.startswith("✗ critical_batch")
    assert message in out and hint in out, out
    assert "4 to 8 sequences" in out


def test_critical_batch_not_attempted(capsys):
    ok, out = verdict(ch12.check_critical_batch, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out
