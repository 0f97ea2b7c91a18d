"""The chapter 14 exercise checks: a right answer passes, each usual mistake gets its own hint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attention_book.exercises import ch14


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


# -------------------------------------------------------------------------------------- window mask
def mask_right(T, window):
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    return (i - j >= 0) & (i - j < window)


def test_window_mask_right(capsys):
    ok, out = verdict(ch14.check_window_mask, mask_right, capsys)
    assert ok and "✓" in out


def test_window_mask_by_triangles_is_right_too(capsys):
    def f(T, window):
        ones = torch.ones(T, T, dtype=torch.bool)
        return ones.tril() & ~ones.tril(-window)

    assert verdict(ch14.check_window_mask, f, capsys)[0]


@pytest.mark.parametrize(
    "fn,hint",
    [
        (lambda T, w: ~mask_right(T, w), "inverted"),
        (lambda T, w: mask_right(T, w).T, "above the diagonal"),
        (lambda T, w: mask_right(T, w + 1), "one too many"),
        (lambda T, w: mask_right(T, max(w - 1, 1)), "one too few"),
        (lambda T, w: (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs() < w, "future too"),
        (lambda T, w: mask_right(T, w).int(), "bool tensor"),
        (lambda T, w: mask_right(T + 1, w), "expected"),
        (lambda T, w: mask_right(T, w).tolist(), "torch.Tensor"),
        (lambda T, w: torch.ones(T, T, dtype=torch.bool).tril(), "differs from the band"),
    ],
)
def test_window_mask_mistakes(fn, hint, capsys):
    ok, out = verdict(ch14.check_window_mask, fn, capsys)
    assert not ok and "✗" in out and hint in out, out


def test_window_mask_stub(capsys):
    ok, out = verdict(ch14.check_window_mask, stub, capsys)
    assert not ok and "not attempted" in out


# -------------------------------------------------------------------------------------- linear attention RNN
def phi(x):
    return F.elu(x) + 1


def rnn(q, k, v, eps=1e-6, late=False, norm=True, feature=True, reset=False):
    B, H, T, d = q.shape
    fq, fk = (phi(q), phi(k)) if feature else (q, k)
    S = q.new_zeros(B, H, d, v.shape[-1])
    z = q.new_zeros(B, H, d)
    outs = []
    for i in range(T):
        add_S = fk[:, :, i, :, None] * v[:, :, i, None, :]
        if not late:
            S = add_S if reset else S + add_S
            z = fk[:, :, i] if reset else z + fk[:, :, i]
        num = (fq[:, :, i, None, :] @ S).squeeze(-2)
        outs.append(num / ((fq[:, :, i] * z).sum(-1, keepdim=True) + eps) if norm else num)
        if late:
            S, z = S + add_S, z + fk[:, :, i]
    return torch.stack(outs, dim=2)


def test_linear_attention_rnn_right(capsys):
    ok, out = verdict(ch14.check_linear_attention_rnn, rnn, capsys)
    assert ok and "✓" in out


@pytest.mark.parametrize(
    "fn,hint",
    [
        (lambda q, k, v, eps=1e-6: rnn(q, k, v, late=True), "before"),
        (lambda q, k, v, eps=1e-6: rnn(q, k, v, norm=False), "normaliser"),
        (lambda q, k, v, eps=1e-6: rnn(q, k, v, feature=False), "feature map"),
        (lambda q, k, v, eps=1e-6: rnn(q, k, v, reset=True), "keep accumulating"),
        (lambda q, k, v, eps=1e-6: rnn(q, k, v).transpose(-2, -1), "dim 2"),
        (lambda q, k, v, eps=1e-6: rnn(q, k, v)[:, :, :, :4], "expected (B, H, T, d_v)"),
        (lambda q, k, v, eps=1e-6: rnn(q, k, v).tolist(), "torch.Tensor"),
        (lambda q, k, v, eps=1e-6: v, "keep accumulating"),
        (lambda q, k, v, eps=1e-6: 2 * rnn(q, k, v), "differ"),
    ],
)
def test_linear_attention_rnn_mistakes(fn, hint, capsys):
    ok, out = verdict(ch14.check_linear_attention_rnn, fn, capsys)
    assert not ok and "✗" in out and hint in out, out


def test_linear_attention_rnn_noncausal_mistake(capsys):
    def f(q, k, v, eps=1e-6):
        w = phi(q) @ phi(k).transpose(-2, -1)
        return (w / (w.sum(-1, keepdim=True) + eps)) @ v

    ok, out = verdict(ch14.check_linear_attention_rnn, f, capsys)
    assert not ok and "future included" in out


def test_linear_attention_rnn_in_place(capsys):
    def f(q, k, v, eps=1e-6):
        out = rnn(q, k, v)
        q.zero_()
        return out

    ok, out = verdict(ch14.check_linear_attention_rnn, f, capsys)
    assert not ok and "in place" in out


def test_linear_attention_rnn_crash_is_reported(capsys):
    ok, out = verdict(ch14.check_linear_attention_rnn, lambda q, k, v, eps=1e-6: q @ v, capsys)
    assert not ok and "raised RuntimeError" in out


# -------------------------------------------------------------------------------------- receptive field
def test_receptive_field_right(capsys):
    ok, out = verdict(ch14.check_receptive_field, lambda L, w: L * (w - 1) + 1, capsys)
    assert ok and "131,041" in out


@pytest.mark.parametrize(
    "fn,hint",
    [
        (lambda L, w: L * w, "once per layer"),
        (lambda L, w: w**L, "do not multiply"),
        (lambda L, w: L * (w - 1), "add 1"),
        (lambda L, w: w, "further back"),
        (lambda L, w: None, "whole number"),
        (lambda L, w: L * (w - 1) + 2, "returned"),
    ],
)
def test_receptive_field_mistakes(fn, hint, capsys):
    ok, out = verdict(ch14.check_receptive_field, fn, capsys)
    assert not ok and hint in out, out


def test_receptive_field_accepts_a_whole_float(capsys):
    assert verdict(ch14.check_receptive_field, lambda L, w: float(L * (w - 1) + 1), capsys)[0]


# -------------------------------------------------------------------------------------- score count
def count_by_mask(T, window):
    return int(mask_right(T, window).sum())


def test_window_score_count_right(capsys):
    ok, out = verdict(ch14.check_window_score_count, lambda T, w: sum(min(i + 1, w) for i in range(T)), capsys)
    assert ok and "1,966,336" in out


@pytest.mark.parametrize(
    "fn,hint",
    [
        (lambda T, w: T * w, "fewer keys"),
        (lambda T, w: T * T, "every (query, key) pair"),
        (lambda T, w: T * (T + 1) // 2, "full causal"),
        (lambda T, w: sum(min(i, w) for i in range(T)), "min(i + 1, window)"),
    ],
)
def test_window_score_count_mistakes(fn, hint, capsys):
    ok, out = verdict(ch14.check_window_score_count, fn, capsys)
    assert not ok and hint in out, out


def test_package_answers_match_brute_force():
    for T in range(1, 20):
        for w in range(1, 25):
            assert ch14.window_score_count(T, w) == count_by_mask(T, w)
    assert ch14.receptive_field(32, 4096) == 131_041


# -------------------------------------------------------------------------- best_window (experiment)
def test_best_window_accepts_the_measured_range(capsys):
    for found in (3, ch14.BEST_WINDOW[0], ch14.BEST_WINDOW[1]):
        ok, out = verdict(ch14.check_best_window, lambda found=found: found, capsys)
        assert ok is True, out
        assert out.startswith("✓ best_window")


@pytest.mark.parametrize(
    ("answer", "message", "hint"),
    [(2, "is too low", "not only the powers of two"), (8, "is too high", "not the highest")],
)
def test_best_window_explains_a_wrong_answer(answer, message, hint, capsys):
    ok, out = verdict(ch14.check_best_window, lambda: answer, capsys)
    assert ok is False
    assert out.startswith("✗ best_window")
    assert message in out and hint in out, out
    assert "runs of the experiment over three seeds give 3." in out


def test_best_window_not_attempted(capsys):
    ok, out = verdict(ch14.check_best_window, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out
