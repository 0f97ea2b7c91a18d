"""Checks for the exercises of chapter 02, self- and multi-head attention.

Each check runs the reader's code on small inputs, compares it with the package's answer and, when
they differ, compares it with the typical wrong answers, so that the hint names the likely mistake.
The checks use their own random numbers (``torch.random.fork_rng``): running one does not change
the reader's random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from transformer_core.attention import MultiHeadAttention, scaled_dot_product_attention

from ._checker import Feedback
from ._checker import run_seeded_check as _check
from ._measured import check_measured

__all__ = [
    "check_split_heads",
    "check_parameter_count",
    "check_causal_mask",
    "check_multi_query_attention",
    "check_steps_to_90_percent",
]


def _same(a: Tensor, b: Tensor, atol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=atol, rtol=1e-4)


def _need_tensor(value: object, what: str) -> Tensor:
    if value is None:
        raise Feedback(f"{what} returned None: did you forget a `return`?")
    if not isinstance(value, Tensor):
        raise Feedback(f"{what} should return a torch.Tensor, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------------------------------
# Exercise 1: split and merge heads
# --------------------------------------------------------------------------------------------------


def check_split_heads(split_heads: Callable[[Tensor, int], Tensor],
                      merge_heads: Callable[[Tensor], Tensor]) -> bool:
    """``split_heads(x, n_head)``: (B, T, D) -> (B, H, T, hd); ``merge_heads``: the inverse."""

    def body() -> None:
        for B, T, D, H in [(2, 5, 12, 3), (1, 6, 8, 4), (3, 4, 6, 1)]:
            hd = D // H
            # entry = 100·t + d (+ 10000·b): every number says where it came from
            x = (10000 * torch.arange(B)[:, None, None] + 100 * torch.arange(T)[None, :, None]
                 + torch.arange(D)[None, None, :]).float()  # (B, T, D)
            want = x.view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
            got = _need_tensor(split_heads(x.clone(), H), "split_heads")
            if got.shape != want.shape:
                if got.shape == (B, T, H, hd):
                    raise Feedback(
                        f"split_heads gave shape {tuple(got.shape)} = (B, T, H, hd): the last "
                        "dimension is split, but the heads must come before time. Add "
                        ".transpose(1, 2) to get (B, H, T, hd)."
                    )
                raise Feedback(
                    f"split_heads turned (B, T, D) = {(B, T, D)} with n_head={H} into shape "
                    f"{tuple(got.shape)}; expected (B, H, T, hd) = {tuple(want.shape)}"
                )
            if not torch.equal(got.float(), want):
                if torch.equal(got.float(), x.reshape(B, H, T, hd)):
                    raise Feedback(
                        "split_heads reshaped (B, T, D) straight to (B, H, T, hd): the shape is "
                        "right, but the head dimension got mixed with time (head 1 holds rows "
                        "of several positions). Use view(B, T, H, hd), then transpose(1, 2)."
                    )
                if torch.equal(got.float(), x.view(B, T, hd, H).permute(0, 3, 1, 2)):
                    raise Feedback(
                        "your head h holds features h, h+H, h+2H, ... (every H-th feature). Head h "
                        "should hold the consecutive features h·hd ... (h+1)·hd - 1: view the last "
                        "dimension as (H, hd), not (hd, H)."
                    )
                raise Feedback(
                    "split_heads has the right shape but the wrong contents: out[b, h, t] should "
                    "be x[b, t, h*hd:(h+1)*hd]. Use x.view(B, T, H, hd).transpose(1, 2)."
                )
            try:
                merged = merge_heads(want.contiguous())  # as attention outputs are
            except RuntimeError as err:
                if "view" in str(err) and "stride" in str(err):
                    raise Feedback(
                        "merge_heads: .view() needs contiguous memory, and after transpose the "
                        "tensor is a strided view. Call .contiguous() before .view(), or use "
                        ".reshape()."
                    ) from None
                raise
            merged = _need_tensor(merged, "merge_heads")
            if merged.shape != x.shape:
                raise Feedback(
                    f"merge_heads turned (B, H, T, hd) = {tuple(want.shape)} into shape "
                    f"{tuple(merged.shape)}; expected (B, T, D) = {(B, T, D)}"
                )
            if not torch.equal(merged.float(), x):
                if torch.equal(merged.float(), want.reshape(B, T, D)):
                    raise Feedback(
                        "merge_heads reshaped (B, H, T, hd) straight to (B, T, D): heads and time "
                        "got mixed. Move the heads back behind time first: transpose(1, 2), "
                        "then reshape to (B, T, D)."
                    )
                raise Feedback(
                    "merge_heads has the right shape but does not undo split_heads: "
                    "merge_heads(split_heads(x)) should give x back"
                )

    return _check("split_heads and merge_heads", body)


# --------------------------------------------------------------------------------------------------
# Exercise 2: the parameter count
# --------------------------------------------------------------------------------------------------

_COUNT_CASES = [(512, 8, True), (64, 4, False), (16, 1, True), (768, 12, True), (512, 64, False)]


def check_parameter_count(mha_parameter_count: Callable[..., int]) -> bool:
    """``mha_parameter_count(d_model, n_head, bias=True)`` = 4·D² + 4·D (4·D² without biases)."""

    def body() -> None:
        answers = {}
        for D, H, bias in _COUNT_CASES:
            got = mha_parameter_count(D, H, bias=bias)
            if isinstance(got, Tensor):
                got = got.item()
            if got is None:
                raise Feedback("mha_parameter_count returned None: did you forget a `return`?")
            if not isinstance(got, (int, float)) or isinstance(got, bool) or got != int(got):
                raise Feedback(f"a parameter count is a whole number; got {got!r} for D={D}, H={H}")
            answers[(D, H, bias)] = int(got)

        def truth(D: int, H: int, bias: bool) -> int:
            return sum(p.numel() for p in MultiHeadAttention(D, H, bias=bias).parameters())

        wrong = [case for case in _COUNT_CASES if answers[case] != truth(*case)]
        if not wrong:
            return
        for D, H, bias in _COUNT_CASES:
            if H > 1 and answers[(D, H, bias)] != mha_parameter_count(D, 1, bias=bias):
                raise Feedback(
                    f"your count changes with n_head (D={D}: {mha_parameter_count(D, 1, bias=bias):,} "
                    f"with 1 head, {answers[(D, H, bias)]:,} with {H}). Heads split the width D, "
                    "they don't add parameters: H matrices of D × D/H make one D × D matrix."
                )

        def matches(formula: Callable[[int, bool], int]) -> bool:
            return all(answers[(D, H, b)] == formula(D, b) for D, H, b in _COUNT_CASES)

        if matches(lambda D, b: 3 * D * D + (3 * D if b else 0)):
            raise Feedback(
                "that is the count of W_Q, W_K and W_V only: the output projection W^O "
                "(D × D, plus its bias) is part of the layer too"
            )
        if matches(lambda D, b: 4 * D * D):
            raise Feedback(
                "right for bias=False, but with bias=True each of the four projections also has "
                "a bias vector of length D: 4·D² + 4·D"
            )
        if matches(lambda D, b: 4 * D * D + 4 * D):
            raise Feedback("with bias=False there are no bias vectors: the count is 4·D²")
        if matches(lambda D, b: 4 * D * D + (D if b else 0)):
            raise Feedback("each of the four projections has its own bias of length D: 4·D, not D")
        D, H, bias = wrong[0]
        raise Feedback(
            f"for d_model={D}, n_head={H}, bias={bias} you counted {answers[(D, H, bias)]:,}, but the "
            f"layer has {truth(D, H, bias):,}. Count four D × D matrices (W_Q, W_K, W_V, W^O) and, "
            "with bias, four bias vectors of length D."
        )

    return _check("mha_parameter_count", body)


# --------------------------------------------------------------------------------------------------
# Exercise 3: the causal mask
# --------------------------------------------------------------------------------------------------


def check_causal_mask(build_causal_mask: Callable[[int], Tensor]) -> bool:
    """``build_causal_mask(T)``: (T, T) bool, True where query i may attend to key j (j <= i)."""

    def body() -> None:
        for T in (4, 1, 7):
            want = torch.tril(torch.ones(T, T, dtype=torch.bool))
            got = _need_tensor(build_causal_mask(T), "build_causal_mask")
            if got.shape != (T, T):
                raise Feedback(f"build_causal_mask({T}) has shape {tuple(got.shape)}; expected ({T}, {T})")
            if got.dtype != torch.bool:
                if got.is_floating_point() and torch.isneginf(got).any():
                    raise Feedback(
                        "that is a float mask (0 = keep, -inf = remove, added to the scores). "
                        "This exercise asks for a boolean mask: True = may attend."
                    )
                if torch.equal(got != 0, want):
                    raise Feedback(
                        f"the pattern is right, but the dtype is {got.dtype}. Make it "
                        "dtype=torch.bool: a float mask of 1s and 0s would be *added* to the "
                        "scores and hide nothing."
                    )
                raise Feedback(f"the mask should have dtype torch.bool, got {got.dtype}")
            if torch.equal(got, want):
                continue
            if torch.equal(got, ~want):
                raise Feedback(
                    "your mask is True where a query may NOT attend: that is the convention of "
                    "nn.MultiheadAttention. Here (and in F.scaled_dot_product_attention) True "
                    "means 'may attend'."
                )
            if torch.equal(got, want.T):
                raise Feedback(
                    "your mask is the upper triangle: query i would see keys j >= i, the future, "
                    "and not the past. Use torch.tril (j <= i)."
                )
            if torch.equal(got, torch.tril(want, diagonal=-1)):
                raise Feedback(
                    "the diagonal is missing: a token may attend to itself. Without it, the "
                    "first token has no key at all and its softmax gives NaN. Use torch.tril "
                    "with the default diagonal=0."
                )
            if bool(got.all()):
                raise Feedback("your mask is True everywhere: it hides nothing")
            raise Feedback(
                f"build_causal_mask({T}) is wrong: row i should be True for keys 0..i and False "
                "after. Try torch.tril(torch.ones(T, T, dtype=torch.bool))."
            )

    return _check("build_causal_mask", body)


# --------------------------------------------------------------------------------------------------
# Exercise 4: multi-query attention
# --------------------------------------------------------------------------------------------------


def _mqa_variant(ref: MultiHeadAttention, x: Tensor, is_causal: bool = True,
                 scale: float | None = None, out_proj: bool = True) -> Tensor:
    """Reference multi-query attention with one thing changed (for the typical mistakes)."""
    B, T, D = x.shape
    H, hd = ref.n_head, ref.head_dim
    q = ref.q_proj(x).view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
    k = ref.k_proj(x).view(B, T, 1, hd).transpose(1, 2)  # (B, 1, T, hd)
    v = ref.v_proj(x).view(B, T, 1, hd).transpose(1, 2)
    k, v = k.expand(B, H, T, hd), v.expand(B, H, T, hd)
    out, _ = scaled_dot_product_attention(q, k, v, is_causal=is_causal, need_weights=True, scale=scale)
    out = out.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
    return ref.out_proj(out) if out_proj else out


def _first(result: object) -> Tensor:
    """The output tensor of a forward that may also return weights."""
    if isinstance(result, tuple) and result:
        result = result[0]
    return _need_tensor(result, "forward")


def check_multi_query_attention(cls: Callable[[int, int], nn.Module]) -> bool:
    """``cls(d_model, n_head)``: causal multi-query attention, (B, T, D) -> (B, T, D)."""

    def body() -> None:
        D, H, B, T = 16, 4, 2, 5
        hd = D // H
        layer = cls(D, H)
        x = torch.randn(B, T, D)
        x_later = x.clone()
        x_later[:, -1] = torch.randn(B, D)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            if not isinstance(getattr(layer, name, None), nn.Linear):
                raise Feedback(
                    f"the layer needs the nn.Linear `{name}` of the exercise's __init__; keep the "
                    "__init__ as given and write forward"
                )
        for name in ("k_proj", "v_proj"):
            width = getattr(layer, name).out_features
            if width != hd:
                raise Feedback(
                    f"{name} produces {width} features. In multi-query attention all {H} query "
                    f"heads share ONE key head and ONE value head of width hd = D / H = {hd}; "
                    "keep the __init__ as given."
                )
        ref = MultiHeadAttention(D, H, n_kv_head=1)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            getattr(ref, name).load_state_dict(getattr(layer, name).state_dict())
        layer.eval()
        with torch.no_grad():
            got = _first(layer(x))
            if got.shape != (B, T, D):
                if got.shape == (B, H, T, hd):
                    raise Feedback(
                        f"forward returned the heads unmerged, shape {tuple(got.shape)}: merge them "
                        "back to (B, T, D) (transpose(1, 2), then reshape) and apply out_proj"
                    )
                raise Feedback(f"forward should return (B, T, D) = {(B, T, D)}, got {tuple(got.shape)}")
            got_later = _first(layer(x_later))
            if not _same(got[:, :-1], got_later[:, :-1]):
                raise Feedback(
                    "changing the LAST token changed the outputs at earlier positions: later "
                    "tokens leak into earlier ones. Mask the scores with a causal mask "
                    "(-inf above the diagonal) before the softmax."
                )
            want, _ = ref(x, is_causal=True)
            if _same(got, want):
                return
            if _same(got, _mqa_variant(ref, x, scale=1.0 / math.sqrt(D))):
                raise Feedback(
                    f"the scores are divided by √D = √{D}; each head's dot products have hd = {hd} "
                    f"terms, so divide by √hd = √{hd}"
                )
            if _same(got, _mqa_variant(ref, x, scale=1.0)):
                raise Feedback("the scores are not scaled: divide q·k by √hd before the softmax")
            if _same(got, _mqa_variant(ref, x, out_proj=False)):
                raise Feedback("the heads are merged, but out_proj (W^O) is missing at the end")
            diff = (got - want).abs().max().item()
            raise Feedback(
                f"the output differs from multi-query attention (largest difference {diff:.3g}). "
                "Check: q (B, H, T, hd) from q_proj; k and v (B, 1, T, hd) from k_proj and "
                "v_proj; scores q @ kᵀ / √hd with a causal mask; softmax; @ v; merge heads; out_proj."
            )

    return _check("MultiQueryAttention", body)


# --------------------------------------------------------------------------------------------------
# Exercise 5 (an experiment): when do the two heads split the work?
# --------------------------------------------------------------------------------------------------

# Measured with `python scripts/experiment_ranges.py ch02`: section 7's two-head model (one layer,
# width 32, Adam at lr 1e-2, batches of 64), scored every 10 steps on evaluate's 1,000 test
# sequences; the first step at 90% accuracy was 180, 230 and 210 for seeds 0, 1, 2 (the seed draws
# the initial weights and the batches). Accepted: that range widened by 10 on each side, the step
# of the reader's scan.
STEPS_TO_90_PERCENT = (170, 240)


def check_steps_to_90_percent(steps_to_90_percent: Callable[[], object]) -> bool:
    """The reader's ``steps_to_90_percent()`` returns the number of steps they found."""
    low, high = STEPS_TO_90_PERCENT
    return check_measured(
        "steps_to_90_percent",
        steps_to_90_percent,
        low,
        high,
        unit=" steps",
        too_low=(
            "That many steps do not yet give 90%. Is your accuracy evaluate's: both answers (one "
            "back and two back) on positions 2 to T-1 of the 1,000 test sequences? The digit one "
            "back alone passes 90% much sooner, and a training batch is not a test."
        ),
        too_high=(
            "Fewer steps already give 90%: scan below your answer in steps of 10 (a model trained "
            "for s steps is the longer run's first s steps). Did you train two heads, not one (one "
            "head stays near 57%), and score positions 2 to T-1 only (0 and 1 have no answer)?"
        ),
    )
