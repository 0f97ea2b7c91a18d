"""Checks for the exercises of chapter 10, looking inside.

Each check runs the reader's code on small attention patterns, compares it with the package's
answer (:mod:`transformer_core.interpret`) and, when they differ, with the typical wrong answers,
so that the hint names the likely mistake. The checks use their own random numbers
(``torch.random.fork_rng``): running one does not change the reader's random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from transformer_core.interpret import attention_entropy, induction_score, previous_token_score

from ._checker import Feedback
from ._checker import run_seeded_check as _check
from ._measured import check_measured

__all__ = [
    "check_previous_token_score",
    "check_induction_score",
    "check_attention_entropy",
    "check_top_head",
    "check_heads_that_can_go",
]


def _random_causal(*shape: int, seed: int = 0) -> Tensor:
    """Causal attention weights (..., T, T): random softmax rows, exactly 0 above the diagonal."""
    g = torch.Generator().manual_seed(seed)
    T = shape[-1]
    scores = 2 * torch.randn(*shape, generator=g, dtype=torch.float64)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)


def _need_tensor(value: object, what: str) -> Tensor:
    if value is None:
        raise Feedback(f"{what} returned None: did you forget a `return`?")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = torch.tensor(float(value), dtype=torch.float64)
    if not isinstance(value, Tensor):
        raise Feedback(f"{what} should return a torch.Tensor, got {type(value).__name__}")
    return value


def _same(a: Tensor, b: Tensor, atol: float = 1e-6) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=1e-5))


def _close_values(a: Tensor, b: Tensor, atol: float = 1e-6) -> bool:
    """Same numbers, whatever the shape (for recognising a mistake that also broke the shape)."""
    return a.numel() == b.numel() and bool(
        torch.allclose(a.double().flatten(), b.double().flatten(), atol=atol, rtol=1e-5)
    )


def _call_score(fn: Callable[..., object], attn: Tensor, what: str, *args: object) -> Tensor:
    got = _need_tensor(fn(attn.clone(), *args), what)
    if torch.isnan(got).any():
        raise Feedback(f"{what} returned NaN for attention weights that hold no NaN")
    return got


def _shape_feedback(what: str, got: Tensor, attn: Tensor, want: Tensor) -> Feedback:
    if got.dim() == 0 and want.dim() > 0:
        return Feedback(
            f"{what} returned one number for weights of shape {tuple(attn.shape)}; expected one "
            f"score per attention matrix, shape {tuple(want.shape)}. Average over the queries "
            "only (dim=-1 of the diagonal), not over everything."
        )
    return Feedback(
        f"{what} returned shape {tuple(got.shape)} for weights of shape {tuple(attn.shape)}; "
        f"expected {tuple(want.shape)}: one score per (T, T) matrix"
    )


# --------------------------------------------------------------------------------------------------
# Exercise 1: the previous-token score
# --------------------------------------------------------------------------------------------------


def check_previous_token_score(fn: Callable[[Tensor], Tensor]) -> bool:
    """``fn(attn)``: ``(..., T, T) -> (...)``, the mean weight from query t to key t - 1."""

    def body() -> None:
        for shape in [(3, 7, 7), (2, 2, 5, 5), (6, 6)]:
            attn = _random_causal(*shape, seed=sum(shape))
            want = previous_token_score(attn)
            got = _call_score(fn, attn, "previous_token_score")
            if _same(got, want):
                continue
            diag = attn.diagonal(dim1=-2, dim2=-1)
            if _close_values(got, diag.mean(-1)):
                raise Feedback(
                    "you averaged the main diagonal: how much each token attends to *itself*. "
                    "The previous token of query t is key t - 1, one step below the diagonal: "
                    "attn.diagonal(offset=-1, dim1=-2, dim2=-1)."
                )
            if _close_values(got, torch.zeros_like(want)):
                raise Feedback(
                    "every score is 0: you probably read the diagonal above the main one "
                    "(offset=+1), query t -> key t + 1, the future, which the causal mask sets "
                    "to 0. The previous token is offset=-1."
                )
            sub = attn.diagonal(offset=-1, dim1=-2, dim2=-1)
            T = attn.shape[-1]
            if _close_values(got, sub.sum(-1)):
                raise Feedback(
                    "you summed the sub-diagonal; take its mean, so that a perfect "
                    "previous-token head scores 1 whatever the length"
                )
            if _close_values(got, sub.sum(-1) / T):
                raise Feedback(
                    f"you divided by T = {T}, but only T - 1 queries have a previous token "
                    "(query 0 has none): take the mean of the T - 1 sub-diagonal entries"
                )
            if _close_values(got, want):
                raise _shape_feedback("previous_token_score", got, attn, want)
            if got.shape != want.shape:
                raise _shape_feedback("previous_token_score", got, attn, want)
            raise Feedback(
                f"for weights of shape {tuple(attn.shape)} your scores differ from the mean weight "
                "on key t - 1 (e.g. yours "
                f"{got.flatten()[0].item():.4f}, expected {want.flatten()[0].item():.4f}). Take "
                "attn.diagonal(offset=-1, dim1=-2, dim2=-1) and average its last dimension."
            )

    return _check("previous_token_score", body)


# --------------------------------------------------------------------------------------------------
# Exercise 2: the induction score
# --------------------------------------------------------------------------------------------------


def check_induction_score(fn: Callable[[Tensor, int], Tensor]) -> bool:
    """``fn(attn, half_len)``: mean weight from query t to key t - half_len + 1, for t >= half_len."""

    def body() -> None:
        for shape, half in [((3, 10, 10), 5), ((2, 2, 8, 8), 4), ((12, 12), 6), ((4, 9, 9), 5)]:
            attn = _random_causal(*shape, seed=sum(shape) + half)
            want = induction_score(attn, half)
            got = _call_score(fn, attn, "induction_score", half)
            if _same(got, want):
                continue

            def stripe(offset: int, first: int = 1, attn: Tensor = attn, half: int = half) -> Tensor:
                # mean over queries t >= max(offset, half) of attn[t, t - offset]
                d = attn.diagonal(offset=-offset, dim1=-2, dim2=-1)  # queries offset ... T - 1
                start = max(half - offset, 0) if first else 0
                return d[..., start:].mean(-1)

            if _close_values(got, stripe(half)):
                raise Feedback(
                    f"you read key t - half_len = t - {half}: the previous occurrence of the "
                    "current token itself (a 'duplicate-token' pattern). The induction head "
                    "looks one step further, at the token that came *after* it, key t - half_len "
                    "+ 1: that is the token to predict next."
                )
            if _close_values(got, stripe(half - 2)):
                raise Feedback(
                    f"you read key t - half_len + 2 = t - {half - 2}, one position too far to the "
                    "right. The token after the previous occurrence of token t is at "
                    "t - half_len + 1: diagonal offset -(half_len - 1)."
                )
            if _close_values(got, stripe(half - 1, first=0)):
                raise Feedback(
                    "right stripe, but you also counted query half_len - 1 (the last token of the "
                    "first half, pointing at key 0). Only the repeated half has a previous "
                    "occurrence to look back to: drop the stripe's first entry, [..., 1:]."
                )
            if _close_values(got, attn.diagonal(offset=-(half - 1), dim1=-2, dim2=-1)[..., 1:].sum(-1)):
                raise Feedback("you summed the stripe; take its mean, so that a perfect induction "
                               "head scores 1")
            if got.shape != want.shape:
                raise _shape_feedback("induction_score", got, attn, want)
            raise Feedback(
                f"for T = {shape[-1]}, half_len = {half} your scores differ from the mean weight "
                f"from query t to key t - half_len + 1 over t = half_len ... T - 1 (e.g. yours "
                f"{got.flatten()[0].item():.4f}, expected {want.flatten()[0].item():.4f}). The "
                "stripe is attn.diagonal(offset=-(half_len - 1), dim1=-2, dim2=-1)[..., 1:]."
            )

    return _check("induction_score", body)


# --------------------------------------------------------------------------------------------------
# Exercise 3: the entropy of each row
# --------------------------------------------------------------------------------------------------


def check_attention_entropy(fn: Callable[[Tensor], Tensor]) -> bool:
    """``fn(attn)``: ``(..., T, T) -> (..., T)``, the entropy in nats of each row."""

    def body() -> None:
        for shape in [(2, 6, 6), (3, 1, 4, 4), (5, 5)]:
            attn = _random_causal(*shape, seed=7 + sum(shape))
            want = attention_entropy(attn)
            got = _need_tensor(fn(attn.clone()), "attention_entropy")
            if torch.isnan(got).any():
                raise Feedback(
                    "your entropies hold NaN. The masked (future) weights are exactly 0, and "
                    "0 * log(0) = 0 * -inf = NaN in floating point. Masked weights are 0: use "
                    "torch.xlogy(w, w) (which defines 0·log 0 = 0) or mask them out before the sum."
                )
            if _same(got, want, atol=1e-5):
                continue
            if _close_values(got, want / math.log(2), atol=1e-5):
                raise Feedback(
                    "your entropies are in bits (log base 2). Use the natural log, as the rest of "
                    "the book does (and the loss): entropies in nats."
                )
            if _close_values(got, -want, atol=1e-5):
                raise Feedback(
                    "your entropies are negative: the entropy is -Σ w·log w (each log w is <= 0, "
                    "so the minus sign makes it >= 0)"
                )
            if _close_values(got, want.mean(-1), atol=1e-5):
                raise Feedback(
                    f"you returned one number per matrix (shape {tuple(got.shape)}); this exercise "
                    f"asks for the entropy of every row, shape {tuple(want.shape)}: sum over the "
                    "keys (dim=-1) only"
                )
            if _close_values(got, want, atol=1e-5) or got.shape != want.shape:
                raise Feedback(
                    f"attention_entropy returned shape {tuple(got.shape)} for weights of shape "
                    f"{tuple(attn.shape)}; expected {tuple(want.shape)}: one entropy per row"
                )
            raise Feedback(
                "your entropies differ from -Σ_j w_j·log w_j over each row (e.g. row 0 of the first "
                f"matrix: yours {got.flatten()[0].item():.4f}, expected "
                f"{want.flatten()[0].item():.4f}). Sum over the keys, dim=-1."
            )
        # a sharp row and an even row, as a last sanity check
        one_hot = torch.eye(4, dtype=torch.float64)
        got = _need_tensor(fn(one_hot), "attention_entropy")
        if not _same(got, torch.zeros(4, dtype=torch.float64), atol=1e-5):
            raise Feedback("a row that puts all its weight on one key has entropy 0; yours is not")

    return _check("attention_entropy", body)


# --------------------------------------------------------------------------------------------------
# Exercise 4: the top head
# --------------------------------------------------------------------------------------------------


def check_top_head(fn: Callable[[Tensor], object]) -> bool:
    """``fn(scores)``: the ``(layer, head)`` of the largest entry of an ``(L, H)`` table."""

    def body() -> None:
        g = torch.Generator().manual_seed(3)
        tables = [
            torch.tensor([[0.10, 0.20, 0.05], [0.30, 0.90, 0.40]]),
            torch.tensor([[0.70, 0.10], [0.20, 0.30], [0.10, 0.05]]),
            torch.rand(2, 4, generator=g),
            torch.tensor([[0.2, 0.3, 0.1, 0.95]]),
        ]
        for scores in tables:
            L, H = scores.shape
            flat = int(scores.argmax())
            want = (flat // H, flat % H)
            got = fn(scores.clone())
            if got is None:
                raise Feedback("top_head returned None: did you forget a `return`?")
            if isinstance(got, Tensor) and got.numel() == 1 or isinstance(got, int):
                if int(got) == flat:
                    raise Feedback(
                        f"you returned {int(got)}, the index into the flattened table. Turn it into "
                        f"(layer, head): divmod(index, n_head) with n_head = scores.shape[1] = {H}."
                    )
                raise Feedback("top_head should return a pair (layer, head), not one number")
            try:
                layer, head = (int(v) for v in got)
            except (TypeError, ValueError):
                raise Feedback(
                    f"top_head should return a pair of ints (layer, head), got {got!r}"
                ) from None
            if (layer, head) == want:
                continue
            if (head, layer) == want:
                raise Feedback(
                    "you returned (head, layer): rows of the table are layers and columns are "
                    "heads, so the pair is (row, column) = (layer, head)"
                )
            low = int(scores.argmin())
            if (layer, head) == (low // H, low % H):
                raise Feedback("that is the head with the *lowest* score: use argmax, not argmin")
            if L > 1 and (layer, head) == (int(scores[:, 0].argmax()), 0):
                raise Feedback("you looked only at head 0 of each layer: search the whole table")
            raise Feedback(
                f"for the table\n{scores}\nthe top head is (layer, head) = {want}, yours was "
                f"{(layer, head)}. Hint: flat = int(scores.argmax()); divmod(flat, scores.shape[1])."
            )

    return _check("top_head", body)


# --------------------------------------------------------------------------------------------------
# Exercise 6 (an experiment): how many heads can go at once?
# --------------------------------------------------------------------------------------------------

# Measured with `python scripts/experiment_ranges.py ch10`: the story model in float64, the first 64
# windows that begin at a blank line of held-out stories (generate_corpus seeds 2, 3, 4 for seeds
# 0, 1, 2; seed 0's are the chapter's), heads ranked by the cost of removing each alone, then the n
# cheapest removed together. The largest n before the loss rises by 0.01 nats was 6, 8 and 7 for
# seeds 0, 1, 2 (12 of the 16 heads cost less than 0.01 alone on every seed; those 12 together
# cost 0.14-0.16). Accepted: that range, not widened (n is a count, the reader's scan steps by 1).
HEADS_THAT_CAN_GO = (6, 8)


def check_heads_that_can_go(heads_that_can_go: Callable[[], object]) -> bool:
    """The reader's ``heads_that_can_go()`` returns the number of heads they found."""
    low, high = HEADS_THAT_CAN_GO
    return check_measured(
        "heads_that_can_go",
        heads_that_can_go,
        low,
        high,
        unit=" heads",
        too_low=(
            "More heads than that can go together before the loss rises by 0.01 nats. Are the "
            "heads removed cheapest first (sorted by story_cost, ascending), all n at once, and "
            "is the rise measured against story_loss, the loss with every head?"
        ),
        too_high=(
            "With that many heads removed together the loss has already risen by 0.01 nats or "
            "more. Does each removal build on the last (ablate applied to its own result, not to "
            "the full model each time)? And is the answer the n just before the first rise of "
            "0.01, not a count of the heads whose single cost is below 0.01?"
        ),
    )
