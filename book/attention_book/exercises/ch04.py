"""Auto-checks for chapter 04, *The Transformer block*.

Each check runs the reader's function on small inputs, compares it with the package's answer and, when
they differ, recognises the usual mistakes (the wrong axis, the unbiased variance, a missing ``eps``, a
post-norm step where a pre-norm one was asked for, a forgotten bias in a parameter count) and says which.
The checks use their own random numbers (``torch.random.fork_rng``): running one does not change the
reader's random state.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer_core.blocks import TransformerBlock

from ._checker import Feedback
from ._checker import run_seeded_check as _check
from ._measured import check_measured

__all__ = [
    "check_layer_norm",
    "check_pre_norm_residual",
    "check_block_parameters",
    "check_post_norm_breaking_lr",
    "block_parameter_count",
]


def _close(a: Tensor, b: Tensor, atol: float = 1e-4, rtol: float = 1e-3) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True)


def _as_tensor(out: object, what: str, shape: tuple[int, ...]) -> Tensor:
    if not isinstance(out, Tensor):
        raise Feedback(f"{what} should return a torch.Tensor, got {type(out).__name__}. Did you forget `return`?")
    if tuple(out.shape) != shape:
        raise Feedback(
            f"{what} returned shape {tuple(out.shape)}, expected {shape}: a norm keeps the shape of its "
            f"input. (Did you forget keepdim=True when taking the mean?)"
        )
    return out


def _norm_input() -> Tensor:
    """(2, 3, 8) with rows of different means and scales, one constant row and one nearly constant row."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 8, generator=g) * torch.tensor([0.5, 2.0, 5.0])[:, None] + torch.tensor([1.0, -3.0, 0.5])[:, None]
    x[1, 1] = 2.5  # a constant row: variance 0, only eps keeps the division finite
    x[1, 2] = 0.7 + 1e-3 * torch.randn(8, generator=g)  # variance ~1e-6, smaller than eps: eps matters here
    return x


def _affine(d: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return 1.0 + 0.5 * torch.randn(d, generator=g), 0.5 * torch.randn(d, generator=g)


def _ln(x: Tensor, dim, unbiased: bool = False, eps: float = 1e-5, centre: bool = True) -> Tensor:
    mean = x.mean(dim=dim, keepdim=True) if centre else 0.0
    var = x.var(dim=dim, keepdim=True, unbiased=unbiased)
    return (x - mean) / torch.sqrt(var + eps)


# ------------------------------------------------------------------------------------------ LayerNorm
def check_layer_norm(layer_norm: Callable[..., Tensor]) -> bool:
    """Check ``layer_norm(x, weight, bias, eps=1e-5)`` against ``torch.nn.functional.layer_norm``."""

    def body() -> None:
        x = _norm_input()
        D = x.shape[-1]
        w, b = _affine(D, 5)
        eps = 1e-5
        x_before = x.clone()
        out = _as_tensor(layer_norm(x, w, b, eps=eps), "layer_norm", tuple(x.shape))
        if not torch.equal(x, x_before):
            raise Feedback("layer_norm changed its input x in place; compute a new tensor instead.")
        want = F.layer_norm(x, (D,), w, b, eps)
        if _close(out, want):
            return
        if not torch.isfinite(out).all():
            raise Feedback(
                "your output holds NaN or inf. One row of the test input is constant, so its variance is 0: "
                "add eps to the variance before the square root, (x - mean) / sqrt(var + eps)."
            )
        mistakes = [
            (_ln(x, 0) * w + b,
             "you normalised over the batch axis (dim 0). LayerNorm normalises each position's vector on "
             "its own: take the mean and variance over the last axis, dim=-1."),
            (_ln(x, 1) * w + b,
             "you normalised over the sequence axis (dim 1). LayerNorm normalises each position's vector "
             "on its own: take the mean and variance over the last axis, dim=-1."),
            (_ln(x, (1, 2)) * w + b,
             "you normalised over the whole sequence at once (dims 1 and 2). Each position gets its own "
             "mean and variance: dim=-1 only."),
            (_ln(x, -1, unbiased=True) * w + b,
             "close, but you used the unbiased variance. Use unbiased=False (or correction=0): LayerNorm "
             "divides by D, not D−1."),
            ((x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True, unbiased=False).sqrt() + eps) * w + b,
             "eps belongs inside the square root: (x - mean) / sqrt(var + eps), not / (std + eps). "
             "The difference shows on rows whose variance is near eps."),
            ((x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True, unbiased=True).sqrt() + eps) * w + b,
             "two slips: eps belongs inside the square root, sqrt(var + eps), and the variance should be "
             "the biased one (unbiased=False: LayerNorm divides by D, not D−1). torch.std is unbiased by default."),
            ((x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True, unbiased=False) + eps) * w + b,
             "you divided by the variance; divide by the standard deviation, sqrt(var + eps)."),
            (_ln(x, -1, centre=False) * w + b,
             "you forgot to subtract the mean before dividing: x_hat = (x - mean) / sqrt(var + eps)."),
            (_ln(x, -1),
             "the normalisation is right, but the learned gain and bias are missing: return x_hat * weight + bias."),
            (_ln(x, -1) * w,
             "the bias is missing: return x_hat * weight + bias."),
            (_ln(x, -1) + b,
             "the gain is missing: return x_hat * weight + bias."),
            (_ln(x, -1) * b + w,
             "weight and bias are swapped: the gain multiplies (x_hat * weight) and the bias is added."),
        ]
        for candidate, message in mistakes:
            if _close(out, candidate):
                raise Feedback(message)
        err = float((out - want).abs().max())
        raise Feedback(
            f"your output differs from F.layer_norm by up to {err:.3g}. Check each step: mean over dim=-1 "
            "(keepdim=True), biased variance, (x - mean) / sqrt(var + eps), then * weight + bias."
        )

    return _check("layer_norm", body)


# ------------------------------------------------------------------------------- pre-norm residual
def check_pre_norm_residual(pre_norm_residual: Callable[..., Tensor]) -> bool:
    """Check ``pre_norm_residual(x, norm, sublayer)`` == ``x + sublayer(norm(x))``."""

    def body() -> None:
        D = 8
        x = 3.0 + 2.0 * torch.randn(2, 5, D)
        norm = nn.LayerNorm(D)
        sub = nn.Linear(D, D)
        with torch.no_grad():
            norm.weight.copy_(1.0 + 0.5 * torch.randn(D))
            norm.bias.copy_(0.5 * torch.randn(D))
        x_before = x.clone()
        with torch.no_grad():
            out = _as_tensor(pre_norm_residual(x, norm, sub), "pre_norm_residual", tuple(x.shape))
            if not torch.equal(x, x_before):
                raise Feedback(
                    "pre_norm_residual changed x in place (x += ...). Return x + sublayer(norm(x)) as a new "
                    "tensor: the caller's x is the residual stream and must stay as it was."
                )
            want = x + sub(norm(x))
            if _close(out, want):
                return
            mistakes = [
                (norm(x + sub(x)),
                 "that's the post-norm step of the 2017 paper, LayerNorm(x + Sublayer(x)). Pre-norm "
                 "normalises the sublayer's *input* and leaves the residual path alone: x + sublayer(norm(x))."),
                (sub(norm(x)),
                 "the residual connection is missing: add the input back, x + sublayer(norm(x))."),
                (norm(x) + sub(norm(x)),
                 "you added norm(x) back instead of x. The residual path must carry x itself, untouched: "
                 "x + sublayer(norm(x)). That clean path is the whole point of pre-norm."),
                (x + norm(sub(x)),
                 "you normalised the sublayer's output; pre-norm normalises its input: x + sublayer(norm(x))."),
                (x + sub(x),
                 "the norm is missing: x + sublayer(norm(x))."),
                (norm(x + sub(norm(x))),
                 "you normalised after adding, too. In pre-norm the sum is not normalised (the next block's "
                 "norm, or the final norm, does that): return x + sublayer(norm(x))."),
            ]
            for candidate, message in mistakes:
                if _close(out, candidate):
                    raise Feedback(message)
        raise Feedback("your output differs from x + sublayer(norm(x)). Use the norm and sublayer you are given.")

    return _check("pre_norm_residual", body)


# ------------------------------------------------------------------------------- parameter count
def block_parameter_count(d_model: int, n_head: int, d_ff: int) -> int:
    """The number of parameters of ``TransformerBlock(d_model, n_head, d_ff)`` (biases and LayerNorms)."""
    return sum(p.numel() for p in TransformerBlock(d_model, n_head, d_ff).parameters())


# (d_model, d_ff) points at which the reader's count is evaluated; enough to fit 5 coefficients
_POINTS = [(8, 16), (16, 16), (8, 40), (16, 48), (32, 16), (24, 40), (32, 96), (40, 24)]
_TERMS = ("d_model²", "d_model·d_ff", "d_model", "d_ff", "1")
_WANT = (4, 2, 9, 1, 0)


def _fit(counts: list[float]) -> tuple[list[float], float]:
    A = torch.tensor([[d * d, d * f, d, f, 1] for d, f in _POINTS], dtype=torch.float64)
    y = torch.tensor(counts, dtype=torch.float64)[:, None]
    coef = torch.linalg.lstsq(A, y).solution[:, 0]
    resid = float((A @ coef[:, None] - y).abs().max())
    return [float(c) for c in coef], resid


def _diagnose(coef: list[int]) -> str:
    a, b, c, e, g = coef
    if a != 4:
        if a == 3:
            return ("attention: you counted three d_model×d_model matrices (W_Q, W_K, W_V). The output "
                    "projection W_O, which mixes the heads, is a fourth: 4·d_model² weights.")
        return (f"attention: your count has {a}·d_model² weights; attention has four d_model×d_model "
                "matrices (W_Q, W_K, W_V and the output projection W_O): 4·d_model².")
    if b != 2:
        if b == 1:
            return ("feed-forward: it has two matrices, W1 (d_model×d_ff) and W2 (d_ff×d_model): "
                    "2·d_model·d_ff weights, you counted one.")
        if b == 3:
            return ("feed-forward: three matrices is SwiGLU's count. This block's FFN (GELU) has two: "
                    "2·d_model·d_ff.")
        return f"feed-forward: expected 2·d_model·d_ff weights (W1 and W2), your count has {b}·d_model·d_ff."
    if e == 0 and c == 4:
        return ("the biases are missing: every nn.Linear here has one (4·d_model in attention, "
                "d_ff + d_model in the feed-forward).")
    if e != 1:
        return "feed-forward: W1's bias has d_ff entries (one per hidden unit); your count has " + (
            "none." if e == 0 else f"{e}·d_ff.")
    if c != 9:
        hints = {
            5: ("4·d_model parameters are missing: the two LayerNorms (a weight and a bias of d_model "
                "entries each), or the biases of the four attention projections."),
            7: "each LayerNorm has a weight *and* a bias (2·d_model per norm, 4·d_model for the two).",
            8: "d_model parameters are missing: the FFN's output bias (on W2) or the output projection's bias.",
            11: "there are two LayerNorms per block (before attention and before the FFN), not three.",
        }
        return hints.get(c, (
            f"the part proportional to d_model is {c}·d_model; expected 9·d_model: the four attention "
            "biases (4·d_model), the FFN's output bias (d_model) and two LayerNorms with weight and bias "
            "(4·d_model)."))
    return f"there is a constant term of {g} in your count; every part of the block scales with d_model or d_ff."


def check_block_parameters(block_parameters: Callable[[int, int, int], int]) -> bool:
    """Check ``block_parameters(d_model, n_head, d_ff)`` against a real :class:`TransformerBlock`."""

    def body() -> None:
        first = block_parameters(768, 12, 3072)
        if not isinstance(first, (int, float)) or isinstance(first, bool):
            raise Feedback(f"block_parameters should return a number, got {type(first).__name__}.")
        if block_parameters(768, 1, 3072) != first or block_parameters(768, 24, 3072) != first:
            raise Feedback(
                "your count changes with n_head. It shouldn't: the heads split d_model between them, "
                "so W_Q, W_K, W_V and W_O are d_model×d_model whatever the number of heads."
            )
        counts = [float(block_parameters(d, 4 if d % 4 == 0 else 1, f)) for d, f in _POINTS]
        if all(block_parameter_count(d, 1, f) == c for (d, f), c in zip(_POINTS, counts, strict=True)):
            if first != block_parameter_count(768, 12, 3072):
                raise Feedback("right for small blocks, but not for GPT-2's (d_model=768, d_ff=3072).")
            return
        coef, resid = _fit(counts)
        if resid > 0.5:
            raise Feedback(
                f"your count for a GPT-2 small block is {first:,}; a real TransformerBlock(768, 12, 3072) "
                f"has {block_parameter_count(768, 12, 3072):,}. Add up attention (W_Q, W_K, W_V, W_O with "
                "biases), the feed-forward (W1, W2 with biases) and two LayerNorms."
            )
        rounded = [round(c) for c in coef]
        raise Feedback(_diagnose(rounded))

    return _check("block_parameters", body)


# --------------------------------------------------------------------------------------------------
# Exercise 4 (an experiment): how fast may post-norm start?
# --------------------------------------------------------------------------------------------------

# Measured with `python scripts/experiment_ranges.py ch04`: the chapter's 8-block post-norm StackLM
# (width 32, PyTorch's default init), 150 updates of 16 windows of 32 characters, Adam (0.9, 0.98),
# constant rate, no warm-up, no clipping; the first rate on the grid 0.005, 0.006, ... whose final
# validation loss is within 0.1 nats of the character-frequency loss (2.906) or above it. Seeds 0,
# 1, 2 (weights and batch order) all gave 0.011 (at 0.010 they end at 2.11, 2.24, 2.28; at 0.011 at
# 2.90, 2.92, 2.92). Accepted: that widened by the grid step, 0.001, on each side (these runs are
# chaotic: another CPU's last bits can move the edge by a step).
POST_NORM_BREAKING_LR = (0.010, 0.012)


def check_post_norm_breaking_lr(post_norm_breaking_lr: Callable[[], object]) -> bool:
    """The reader's ``post_norm_breaking_lr()`` returns the learning rate they found."""
    low, high = POST_NORM_BREAKING_LR
    return check_measured(
        "post_norm_breaking_lr",
        post_norm_breaking_lr,
        low,
        high,
        too_low=(
            "At that rate the post-norm stack without warm-up still learns: its validation loss ends "
            "well below the character-frequency loss (at 0.01 the chapter's runs end near 2.1-2.3). "
            "Is your criterion 'within 0.1 nats of unigram, or above it', and did you train with "
            "warmup_steps=0 and grad_clip=None?"
        ),
        too_high=(
            "At that rate the stack has already stopped learning for some time: step the rate up by "
            "0.001 from 0.011 and stop at the first that fails. Did you train the pre-norm stack by "
            "mistake, or keep a warm-up or gradient clipping (either lets it learn at higher rates)?"
        ),
    )
