"""Auto-checks for chapter 01, *Attention as a soft lookup*.

One check per exercise. Each runs the reader's function on small inputs crafted so that the usual
mistakes show up (a softmax over the wrong axis, a mask that lets the future through, an overflow in
float16, ...), names the mistake when it recognises one, and otherwise shows where the answer
differs from the right one.

==========================================  ===============================================
exercise                                    check
==========================================  ===============================================
1. ``stable_softmax(x)``                    :func:`check_stable_softmax`
2. ``causal_attention_weights(q, k)``       :func:`check_causal_attention_weights`
3. ``lengths_to_mask(lengths, max_len)``    :func:`check_lengths_to_mask`
4. ``score_variance(d_k, sigma)``           :func:`check_score_variance`
==========================================  ===============================================
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from ._checker import Feedback, run_check

__all__ = [
    "check_stable_softmax",
    "check_causal_attention_weights",
    "check_lengths_to_mask",
    "check_score_variance",
]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _fmt(values: Tensor) -> str:
    """A short, rounded rendering of a small tensor for a feedback message."""
    if values.dtype == torch.bool:
        return str(values.int().tolist())
    flat = [f"{float(v):.3g}" for v in values.flatten()[:8]]
    more = ", ..." if values.numel() > 8 else ""
    return "[" + ", ".join(flat) + more + "]"


def _expect_tensor(out: object, shape: tuple[int, ...], what: str) -> Tensor:
    if isinstance(out, tuple):
        raise Feedback(f"{what} returned a tuple; return just the tensor")
    if not isinstance(out, Tensor):
        raise Feedback(f"{what} should return a torch.Tensor, but returned {type(out).__name__}")
    if tuple(out.shape) != shape:
        raise Feedback(f"{what} returned shape {tuple(out.shape)}, expected {shape}")
    return out


def _close(a: Tensor, b: Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol)


def _first_bad_row(rows_ok: Tensor) -> int:
    """Index of the first False in a 1-D bool tensor (0 when there is none)."""
    bad = (~rows_ok).nonzero()
    return int(bad[0, 0]) if len(bad) else 0


@contextlib.contextmanager
def _without_builtin_softmax() -> Iterator[None]:
    """Make torch's own softmax raise Feedback while the reader's code runs (exercise 1 builds it)."""

    def refuse(*args, **kwargs):
        raise Feedback(
            "your function calls PyTorch's softmax. The exercise is to build it yourself from "
            "torch.exp, .max and .sum; torch.softmax is what the check compares against"
        )

    patched = [
        (torch, "softmax"),
        (torch.nn.functional, "softmax"),
        (torch.special, "softmax"),
        (torch.Tensor, "softmax"),
    ]
    saved = [(obj, name, obj.__dict__.get(name, None)) for obj, name in patched]
    try:
        for obj, name in patched:
            setattr(obj, name, refuse)
        yield
    finally:
        for obj, name, original in saved:
            if original is None:
                delattr(obj, name)
            else:
                setattr(obj, name, original)


# --------------------------------------------------------------------------------------------------
# Exercise 1: a numerically stable softmax over the last axis
# --------------------------------------------------------------------------------------------------


def _reference_softmax(x: Tensor) -> Tensor:
    return torch.softmax(x.double(), dim=-1).to(x.dtype)


def check_stable_softmax(stable_softmax: Callable[[Tensor], Tensor]) -> bool:
    """Exercise 1: ``stable_softmax(x)`` is the softmax over the last axis, for any shape, and does
    not overflow for large scores. Built from ``torch.exp``, ``.max`` and ``.sum`` (not
    ``torch.softmax``), and without changing its input."""

    def call(x: Tensor) -> Tensor:
        given = x.clone()
        try:
            with _without_builtin_softmax():
                out = stable_softmax(x)
        except RuntimeError as err:
            if "must match the size" in str(err):
                raise Feedback(
                    f"the shapes don't line up ({err}). Did you take the max or the sum without "
                    "keepdim=True? Each row's max has to stay a column, shape (..., 1), so that it "
                    "broadcasts against its own row"
                ) from None
            raise
        if not torch.equal(x, given):
            raise Feedback(
                "your function changed its input: write m = x.max(...), then x - m, rather than "
                "x -= m (in-place operations overwrite the caller's scores)"
            )
        return _expect_tensor(out, tuple(x.shape), "stable_softmax")

    def body() -> None:
        # 1. Ordinary scores, one row per query. Square, so that a softmax over the wrong axis
        #    keeps the shape and shows up as rows that don't sum to one.
        x = torch.tensor(
            [
                [1.0, 2.0, 3.0, 4.0],
                [0.0, 0.0, 0.0, 0.0],
                [2.0, -1.0, 0.5, 3.0],
                [-3.0, 1.0, 4.0, 0.0],
            ]
        )
        out = call(x)
        expected = _reference_softmax(x)
        if not torch.isfinite(out).all():
            raise Feedback(f"your result holds NaN or inf for small ordinary scores: {_fmt(out)}")
        if (out < 0).any():
            raise Feedback("some weights are negative; exponentials are always positive")
        sums = out.sum(dim=-1)
        rows_ok = (sums - 1).abs() < 1e-4
        if not rows_ok.all():
            row = _first_bad_row(rows_ok)
            if ((out.sum(dim=0) - 1).abs() < 1e-4).all():
                raise Feedback(
                    f"row {row} does not sum to 1 (it sums to {float(sums[row]):.3g}), but every "
                    "column does — you took the softmax over the first axis. Take the max and the "
                    "sum over the last axis (dim=-1), so that each row (one query's scores) sums to 1"
                )
            if abs(float(out.sum()) - 1) < 1e-4:
                raise Feedback(
                    f"row {row} does not sum to 1 (it sums to {float(sums[row]):.3g}), but the whole "
                    "tensor does — you divided by the sum of everything. Divide each row by its "
                    "own sum (.sum(dim=-1, keepdim=True))"
                )
            raise Feedback(
                f"row {row} does not sum to 1 (it sums to {float(sums[row]):.3g}) — did you take "
                "the softmax over the last axis (dim=-1, keepdim=True)?"
            )
        if not _close(out, expected):
            shifted_by_columns = x - x.max(dim=-1).values  # max without keepdim: (4,) broadcasts
            e = torch.exp(shifted_by_columns)
            if _close(out, e / e.sum(dim=-1, keepdim=True)):
                raise Feedback(
                    "the rows sum to 1 but the values are off — did you take the max without "
                    "keepdim=True? x.max(dim=-1).values has shape (4,), and x - it subtracts a "
                    "different number from each column. Keep each row's max as a column, shape "
                    "(..., 1), with keepdim=True"
                )
            row = _first_bad_row(torch.isclose(out, expected, atol=1e-5).all(dim=-1))
            raise Feedback(
                f"row {row} should be {_fmt(expected[row])}, got {_fmt(out[row])}: the softmax "
                "of a row is exp(x) / sum(exp(x)), each over that row"
            )

        # 2. Large scores: exp(1000) is inf in float32, and inf / inf is NaN.
        big = torch.tensor([[1000.0, 1001.0, 1002.0]])
        out = call(big)
        if not torch.isfinite(out).all():
            raise Feedback(
                "your result overflows for large inputs — did you subtract the max first? "
                f"softmax([1000, 1001, 1002]) gave {_fmt(out[0])}: exp(1000) is inf in float32, "
                "but softmax(x - max(x)) is the same distribution and never overflows"
            )
        if not _close(out, _reference_softmax(big)):
            raise Feedback(
                f"softmax([1000, 1001, 1002]) should be {_fmt(_reference_softmax(big)[0])}, "
                f"got {_fmt(out[0])}"
            )

        # 3. Very negative scores: every exp underflows to 0, and 0 / 0 is NaN.
        small = torch.tensor([[-1000.0, -1001.0, -1002.0]])
        out = call(small)
        if not torch.isfinite(out).all():
            raise Feedback(
                "your result underflows for very negative inputs — subtract the max, even when "
                f"it is negative. softmax([-1000, -1001, -1002]) gave {_fmt(out[0])}, because "
                "every exp(x) is 0 and 0 / 0 is NaN; after subtracting the row's max the largest "
                "entry becomes exp(0) = 1"
            )

        # 4. Rows of very different sizes: subtracting the max of the whole tensor is not enough.
        mixed = torch.tensor([[1000.0, 1001.0, 1002.0], [0.0, 1.0, 2.0]])
        out = call(mixed)
        expected = _reference_softmax(mixed)
        if not torch.isfinite(out).all() or not _close(out, expected):
            raise Feedback(
                f"row 1 ([0, 1, 2], in a tensor whose row 0 is [1000, 1001, 1002]) gave "
                f"{_fmt(out[1])}, expected {_fmt(expected[1])}. Subtract each row's own max "
                "(x.max(dim=-1, keepdim=True).values), not the max of the whole tensor: rows far "
                "below the global max underflow to 0 / 0"
            )

        # 5. Masked scores: -inf must become a weight of exactly 0.
        masked = torch.tensor([[0.5, float("-inf"), 1.5, float("-inf")]])
        out = call(masked)
        expected = _reference_softmax(masked)
        if not torch.isfinite(out).all() or not _close(out, expected):
            raise Feedback(
                f"softmax([0.5, -inf, 1.5, -inf]) should be {_fmt(expected[0])}, got "
                f"{_fmt(out[0])}: a score of -inf (a masked key) must get weight 0"
            )

        # 6. Any number of leading dimensions, and a single vector.
        g = torch.Generator().manual_seed(1)
        batched = torch.randn(2, 3, 5, generator=g) * 3
        out = call(batched)
        if not _close(out, _reference_softmax(batched)):
            raise Feedback(
                "correct for a 2-D input but not for a (2, 3, 5) batch: use dim=-1 (the last "
                "axis) rather than dim=1, so that any number of leading dimensions works"
            )
        vector = torch.tensor([3.0, 1.0, 0.2])
        out = call(vector)
        if not _close(out, _reference_softmax(vector)):
            raise Feedback(
                f"softmax of the vector [3, 1, 0.2] should be {_fmt(_reference_softmax(vector))}, "
                f"got {_fmt(out)}: use dim=-1 so that a 1-D input works too"
            )

    return run_check("stable_softmax", body)


# --------------------------------------------------------------------------------------------------
# Exercise 2: causal attention weights
# --------------------------------------------------------------------------------------------------


def _weights(q: Tensor, k: Tensor, scale: float, keep: Tensor | None) -> Tensor:
    scores = (q.double() @ k.double().transpose(-2, -1)) * scale
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1)


def _tril(t: int) -> Tensor:
    return torch.tril(torch.ones(t, t, dtype=torch.bool))


def check_causal_attention_weights(
    causal_attention_weights: Callable[[Tensor, Tensor], Tensor],
) -> bool:
    """Exercise 2: ``causal_attention_weights(q, k)`` returns softmax(q kᵀ / √d_k) with the future
    hidden: query ``i`` may attend to keys ``0..i``. ``q`` and ``k`` are ``(..., T, d_k)``, the
    result ``(..., T, T)``."""

    def body() -> None:
        g = torch.Generator().manual_seed(0)
        T, d_k = 5, 16  # T != d_k, so that scaling by the wrong size shows
        q = torch.randn(T, d_k, generator=g)
        k = torch.randn(T, d_k, generator=g)
        keep = _tril(T)
        expected = _weights(q, k, 1 / math.sqrt(d_k), keep).float()
        out = _expect_tensor(causal_attention_weights(q, k), (T, T), "causal_attention_weights")
        if out.dtype == torch.bool or not out.is_floating_point():
            raise Feedback(f"the weights should be floats, got {out.dtype}")

        nan_rows = torch.isnan(out).any(dim=-1)
        if nan_rows.any():
            row = int(nan_rows.nonzero()[0, 0])
            if row == 0:
                raise Feedback(
                    "row 0 is NaN: query 0 has no key left to attend to. Position i may attend to "
                    "keys 0..i, itself included; did you hide the diagonal too? torch.tril keeps "
                    "the diagonal (torch.triu(..., diagonal=1) marks only the future)"
                )
            if row == T - 1 and not nan_rows[0]:
                raise Feedback(
                    f"row {row}, the last query, is NaN: it may attend to no key, so your mask is "
                    "upside down. Query i may see the keys j <= i (torch.tril); the keys j > i "
                    "are the ones to hide"
                )
            raise Feedback(f"row {row} holds NaN: {_fmt(out[row])}")
        if not torch.isfinite(out).all():
            raise Feedback("the weights hold inf; weights are probabilities between 0 and 1")

        future = (out.abs() > 1e-6) & ~keep
        past = (out.abs() > 1e-6) & keep & ~torch.eye(T, dtype=torch.bool)
        if future.any():
            i, j = (int(v) for v in future.nonzero()[0])
            if not past.any():
                raise Feedback(
                    f"position {i} attends to position {j}, but nobody attends to the past: your "
                    "mask is upside down. It hides the past and keeps the future; query i may see "
                    "the keys j <= i (torch.tril), and the keys j > i must get weight 0"
                )
            if all(float(out[r, r]) == 0.0 for r in range(1, T)):
                raise Feedback(
                    f"position {i} attends to position {j} and no position attends to itself: "
                    "the diagonal must stay visible (query i may see keys 0..i), and only keys "
                    "j > i are hidden"
                )
            raise Feedback(
                f"position {i} attends to position {j} (weight {float(out[i, j]):.3g}) — the mask "
                "must hide the future. Set the scores where key j > query i to -inf *before* the "
                "softmax, so that those weights come out exactly 0"
            )
        diag = out.diagonal()
        if (diag[1:] == 0).any():
            row = int((diag[1:] == 0).nonzero()[0, 0]) + 1
            raise Feedback(
                f"position {row} does not attend to itself (weight 0 on key {row}): the diagonal "
                "must stay visible. Query i may see keys 0..i, itself included"
            )

        sums = out.sum(dim=-1)
        rows_ok = (sums - 1).abs() < 1e-4
        if not rows_ok.all():
            row = _first_bad_row(rows_ok)
            after = (_weights(q, k, 1 / math.sqrt(d_k), None) * keep).float()
            if _close(out, after, atol=1e-4):
                raise Feedback(
                    f"row {row} sums to {float(sums[row]):.3g}, not 1: you applied the mask to the "
                    "weights after the softmax, so the hidden keys took their share of the "
                    "probability with them. Mask the scores before the softmax "
                    "(scores.masked_fill(~mask, float('-inf')))"
                )
            if ((out.sum(dim=0) - 1).abs() < 1e-4).all():
                raise Feedback(
                    f"row {row} sums to {float(sums[row]):.3g}, not 1, but the columns sum to 1: "
                    "take the softmax over the keys, the last axis (dim=-1)"
                )
            raise Feedback(
                f"row {row} sums to {float(sums[row]):.3g}, not 1: did you take the softmax over "
                "the last axis (dim=-1)?"
            )

        if not _close(out, expected, atol=1e-4):
            root = math.sqrt(d_k)
            wrong_scales = [
                (
                    1.0,
                    "did you divide the scores by √d_k? Without the scale the weights come out "
                    f"too peaked (here d_k = {d_k}, so divide by {root:g})",
                ),
                (1 / d_k, f"you divided by d_k = {d_k}; the paper divides by √d_k = {root:g}"),
                (
                    1 / math.sqrt(T),
                    f"you scaled by √{T}, the square root of the number of positions; d_k is the "
                    f"width of each vector, q.shape[-1] = {d_k}",
                ),
                (root, f"you multiplied by √d_k; divide by it instead (scores / {root:g})"),
            ]
            for scale, hint in wrong_scales:
                if _close(out, _weights(q, k, scale, keep).float(), atol=1e-4):
                    raise Feedback(f"the weights are right up to the scale: {hint}")
            if _close(out, _weights(k, q, 1 / math.sqrt(d_k), keep).float(), atol=1e-4):
                raise Feedback(
                    "you computed k @ qᵀ instead of q @ kᵀ: row i must hold query i's scores "
                    "against every key"
                )
            row = _first_bad_row(torch.isclose(out, expected, atol=1e-4).all(dim=-1))
            raise Feedback(
                f"row {row} should be {_fmt(expected[row])}, got {_fmt(out[row])}: weights are "
                "softmax(q @ kᵀ / √d_k) over the keys, with the future set to -inf first"
            )

        # A batch: (B, T, d_k) -> (B, T, T)
        qb = torch.randn(2, 4, 8, generator=g)
        kb = torch.randn(2, 4, 8, generator=g)
        try:
            outb = causal_attention_weights(qb, kb)
        except (RuntimeError, IndexError, ValueError) as err:
            raise Feedback(
                f"it works for one sequence but fails on a batch (q of shape (2, 4, 8)): {err}. "
                "Use k.transpose(-2, -1) instead of k.T, q.shape[-1] for d_k and q.shape[-2] for "
                "T, so that leading batch dimensions pass through"
            ) from None
        outb = _expect_tensor(outb, (2, 4, 4), "causal_attention_weights on a (2, 4, 8) batch")
        if not _close(outb, _weights(qb, kb, 1 / math.sqrt(8), _tril(4)).float(), atol=1e-4):
            raise Feedback(
                "right for one sequence but not for a (2, 4, 8) batch: use k.transpose(-2, -1) "
                "rather than k.T, and the last axis for d_k (q.shape[-1])"
            )

        # float16: the mask value must fit the dtype.
        qh, kh = q.half(), k.half()
        try:
            outh = causal_attention_weights(qh, kh)
        except RuntimeError as err:
            if "overflow" in str(err):
                raise Feedback(
                    "your code fails in float16: the fill value does not fit the dtype "
                    f"({err}). Did you mask with -1e9? float16 goes no lower than -65504; use "
                    "float('-inf') or torch.finfo(scores.dtype).min"
                ) from None
            raise
        outh = _expect_tensor(outh, (T, T), "causal_attention_weights in float16")
        if not torch.isfinite(outh).all() or not _close(
            outh.float(), expected, atol=5e-3, rtol=1e-2
        ):
            raise Feedback(
                f"correct in float32 but not in float16 (row 0 gave {_fmt(outh[0].float())}): "
                "keep the computation in the inputs' dtype, and mask with float('-inf') or "
                "torch.finfo(scores.dtype).min, never a constant the dtype cannot hold"
            )

    return run_check("causal_attention_weights", body)


# --------------------------------------------------------------------------------------------------
# Exercise 3: a padding mask from sequence lengths
# --------------------------------------------------------------------------------------------------


def _length_mask(lengths: Tensor, max_len: int) -> Tensor:
    return torch.arange(max_len)[None, :] < lengths[:, None]


def check_lengths_to_mask(lengths_to_mask: Callable[[Tensor, int], Tensor]) -> bool:
    """Exercise 3: ``lengths_to_mask(lengths, max_len)`` turns sequence lengths ``(B,)`` into a
    bool ``(B, max_len)`` mask, True on the real tokens (they may be attended to) and False on the
    padding after them."""

    def one_case(lengths: Tensor, max_len: int) -> None:
        B = lengths.shape[0]
        expected = _length_mask(lengths, max_len)
        out = lengths_to_mask(lengths.clone(), max_len)
        if isinstance(out, Tensor) and tuple(out.shape) == (max_len, B) and B != max_len:
            raise Feedback(
                f"your mask has shape {tuple(out.shape)}, expected (B, max_len) = {(B, max_len)}: "
                "one row per sequence, one column per position (rows and columns are swapped)"
            )
        if (
            isinstance(out, Tensor)
            and out.dim() == 2
            and out.shape[0] == B
            and out.shape[1] != max_len
        ):
            raise Feedback(
                f"with lengths {lengths.tolist()} and max_len={max_len} your mask has "
                f"{out.shape[1]} columns, expected {max_len}: the mask must have max_len columns, "
                "even when every sequence is shorter (the batch was padded to max_len)"
            )
        out = _expect_tensor(out, (B, max_len), "lengths_to_mask")
        values = out if out.dtype == torch.bool else out != 0
        right_values = torch.equal(values, expected)
        if right_values and out.dtype != torch.bool:
            raise Feedback(
                f"the values are right but the dtype is {out.dtype}: return a bool tensor. "
                "Attention code (masked_fill, F.scaled_dot_product_attention) reads a float mask as "
                "numbers to add to the scores, not as True/False"
            )
        if right_values:
            return
        if torch.equal(values, ~expected):
            raise Feedback(
                "you marked the padding True and the real tokens False. In this book True means "
                "'may attend' (as in F.scaled_dot_product_attention), so the real tokens are True. "
                "(nn.MultiheadAttention's key_padding_mask uses the opposite convention: True = "
                "padding.)"
            )
        b = int((lengths > 0).nonzero()[0, 0])
        n = int(lengths[b])
        real = ", ".join(str(i) for i in range(n))
        for wrong in (_length_mask(lengths + 1, max_len), _length_mask(lengths - 1, max_len)):
            if torch.equal(values, wrong):
                raise Feedback(
                    f"off by one: sequence {b} has length {n}, so positions {real} are real and "
                    f"position {n} is the first padding. Compare positions with < (not <=), "
                    "starting from position 0"
                )
        if torch.equal(values, expected.flip(-1)):
            raise Feedback(
                "your mask has the real tokens at the end of each row: here the padding comes "
                "after the tokens (right padding), so the True values come first"
            )
        row = _first_bad_row((values == expected).all(dim=-1))
        raise Feedback(
            f"for lengths {lengths.tolist()}, row {row} should be {_fmt(expected[row])}, got "
            f"{_fmt(values[row])}"
        )

    def body() -> None:
        one_case(torch.tensor([3, 5, 1]), 5)
        one_case(torch.tensor([2, 1]), 4)  # every sequence shorter than max_len
        one_case(torch.tensor([0, 4, 2, 3]), 4)  # an empty sequence and B == max_len

    return run_check("lengths_to_mask", body)


# --------------------------------------------------------------------------------------------------
# Exercise 4: the variance of q·k
# --------------------------------------------------------------------------------------------------


def check_score_variance(score_variance: Callable[..., float]) -> bool:
    """Exercise 4: ``score_variance(d_k, sigma=1.0, n_samples=10_000)`` measures the variance of
    q·k for random q and k with independent N(0, sigma²) components. Theory: d_k · sigma⁴."""

    def measure(d_k: int, sigma: float) -> float:
        out = score_variance(d_k, sigma=sigma)
        if isinstance(out, Tensor):
            if out.numel() != 1:
                raise Feedback(
                    f"score_variance should return one number, got a tensor of shape "
                    f"{tuple(out.shape)}: take the variance of all the dot products (.var())"
                )
            out = out.item()
        try:
            value = float(out)
        except (TypeError, ValueError):
            raise Feedback(
                f"score_variance should return a number, got {type(out).__name__}"
            ) from None
        if not math.isfinite(value):
            raise Feedback(f"score_variance({d_k}, sigma={sigma}) returned {value}")
        return value

    def near(value: float, target: float, tol: float = 0.15) -> bool:
        return abs(value - target) <= tol * abs(target)

    def body() -> None:
        seen = {}
        for d_k in (4, 64, 256):
            v = measure(d_k, 1.0)
            seen[d_k] = v
            if near(v, d_k):
                continue
            if near(v, math.sqrt(d_k)):
                raise Feedback(
                    f"for d_k = {d_k} you returned {v:.3g}, about √{d_k} = {math.sqrt(d_k):g}: "
                    "that is the standard deviation. Return the variance (the std squared, or "
                    ".var())"
                )
            if near(v, 1.0, 0.3):
                raise Feedback(
                    f"you return about 1 for every d_k (d_k = {d_k} gave {v:.3g}). That is the "
                    "variance of a single product q_i·k_i, or of an already scaled score. Sum the "
                    "d_k products of each pair (the dot product, (q * k).sum(-1)) and take the "
                    "variance of those sums"
                )
            if near(v, d_k * d_k):
                raise Feedback(
                    f"for d_k = {d_k} you returned {v:.3g}, about d_k² = {d_k * d_k}: did you square "
                    "the variance, or multiply the vectors by √d_k?"
                )
            raise Feedback(
                f"for d_k = {d_k} with sigma = 1 expected about {d_k} (a sum of {d_k} independent "
                f"products, each of variance 1), got {v:.3g}"
            )

        d_k, sigma = 64, 2.0
        target = d_k * sigma**4
        v = measure(d_k, sigma)
        if near(v, target):
            return
        if near(v, d_k):
            raise Feedback(
                f"with sigma = {sigma:g} you still return about d_k = {d_k} ({v:.3g}): did you "
                "scale the random vectors by sigma (torch.randn(...) * sigma)? Expected about "
                f"d_k·sigma⁴ = {target:g}"
            )
        if near(v, d_k * sigma**2):
            raise Feedback(
                f"with sigma = {sigma:g} you return about d_k·sigma² = {d_k * sigma**2:g} ({v:.3g}), "
                f"expected d_k·sigma⁴ = {target:g}. Did you scale only one of q and k? Both "
                "need their components multiplied by sigma"
            )
        if near(v, d_k * sigma**8):
            raise Feedback(
                f"with sigma = {sigma:g} you return about d_k·sigma⁸ ({v:.3g}): sigma is the "
                "standard deviation, so multiply by sigma, not by sigma² (the variance)"
            )
        raise Feedback(
            f"for d_k = {d_k}, sigma = {sigma:g} expected about d_k·sigma⁴ = {target:g}, got {v:.3g}"
        )

    return run_check("score_variance", body)
