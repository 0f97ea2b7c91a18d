"""The chapter 04 exercise checks: a right answer passes, each usual mistake gets its own hint."""

from __future__ import annotations

import pytest
import torch

from attention_book.exercises import ch04


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------------------ layer_norm
def ln_right(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def ln_over(dim):
    def f(x, weight, bias, eps=1e-5):
        mean = x.mean(dim=dim, keepdim=True)
        var = x.var(dim=dim, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + eps) * weight + bias

    return f


def ln_unbiased(x, weight, bias, eps=1e-5):
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) * weight + bias


def ln_no_eps(x, weight, bias, eps=1e-5):
    return (x - x.mean(-1, keepdim=True)) / x.var(-1, keepdim=True, unbiased=False).sqrt() * weight + bias


def ln_eps_outside(x, weight, bias, eps=1e-5):
    std = x.var(-1, keepdim=True, unbiased=False).sqrt()
    return (x - x.mean(-1, keepdim=True)) / (std + eps) * weight + bias


def ln_torch_std(x, weight, bias, eps=1e-5):
    return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + eps) * weight + bias


def ln_no_affine(x, weight, bias, eps=1e-5):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps)


def ln_swapped(x, weight, bias, eps=1e-5):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps) * bias + weight


def ln_no_keepdim(x, weight, bias, eps=1e-5):
    return x.mean(-1)


def ln_in_place(x, weight, bias, eps=1e-5):
    x -= x.mean(-1, keepdim=True)
    return x / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps) * weight + bias


def test_layer_norm_right(capsys):
    ok, out = verdict(ch04.check_layer_norm, ln_right, capsys)
    assert ok and out.startswith("✓")


@pytest.mark.parametrize(
    "fn, words",
    [
        (ln_over(0), "batch axis"),
        (ln_over(1), "sequence axis"),
        (ln_over((1, 2)), "whole sequence"),
        (ln_unbiased, "unbiased=False"),
        (ln_no_eps, "add eps to the variance"),
        (ln_eps_outside, "inside the square root"),
        (ln_torch_std, "two slips"),
        (ln_no_affine, "gain and bias are missing"),
        (ln_swapped, "swapped"),
        (ln_no_keepdim, "keepdim"),
        (ln_in_place, "in place"),
    ],
)
def test_layer_norm_mistakes(fn, words, capsys):
    ok, out = verdict(ch04.check_layer_norm, fn, capsys)
    assert not ok
    assert out.startswith("✗") and words in out, out


def test_layer_norm_stub(capsys):
    ok, out = verdict(ch04.check_layer_norm, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------ pre_norm_residual
@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda x, norm, sub: norm(x + sub(x)), "post-norm"),
        (lambda x, norm, sub: sub(norm(x)), "residual connection is missing"),
        (lambda x, norm, sub: norm(x) + sub(norm(x)), "added norm(x) back"),
        (lambda x, norm, sub: x + norm(sub(x)), "normalised the sublayer's output"),
        (lambda x, norm, sub: x + sub(x), "the norm is missing"),
        (lambda x, norm, sub: norm(x + sub(norm(x))), "normalised after adding"),
        (lambda x, norm, sub: x.add_(sub(norm(x))), "in place"),
        (lambda x, norm, sub: 2 * x, "differs"),
    ],
)
def test_pre_norm_residual_mistakes(fn, words, capsys):
    ok, out = verdict(ch04.check_pre_norm_residual, fn, capsys)
    assert not ok and words in out, out


def test_pre_norm_residual_right_and_stub(capsys):
    ok, out = verdict(ch04.check_pre_norm_residual, lambda x, norm, sub: x + sub(norm(x)), capsys)
    assert ok and out.startswith("✓")
    ok, out = verdict(ch04.check_pre_norm_residual, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------ block_parameters
def count(attn_mats=4, attn_bias=True, ffn_mats=2, ffn_bias=True, norms=2, norm_bias=True):
    def f(d_model, n_head, d_ff):
        n = attn_mats * d_model * d_model + (attn_mats * d_model if attn_bias else 0)
        n += ffn_mats * d_model * d_ff + ((d_ff + d_model) if ffn_bias else 0)
        n += norms * d_model * (2 if norm_bias else 1)
        return n

    return f


def test_block_parameters_right(capsys):
    ok, out = verdict(ch04.check_block_parameters, count(), capsys)
    assert ok and out.startswith("✓")
    assert ch04.block_parameter_count(768, 12, 3072) == 7_087_872


@pytest.mark.parametrize(
    "fn, words",
    [
        (count(attn_mats=3), "output projection W_O"),
        (count(ffn_mats=1), "you counted one"),
        (count(ffn_mats=3), "SwiGLU"),
        (count(attn_bias=False, ffn_bias=False), "biases are missing"),
        (count(norms=0), "LayerNorms"),
        (count(norm_bias=False), "weight *and* a bias"),
        (lambda d, h, f: count()(d, h, f) + h * 10, "changes with n_head"),
        (lambda d, h, f: count()(d, h, f) + 7, "constant term"),
        (lambda d, h, f: d**3, "a real TransformerBlock(768, 12, 3072) has 7,087,872"),
        (lambda d, h, f: "many", "should return a number"),
    ],
)
def test_block_parameters_mistakes(fn, words, capsys):
    ok, out = verdict(ch04.check_block_parameters, fn, capsys)
    assert not ok and words in out, out


def test_block_parameters_stub(capsys):
    ok, out = verdict(ch04.check_block_parameters, stub, capsys)
    assert not ok and "not attempted" in out


def test_checks_leave_the_readers_random_state_alone(capsys):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ch04.check_layer_norm(ln_right)
    ch04.check_pre_norm_residual(lambda x, norm, sub: x + sub(norm(x)))
    capsys.readouterr()
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- post_norm_breaking_lr (experiment)
def test_post_norm_breaking_lr_accepts_the_measured_range(capsys):
    for found in (0.011, *ch04.POST_NORM_BREAKING_LR):
        ok, out = verdict(ch04.check_post_norm_breaking_lr, lambda found=found: found, capsys)
        assert ok is True, out
        assert out.startswith("✓ post_norm_breaking_lr")


@pytest.mark.parametrize(
    ("answer", "message", "hint"),
    [(0.005, "is too low", "still learns"), (0.03, "is too high", "step the rate up")],
)
def test_post_norm_breaking_lr_explains_a_wrong_answer(answer, message, hint, capsys):
    ok, out = verdict(ch04.check_post_norm_breaking_lr, lambda: answer, capsys)
    assert ok is False
    assert out.startswith("✗ post_norm_breaking_lr")
    assert message in out and hint in out, out
    assert "0.01 to 0.012" in out


def test_post_norm_breaking_lr_not_attempted(capsys):
    ok, out = verdict(ch04.check_post_norm_breaking_lr, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out
