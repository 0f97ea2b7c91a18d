"""Auto-checks for chapter 12, *Scaling out*.

The arithmetic checks probe the reader's function one input at a time (the parameter count, then
the context, ...), so that a hint can name the term that is off: the 2 FLOPs of a multiply-add, the
factor 3 of forward plus backward, the attention term. The sharding check feeds a batch of numbered
rows and looks for rows that two ranks share or that no rank holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._checker import Feedback, need_number, run_check
from ._measured import check_measured

__all__ = [
    "check_critical_batch",
    "check_flops_per_token",
    "check_mfu",
    "check_shard",
    "check_tokens_per_update",
    "flops_per_token",
    "mfu",
    "tokens_per_update",
]


# ---------------------------------------------------------------------------------- references
def flops_per_token(n_params: int, n_layer: int, context: int, d_model: int) -> float:
    """Training FLOPs per token: 6·N + 12·L·T·D (forward + backward, attention over all T keys)."""
    return 6 * n_params + 12 * n_layer * context * d_model


def mfu(tokens_per_s: float, n_params: int, n_layer: int, context: int, d_model: int, peak_flops: float) -> float:
    """Model FLOP utilisation, a fraction: training FLOP/s achieved over the peak FLOP/s."""
    return tokens_per_s * flops_per_token(n_params, n_layer, context, d_model) / peak_flops


def tokens_per_update(batch_per_rank: int, grad_accum: int, world_size: int, context: int) -> int:
    """Tokens behind one optimizer step: every rank, every micro-batch, every position."""
    return batch_per_rank * grad_accum * world_size * context


def _number(value: object, what: str) -> float:
    value = need_number(value, what)
    if not math.isfinite(value):
        raise Feedback(f"{what} returned {value}")
    return value


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


# ---------------------------------------------------------------------------------- FLOPs per token
def check_flops_per_token(fn: Callable[[int, int, int, int], float]) -> bool:
    """Check ``fn(n_params, n_layer, context, d_model)`` = 6·N + 12·L·T·D."""

    def body() -> None:
        N, L, T, D = 1_000_000, 4, 128, 256

        def f(n: int, layers: int, t: int, d: int) -> float:
            return _number(fn(n, layers, t, d), "your function")

        base = f(N, L, T, D)
        per_param = (f(N + 1000, L, T, D) - base) / 1000
        if not _close(per_param, 6):
            hints = {
                2: ("per parameter you count 2 FLOPs: that is the forward pass only. The backward pass "
                    "costs about twice the forward (a gradient for the activations and one for the "
                    "weights), so training is 3 × 2 = 6 FLOPs per parameter per token."),
                3: ("per parameter you count 3 FLOPs: the factor 3 for forward + backward is there, but "
                    "a multiply-add is 2 FLOPs (one multiply, one add): 2 × 3 = 6."),
                1: ("per parameter you count 1 FLOP: a multiply-add is 2 FLOPs, and forward + backward "
                    "is 3 times the forward: 6 per parameter per token."),
                12: ("per parameter you count 12 FLOPs: 6·N already holds forward and backward "
                     "(2 FLOPs per multiply-add × 3); the 12 belongs to the attention term 12·L·T·D."),
            }
            raise Feedback(hints.get(round(per_param), (
                f"each extra parameter adds {per_param:g} FLOPs in your count; expected 6 "
                "(2 per multiply-add, × 3 for forward + backward).")))
        attn = base - 6 * N
        unit = L * T * D
        per_ltd = attn / unit
        if _close(attn, 0):
            raise Feedback("the attention term is missing: q·kᵀ and weights·v do work that no parameter "
                           "counts, 12·L·T·D FLOPs per token (forward 4·T·D per layer, × 3).")
        if not _close(per_ltd, 12):
            hints = {
                4: ("the attention term is 4·L·T·D in your count: that is its forward pass only; "
                    "the backward costs twice as much again: 12·L·T·D."),
                6: ("the attention term is 6·L·T·D in your count; expected 12·L·T·D: q·kᵀ and weights·v "
                    "are T·D multiply-adds each, 2 FLOPs per multiply-add, × 3 for forward + backward. "
                    "(A causal mask skips half the keys, but this book, like the PaLM paper, counts "
                    "all T.)"),
                2: ("the attention term is 2·L·T·D in your count; expected 12·L·T·D: two products "
                    "(q·kᵀ and weights·v), 2 FLOPs per multiply-add, × 3 for forward + backward."),
                24: ("the attention term is 24·L·T·D in your count, twice too much: q·kᵀ and weights·v "
                     "are 2·T·D FLOPs each per token and layer, 4·T·D forward, 12·T·D with backward."),
            }
            raise Feedback(hints.get(round(per_ltd), (
                f"the attention term is {per_ltd:g}·L·T·D in your count; expected 12·L·T·D.")))
        for layers, t, d in ((2 * L, T, D), (L, 2 * T, D), (L, T, 2 * D)):
            got = f(N, layers, t, d)
            if not _close(got, flops_per_token(N, layers, t, d)):
                raise Feedback("the attention term should grow with each of n_layer, context and "
                               "d_model in proportion: 12 · n_layer · context · d_model.")

    return run_check("FLOPs per token", body)


# ---------------------------------------------------------------------------------- MFU
def check_mfu(fn: Callable[..., float]) -> bool:
    """Check ``fn(tokens_per_s, n_params, n_layer, context, d_model, peak_flops)``, a fraction."""

    def body() -> None:
        args = (2_000.0, 3_000_000, 4, 512, 256, 5e11)  # the attention term is a visible share
        want = mfu(*args)
        got = _number(fn(*args), "your function")
        if _close(got, want):
            for other in ((15_000.0, 800_000, 2, 64, 128, 1e11), (500.0, 85_000_000, 12, 1024, 768, 2e12)):
                if not _close(_number(fn(*other), "your function"), mfu(*other)):
                    raise Feedback("right for one configuration, wrong for another: use all six inputs.")
            return
        ratio = got / want
        N, L, T, D = args[1:5]
        only_params = 6 * N / flops_per_token(N, L, T, D)
        if _close(ratio, 100):
            raise Feedback("you returned a percentage; return the fraction (0.05, not 5).")
        if _close(ratio, 1 / 3):
            raise Feedback("you used forward-only FLOPs (2·N + 4·L·T·D). Training runs forward and "
                           "backward: 6·N + 12·L·T·D FLOPs per token.")
        if _close(ratio, 1 / 2):
            raise Feedback("you counted a multiply-add as 1 FLOP; it is 2: 6·N + 12·L·T·D per token.")
        if _close(ratio, only_params):
            raise Feedback("the attention term 12·L·T·D is missing from the FLOPs per token.")
        if _close(got, 1 / want):
            raise Feedback("upside down: MFU = achieved FLOP/s / peak FLOP/s, with achieved FLOP/s = "
                           "tokens/s × FLOPs per token.")
        raise Feedback(f"got {got:.4g}, expected {want:.4g}: MFU = tokens/s × (6·N + 12·L·T·D) / peak.")

    return run_check("model FLOP utilisation", body)


# ---------------------------------------------------------------------------------- sharding
def check_shard(fn: Callable[[Tensor, int, int], Tensor]) -> bool:
    """Check ``fn(batch, rank, world_size)``: equal, disjoint shards that cover the batch."""

    def body() -> None:
        for B, world in ((8, 2), (12, 3), (16, 4), (6, 1)):
            batch = torch.arange(B * 5).reshape(B, 5)  # row i holds 5i .. 5i+4: a row is its number
            shards = []
            for rank in range(world):
                out = fn(batch.clone(), rank, world)
                if not isinstance(out, Tensor):
                    raise Feedback(f"return a tensor (rows of the batch), got {type(out).__name__}")
                if out.dim() != 2 or out.shape[1] != 5:
                    raise Feedback(f"a shard keeps whole rows: expected shape (rows, 5) for a batch of shape "
                                   f"{tuple(batch.shape)}, got {tuple(out.shape)}")
                rows = (out[:, 0] // 5).tolist()
                if not torch.equal(out, batch[rows]):
                    raise Feedback("a shard should hold rows of the batch, unchanged.")
                shards.append(rows)
            sizes = [len(s) for s in shards]
            if world > 1 and all(s == shards[0] for s in shards):
                raise Feedback(f"every rank got the same rows {shards[0]}: the shard must depend on `rank`.")
            seen = [r for s in shards for r in s]
            twice = sorted({r for r in seen if seen.count(r) > 1})
            if twice:
                raise Feedback(f"with batch size {B} and world size {world}, rows {twice} went to more than "
                               "one rank (overlapping slices): that sample would count twice in the "
                               "averaged gradient.")
            missing = sorted(set(range(B)) - set(seen))
            if missing:
                raise Feedback(f"with batch size {B} and world size {world}, rows {missing} went to no rank: "
                               "those samples are dropped. Each rank needs B / world_size rows, "
                               "all ranks together every row once.")
            if len(set(sizes)) > 1:
                raise Feedback(f"shards of unequal size {sizes}: the mean of the ranks' mean losses equals "
                               "the batch mean only when every rank holds B / world_size rows.")

    return run_check("shard a batch", body)


# ---------------------------------------------------------------------------------- tokens per update
def check_tokens_per_update(fn: Callable[[int, int, int, int], int]) -> bool:
    """Check ``fn(batch_per_rank, grad_accum, world_size, context)``."""

    def body() -> None:
        b, a, w, t = 3, 5, 7, 11  # primes: a missing or extra factor shows
        want = tokens_per_update(b, a, w, t)
        got = _number(fn(b, a, w, t), "your function")
        if _close(got, want):
            if not _close(_number(fn(4, 2, 8, 64), "your function"), tokens_per_update(4, 2, 8, 64)):
                raise Feedback("right for one configuration, wrong for another: use all four inputs.")
            return
        ratio = got / want
        hints = [
            (1 / t, "that is the number of sequences; each sequence holds `context` tokens: multiply by it."),
            (1 / w, "every rank trains on its own batch_per_rank sequences: multiply by world_size."),
            (1 / w**2, "world_size divides nothing here: each rank has batch_per_rank sequences of its own, "
                       "so multiply by world_size."),
            (1 / a, "gradient accumulation adds grad_accum micro-batches to one update: multiply by grad_accum."),
            (1 / (a * w), "one update sums grad_accum micro-batches on each of world_size ranks: multiply "
                          "by both."),
            (1 / (a * w * t), "that is one rank's micro-batch in sequences; an update spans grad_accum "
                              "micro-batches on world_size ranks, each sequence `context` tokens."),
        ]
        for r, hint in hints:
            if _close(ratio, r):
                raise Feedback(hint)
        raise Feedback(f"got {got:g}, expected {want}: batch_per_rank × grad_accum × world_size × context.")

    return run_check("tokens per update", body)


# --------------------------------------------------------------------------------------------------
# Exercise 5 (an experiment): how large may the global batch grow?
# --------------------------------------------------------------------------------------------------

# Measured with `python scripts/experiment_ranges.py ch12`: a character-level GPT (2 layers, width
# 64, 4 heads, context 64) on the first 90% of the committed corpus, AdamW at a constant lr 3e-3,
# 65,536 training tokens for every batch size 2, 4, ..., 64 (so 512 down to 16 updates), the loss on
# 64 held-out windows of the last 10% (windows drawn with seed 99). Seeds 0, 1, 2 (initial weights
# and batches) gave 8, 4 and 8: within 0.05 nats of the best up to there, 0.08 to 0.13 nats worse at
# 16, 0.18 to 0.58 at 64. Accepted: 4 to 8 (the grid is powers of two; nothing between to widen by).
CRITICAL_BATCH = (4, 8)


def check_critical_batch(critical_batch: Callable[[], object]) -> bool:
    """The reader's ``critical_batch()`` returns the largest batch (sequences per update) they found
    within 0.05 nats of the best at the fixed token budget."""
    low, high = CRITICAL_BATCH
    return check_measured(
        "critical_batch",
        critical_batch,
        low,
        high,
        unit=" sequences",
        too_low=(
            "Batches of 4 and 8 sequences land within 0.05 nats of the best on every seed measured. "
            "Is your threshold 0.05 nats above the best loss (not 0.05 below it, or 5% of it)? And is "
            "the loss measured on the held-out windows, after training, with the model in eval mode?"
        ),
        too_high=(
            "Past 8 sequences the loss gets clearly worse at this budget (0.08 nats or more at 16). Did "
            "every batch size see the same 65,536 tokens, that is 65,536 / (64 x batch) updates? With "
            "the same number of updates instead, a bigger batch sees more data and always wins."
        ),
    )
