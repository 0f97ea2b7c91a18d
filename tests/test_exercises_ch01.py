"""The auto-checks of chapter 01's exercises: right answers pass, each typical mistake gets its own
specific message, a stub counts as "not attempted", and no check ever raises."""

from __future__ import annotations

import math

import pytest
import torch

from attention_book.exercises import ch01

# causal_dot_t uses k.T on a 3-D tensor on purpose (a typical mistake); torch warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:The use of `x.T` on tensors:UserWarning")

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    out = capsys.readouterr().out
    assert out.count("\n") == 1, f"a check prints exactly one line, got: {out!r}"
    return ok, out


def stub(*args, **kwargs):
    raise NotImplementedError


CHECKS = [
    ch01.check_stable_softmax,
    ch01.check_causal_attention_weights,
    ch01.check_lengths_to_mask,
    ch01.check_score_variance,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_stub_is_not_attempted(check, capsys):
    ok, out = verdict(check, stub, capsys)
    assert ok is False
    assert out.startswith("… ") and "not attempted yet" in out


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_crash_is_reported_not_raised(check, capsys):
    def crashes(*args, **kwargs):
        return {}["oops"]

    ok, out = verdict(check, crashes, capsys)
    assert ok is False
    assert "KeyError" in out


# --------------------------------------------------------------------------------------------------
# Exercise 1: stable softmax
# --------------------------------------------------------------------------------------------------


def softmax_right(x):
    z = x - x.max(dim=-1, keepdim=True).values
    e = torch.exp(z)
    return e / e.sum(dim=-1, keepdim=True)


def softmax_naive(x):
    e = torch.exp(x)
    return e / e.sum(dim=-1, keepdim=True)


def softmax_dim0(x):
    z = x - x.max(dim=0, keepdim=True).values
    e = torch.exp(z)
    return e / e.sum(dim=0, keepdim=True)


def softmax_global_sum(x):
    z = x - x.max()
    e = torch.exp(z)
    return e / e.sum()


def softmax_global_max(x):
    e = torch.exp(x - x.max())
    return e / e.sum(dim=-1, keepdim=True)


def softmax_no_keepdim(x):
    e = torch.exp(x - x.max(dim=-1).values)
    return e / e.sum(dim=-1, keepdim=True)


def softmax_in_place(x):
    x -= x.max(dim=-1, keepdim=True).values
    e = torch.exp(x)
    return e / e.sum(dim=-1, keepdim=True)


def softmax_dim1(x):
    z = x - x.max(dim=1, keepdim=True).values
    e = torch.exp(z)
    return e / e.sum(dim=1, keepdim=True)


def softmax_builtin(x):
    return torch.softmax(x, dim=-1)


def softmax_method(x):
    return x.softmax(-1)


def softmax_functional(x):
    return torch.nn.functional.softmax(x, dim=-1)


def test_softmax_right_answer_passes(capsys):
    ok, out = verdict(ch01.check_stable_softmax, softmax_right, capsys)
    assert ok is True, out
    assert out.startswith("✓ stable_softmax")


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (softmax_naive, "your result overflows for large inputs — did you subtract the max first?"),
        (softmax_dim0, "took the softmax over the first axis"),
        (softmax_global_sum, "divided by the sum of everything"),
        (softmax_global_max, "Subtract each row's own max"),
        (softmax_no_keepdim, "did you take the max without keepdim=True"),
        (softmax_in_place, "changed its input"),
        (softmax_dim1, "not for a (2, 3, 5) batch"),
        (softmax_builtin, "calls PyTorch's softmax"),
        (softmax_method, "calls PyTorch's softmax"),
        (softmax_functional, "calls PyTorch's softmax"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_softmax_mistakes_get_specific_feedback(wrong, message, capsys):
    ok, out = verdict(ch01.check_stable_softmax, wrong, capsys)
    assert ok is False
    assert out.startswith("✗ stable_softmax")
    assert message in out, out


def test_softmax_check_restores_torch_softmax(capsys):
    ch01.check_stable_softmax(softmax_builtin)
    capsys.readouterr()
    x = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(torch.softmax(x, dim=-1), softmax_right(x))
    torch.testing.assert_close(x.softmax(-1), softmax_right(x))
    torch.testing.assert_close(torch.nn.functional.softmax(x, dim=-1), softmax_right(x))
    assert "softmax" not in torch.Tensor.__dict__


def test_softmax_underflow_has_its_own_message(capsys):
    def subtracts_only_positive_max(x):  # survives overflow, not underflow
        m = x.max(dim=-1, keepdim=True).values.clamp(min=0)
        e = torch.exp(x - m)
        return e / e.sum(dim=-1, keepdim=True)

    ok, out = verdict(ch01.check_stable_softmax, subtracts_only_positive_max, capsys)
    assert ok is False
    assert "underflows" in out


# --------------------------------------------------------------------------------------------------
# Exercise 2: causal attention weights
# --------------------------------------------------------------------------------------------------


def causal_scores(q, k, scale=None):
    d_k = q.shape[-1]
    scale = 1 / math.sqrt(d_k) if scale is None else scale
    return q @ k.transpose(-2, -1) * scale


def tril(t):
    return torch.tril(torch.ones(t, t, dtype=torch.bool))


def causal_right(q, k):
    scores = causal_scores(q, k)
    T = q.shape[-2]
    scores = scores.masked_fill(~tril(T), float("-inf"))
    return torch.softmax(scores, dim=-1)


def causal_right_dtype_min(q, k):
    scores = causal_scores(q, k)
    T = q.shape[-2]
    return torch.softmax(scores.masked_fill(~tril(T), torch.finfo(scores.dtype).min), dim=-1)


def causal_right_renormalised(q, k):  # mask after the softmax, then renormalise: also correct
    w = torch.softmax(causal_scores(q, k), dim=-1) * tril(q.shape[-2])
    return w / w.sum(dim=-1, keepdim=True)


def causal_no_mask(q, k):
    return torch.softmax(causal_scores(q, k), dim=-1)


def causal_upside_down(q, k):
    T = q.shape[-2]
    keep = torch.triu(torch.ones(T, T, dtype=torch.bool))
    return torch.softmax(causal_scores(q, k).masked_fill(~keep, float("-inf")), dim=-1)


def causal_upside_down_strict(q, k):
    T = q.shape[-2]
    keep = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    return torch.softmax(causal_scores(q, k).masked_fill(~keep, float("-inf")), dim=-1)


def causal_hides_diagonal(q, k):
    T = q.shape[-2]
    keep = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)
    return torch.softmax(causal_scores(q, k).masked_fill(~keep, float("-inf")), dim=-1)


def causal_hides_diagonal_dtype_min(q, k):
    T = q.shape[-2]
    keep = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)
    scores = causal_scores(q, k)
    return torch.softmax(scores.masked_fill(~keep, torch.finfo(scores.dtype).min), dim=-1)


def causal_mask_after_softmax(q, k):
    return torch.softmax(causal_scores(q, k), dim=-1) * tril(q.shape[-2])


def causal_wrong_axis(q, k):
    T = q.shape[-2]
    return torch.softmax(causal_scores(q, k).masked_fill(~tril(T), float("-inf")), dim=-2)


def causal_unscaled(q, k):
    T = q.shape[-2]
    return torch.softmax(causal_scores(q, k, 1.0).masked_fill(~tril(T), float("-inf")), dim=-1)


def causal_by_d_k(q, k):
    T = q.shape[-2]
    scores = causal_scores(q, k, 1 / q.shape[-1])
    return torch.softmax(scores.masked_fill(~tril(T), float("-inf")), dim=-1)


def causal_by_sqrt_t(q, k):
    T = q.shape[-2]
    scores = causal_scores(q, k, 1 / math.sqrt(T))
    return torch.softmax(scores.masked_fill(~tril(T), float("-inf")), dim=-1)


def causal_transposed(q, k):
    T = q.shape[-2]
    scores = k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(~tril(T), float("-inf")), dim=-1)


def causal_dot_t(q, k):  # k.T: fine for one sequence, wrong for a batch
    T = q.shape[-2]
    scores = q @ k.T / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(~tril(T), float("-inf")), dim=-1)


def causal_minus_1e9(q, k):
    T = q.shape[-2]
    return torch.softmax(causal_scores(q, k).masked_fill(~tril(T), -1e9), dim=-1)


def causal_breaks_in_half(q, k):  # anything that goes wrong only in float16
    w = causal_right(q, k)
    return w * float("nan") if q.dtype == torch.float16 else w


@pytest.mark.parametrize(
    "right",
    [causal_right, causal_right_dtype_min, causal_right_renormalised],
    ids=lambda f: f.__name__,
)
def test_causal_right_answers_pass(right, capsys):
    ok, out = verdict(ch01.check_causal_attention_weights, right, capsys)
    assert ok is True, out
    assert out.startswith("✓ causal_attention_weights")


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (causal_no_mask, "— the mask must hide the future"),
        (causal_upside_down, "your mask is upside down"),
        (causal_upside_down_strict, "your mask is upside down"),
        (causal_hides_diagonal, "row 0 is NaN"),
        (causal_hides_diagonal_dtype_min, "no position attends to itself"),
        (causal_mask_after_softmax, "applied the mask to the weights after the softmax"),
        (causal_wrong_axis, "the columns sum to 1"),
        (causal_unscaled, "did you divide the scores by √d_k"),
        (causal_by_d_k, "you divided by d_k = 16"),
        (causal_by_sqrt_t, "the square root of the number of positions"),
        (causal_transposed, "k @ qᵀ instead of q @ kᵀ"),
        (causal_dot_t, "fails on a batch"),
        (causal_minus_1e9, "Did you mask with -1e9"),
        (causal_breaks_in_half, "correct in float32 but not in float16"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_causal_mistakes_get_specific_feedback(wrong, message, capsys):
    ok, out = verdict(ch01.check_causal_attention_weights, wrong, capsys)
    assert ok is False
    assert out.startswith("✗ causal_attention_weights")
    assert message in out, out


def test_causal_future_message_names_the_positions(capsys):
    ok, out = verdict(ch01.check_causal_attention_weights, causal_no_mask, capsys)
    assert "position 0 attends to position 1" in out


# --------------------------------------------------------------------------------------------------
# Exercise 3: padding mask from lengths
# --------------------------------------------------------------------------------------------------


def lengths_right(lengths, max_len):
    return torch.arange(max_len)[None, :] < lengths[:, None]


def lengths_right_loop(lengths, max_len):
    mask = torch.zeros(len(lengths), max_len, dtype=torch.bool)
    for b, n in enumerate(lengths.tolist()):
        mask[b, :n] = True
    return mask


def lengths_inverted(lengths, max_len):
    return torch.arange(max_len)[None, :] >= lengths[:, None]


def lengths_off_by_one(lengths, max_len):
    return torch.arange(max_len)[None, :] <= lengths[:, None]


def lengths_from_one(lengths, max_len):
    return torch.arange(1, max_len + 1)[None, :] < lengths[:, None]


def lengths_float(lengths, max_len):
    return (torch.arange(max_len)[None, :] < lengths[:, None]).float()


def lengths_transposed(lengths, max_len):
    return torch.arange(max_len)[:, None] < lengths[None, :]


def lengths_ignores_max_len(lengths, max_len):
    return torch.arange(int(lengths.max()))[None, :] < lengths[:, None]


def lengths_left_padded(lengths, max_len):
    return torch.arange(max_len)[None, :] >= (max_len - lengths)[:, None]


@pytest.mark.parametrize("right", [lengths_right, lengths_right_loop], ids=lambda f: f.__name__)
def test_lengths_right_answers_pass(right, capsys):
    ok, out = verdict(ch01.check_lengths_to_mask, right, capsys)
    assert ok is True, out
    assert out.startswith("✓ lengths_to_mask")


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lengths_inverted, "you marked the padding True"),
        (lengths_off_by_one, "off by one: sequence 0 has length 3"),
        (lengths_from_one, "off by one"),
        (lengths_float, "return a bool tensor"),
        (lengths_transposed, "rows and columns are swapped"),
        (lengths_ignores_max_len, "must have max_len columns"),
        (lengths_left_padded, "real tokens at the end of each row"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_lengths_mistakes_get_specific_feedback(wrong, message, capsys):
    ok, out = verdict(ch01.check_lengths_to_mask, wrong, capsys)
    assert ok is False
    assert out.startswith("✗ lengths_to_mask")
    assert message in out, out


# --------------------------------------------------------------------------------------------------
# Exercise 4: the variance of q·k
# --------------------------------------------------------------------------------------------------


def _dots(d_k, sigma, n_samples, gen_seed=0):
    g = torch.Generator().manual_seed(gen_seed)
    q = torch.randn(n_samples, d_k, generator=g) * sigma
    k = torch.randn(n_samples, d_k, generator=g) * sigma
    return q, k


def variance_right(d_k, sigma=1.0, n_samples=10_000):
    q, k = _dots(d_k, sigma, n_samples)
    return (q * k).sum(dim=-1).var().item()


def variance_right_tensor(d_k, sigma=1.0, n_samples=10_000):
    q, k = _dots(d_k, sigma, n_samples)
    return torch.einsum("nd,nd->n", q, k).var()


def variance_std(d_k, sigma=1.0, n_samples=10_000):
    q, k = _dots(d_k, sigma, n_samples)
    return (q * k).sum(dim=-1).std().item()


def variance_elementwise(d_k, sigma=1.0, n_samples=10_000):
    q, k = _dots(d_k, sigma, n_samples)
    return (q * k).var().item()


def variance_scaled(d_k, sigma=1.0, n_samples=10_000):
    q, k = _dots(d_k, sigma, n_samples)
    return ((q * k).sum(dim=-1) / math.sqrt(d_k)).var().item()


def variance_ignores_sigma(d_k, sigma=1.0, n_samples=10_000):
    q, k = _dots(d_k, 1.0, n_samples)
    return (q * k).sum(dim=-1).var().item()


def variance_sigma_once(d_k, sigma=1.0, n_samples=10_000):
    q, k = _dots(d_k, 1.0, n_samples)
    return (q * sigma * k).sum(dim=-1).var().item()


def variance_sigma_squared(d_k, sigma=1.0, n_samples=10_000):
    q, k = _dots(d_k, sigma**2, n_samples)
    return (q * k).sum(dim=-1).var().item()


def variance_per_vector(d_k, sigma=1.0, n_samples=10_000):
    q, k = _dots(d_k, sigma, n_samples)
    return (q * k).sum(dim=-1)  # forgot the .var()


@pytest.mark.parametrize("right", [variance_right, variance_right_tensor], ids=lambda f: f.__name__)
def test_variance_right_answers_pass(right, capsys):
    ok, out = verdict(ch01.check_score_variance, right, capsys)
    assert ok is True, out
    assert out.startswith("✓ score_variance")


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (variance_std, "that is the standard deviation"),
        (variance_elementwise, "variance of a single product"),
        (variance_scaled, "already scaled score"),
        (variance_ignores_sigma, "did you scale the random vectors by sigma"),
        (variance_sigma_once, "scale only one of q and k"),
        (variance_sigma_squared, "multiply by sigma, not by sigma²"),
        (variance_per_vector, "should return one number"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_variance_mistakes_get_specific_feedback(wrong, message, capsys):
    ok, out = verdict(ch01.check_score_variance, wrong, capsys)
    assert ok is False
    assert out.startswith("✗ score_variance")
    assert message in out, out
