"""Checks for the exercises of chapter 03, positional encodings.

Each check runs the reader's code on small inputs, compares it with the package's answer and, when
they differ, compares it with the typical wrong answers (sine and cosine swapped, an exponent off by
a factor 2, the wrong pairs rotated, ...), so that the hint names the likely mistake. The checks
use their own random numbers: running one does not change the reader's random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from transformer_core.positional import apply_rotary, sinusoidal_encoding

from ._checker import Feedback
from ._checker import run_seeded_check as _check
from ._measured import check_measured

__all__ = [
    "check_sinusoidal_pe",
    "check_rotate_pairs",
    "check_wavelength",
    "check_rotary_steps_to_learn",
]


def _need_tensor(value: object, what: str) -> Tensor:
    if value is None:
        raise Feedback(f"{what} returned None: did you forget a `return`?")
    if not isinstance(value, Tensor):
        raise Feedback(f"{what} should return a torch.Tensor, got {type(value).__name__}")
    return value


def _close(a: Tensor, b: Tensor, atol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=atol, rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# Exercise 1: the sinusoidal table
# --------------------------------------------------------------------------------------------------


def _interleave(even: Tensor, odd: Tensor) -> Tensor:
    return torch.stack((even, odd), dim=-1).flatten(-2)  # (..., n) x 2 -> (..., 2n)


def _pe_variants(max_len: int, d: int) -> list[tuple[Tensor, str]]:
    """The typical wrong tables, each with its hint."""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    i = torch.arange(d // 2, dtype=torch.float64)[None, :]  # (1, d/2): the pair index
    dims = torch.arange(d, dtype=torch.float64)[None, :]  # (1, d): every dimension

    def table(angle: Tensor) -> Tensor:
        return _interleave(torch.sin(angle), torch.cos(angle))

    right = pos / 10000 ** (2 * i / d)
    per_dim = pos / 10000 ** (dims / d)  # (max_len, d): dims 2i and 2i+1 with different exponents
    per_dim_table = torch.where(dims.long() % 2 == 0, torch.sin(per_dim), torch.cos(per_dim))
    return [
        (_interleave(torch.cos(right), torch.sin(right)),
         "sin and cos are swapped: the even dimensions 2i hold the sines, the odd ones 2i+1 the "
         "cosines"),
        (table(pos / 10000 ** (i / d)),
         "the exponent is i/d_model, but the paper's is 2i/d_model (with i the pair index): your "
         "wavelengths grow too slowly, only up to about 100·2π"),
        (table(pos / 10000 ** (4 * i / d)),
         "the exponent is off by a factor 2: with i the pair index it is 2i/d_model, which is "
         "dim/d_model for the even dimension dim = 2i; you used 2·dim/d_model"),
        (per_dim_table,
         "dimensions 2i and 2i+1 must share one frequency, 1/10000^(2i/d_model): your odd "
         "dimensions use the exponent (2i+1)/d_model"),
        (table(i / 10000 ** (2 * pos / d)),
         "pos and i are swapped: the angle is pos / 10000^(2i/d_model), the position over the "
         "power of the pair index"),
        (table(pos * 10000 ** (2 * i / d)),
         "the angle is pos / 10000^(2i/d_model): you multiplied by the power of 10000 instead of "
         "dividing by it"),
        (torch.cat((torch.sin(right), torch.cos(right)), dim=-1),
         "the values are right, but you put all the sines in the first half of the dimensions and "
         "all the cosines in the second half. The paper interleaves them: sin at 2i, cos at 2i+1 "
         "(torch.stack((sin, cos), dim=-1).flatten(-2), or fill pe[:, 0::2] and pe[:, 1::2])"),
    ]


def check_sinusoidal_pe(sinusoidal_pe: Callable[[int, int], Tensor]) -> bool:
    """``sinusoidal_pe(max_len, d_model)``: the paper's (max_len, d_model) table, float32."""

    def body() -> None:
        for max_len, d in [(50, 16), (7, 4), (128, 64), (3, 2)]:
            got = _need_tensor(sinusoidal_pe(max_len, d), "sinusoidal_pe")
            want = sinusoidal_encoding(max_len, d)
            if got.shape != want.shape:
                if got.shape == (d, max_len):
                    raise Feedback(
                        f"sinusoidal_pe({max_len}, {d}) has shape {tuple(got.shape)} = (d_model, "
                        "max_len): the rows should be the positions. Build it as (max_len, d_model)."
                    )
                if got.shape == (max_len, d // 2):
                    raise Feedback(
                        f"sinusoidal_pe({max_len}, {d}) has shape {tuple(got.shape)}: only one column "
                        "per pair. Each pair i fills two dimensions, sin at 2i and cos at 2i+1."
                    )
                raise Feedback(
                    f"sinusoidal_pe({max_len}, {d}) has shape {tuple(got.shape)}; expected "
                    f"(max_len, d_model) = {(max_len, d)}"
                )
            if not got.is_floating_point():
                raise Feedback(f"the table should hold floats, got dtype {got.dtype}")
            if _close(got, want):
                if got.dtype != torch.float32:
                    raise Feedback(
                        f"the values are right, but the dtype is {got.dtype}; return float32 "
                        "(.float()), the dtype of the embeddings it is added to"
                    )
                continue
            for variant, hint in _pe_variants(max_len, d):
                if _close(got, variant):
                    raise Feedback(hint)
            wrong = (~((got.double() - want.double()).abs() <= 1e-4)).nonzero()[0].tolist()  # NaN too
            p, k = wrong
            raise Feedback(
                f"sinusoidal_pe({max_len}, {d})[{p}, {k}] is {got[p, k].item():.4f}, expected "
                f"{want[p, k].item():.4f}. PE[pos, 2i] = sin(pos / 10000^(2i/d_model)) and "
                "PE[pos, 2i+1] = cos(pos / 10000^(2i/d_model))."
            )

    return _check("sinusoidal_pe", body)


# --------------------------------------------------------------------------------------------------
# Exercise 2: rotate the pairs (RoPE)
# --------------------------------------------------------------------------------------------------


def _rotate_half_layout(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Pairs (i, i + hd/2): the GPT-NeoX / Hugging Face LLaMA layout."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def _not_interleaved(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def check_rotate_pairs(rotate_pairs: Callable[[Tensor, Tensor], Tensor]) -> bool:
    """``rotate_pairs(x, angles)``: pair (x[2i], x[2i+1]) at t rotated by angles[t, i]."""

    def body() -> None:
        for shape in [(2, 3, 6, 8), (5, 4), (1, 1, 3, 2)]:
            T, hd = shape[-2], shape[-1]
            x = torch.randn(shape)
            angles = (torch.rand(T, hd // 2) * 2 - 1) * math.pi  # (T, hd/2) in [-π, π)
            x_before, angles_before = x.clone(), angles.clone()
            got = _need_tensor(rotate_pairs(x, angles), "rotate_pairs")
            if not torch.equal(x, x_before) or not torch.equal(angles, angles_before):
                raise Feedback(
                    "rotate_pairs changed its input in place; return a new tensor and leave x "
                    "(a model's queries and keys) as it was"
                )
            cos, sin = angles.cos(), angles.sin()
            want = apply_rotary(x, cos, sin)
            if got.shape != want.shape:
                raise Feedback(
                    f"rotate_pairs should keep the shape of x, {tuple(x.shape)}; got {tuple(got.shape)}"
                )
            if _close(got, want):
                continue
            if torch.is_complex(got):
                raise Feedback("return a real tensor of the shape of x, not complex numbers")
            if _close(got, apply_rotary(x, cos, -sin)):
                raise Feedback(
                    "your pairs turn the wrong way (clockwise, by -angle): the sign of the sine "
                    "terms is flipped. Counter-clockwise: (a cos α - b sin α, a sin α + b cos α)."
                )
            if _close(got, apply_rotary(x, sin, cos)):
                raise Feedback("cos and sin are swapped: a rotation by α uses cos α on the diagonal")
            if hd > 2 and _close(got, _rotate_half_layout(x, cos, sin)):
                raise Feedback(
                    "you rotated the wrong pairs: dimension i with i + hd/2 (the 'rotate_half' "
                    "layout of GPT-NeoX and Hugging Face's LLaMA). Here the pairs are neighbours, "
                    "(x[2i], x[2i+1]): take x[..., 0::2] and x[..., 1::2]."
                )
            if hd > 2 and _close(got, _not_interleaved(x, cos, sin)):
                raise Feedback(
                    "the right pairs are rotated, but the results are written back as [all first "
                    "elements, all second elements]. Put each pair back in its place: "
                    "torch.stack((first, second), dim=-1).flatten(-2)."
                )
            if _close(got.norm(dim=-1), x.norm(dim=-1)):
                raise Feedback(
                    "your vectors keep their lengths, so it is a rotation, but not the one asked "
                    "for: pair i = (x[..., t, 2i], x[..., t, 2i+1]) turns by angles[t, i]"
                )
            raise Feedback(
                "that is not a rotation: the lengths of the vectors changed. Pair "
                "(a, b) = (x[..., 2i], x[..., 2i+1]) becomes (a cos α - b sin α, a sin α + b cos α) "
                "with α = angles[t, i]."
            )

    return _check("rotate_pairs", body)


# --------------------------------------------------------------------------------------------------
# Exercise 3: the wavelength of a dimension
# --------------------------------------------------------------------------------------------------

_WAVELENGTH_CASES = [(0, 64), (1, 64), (2, 64), (11, 64), (63, 64), (62, 64), (100, 512), (7, 8)]


def check_wavelength(wavelength: Callable[[int, int], float]) -> bool:
    """``wavelength(dim, d_model)`` = 2π · 10000^(2·(dim // 2) / d_model) positions."""

    def body() -> None:
        answers = {}
        for dim, d in _WAVELENGTH_CASES:
            got = wavelength(dim, d)
            if isinstance(got, Tensor):
                if got.numel() != 1:
                    raise Feedback(f"wavelength({dim}, {d}) should be one number, got shape {tuple(got.shape)}")
                got = got.item()
            if got is None:
                raise Feedback("wavelength returned None: did you forget a `return`?")
            if isinstance(got, bool) or not isinstance(got, (int, float)):
                raise Feedback(f"wavelength should return a number, got {type(got).__name__}")
            answers[(dim, d)] = float(got)

        def matches(formula: Callable[[int, int], float]) -> bool:
            return all(math.isclose(answers[c], formula(*c), rel_tol=1e-6) for c in _WAVELENGTH_CASES)

        def right(dim: int, d: int) -> float:
            return 2 * math.pi * 10000 ** (2 * (dim // 2) / d)

        if matches(right):
            return
        if matches(lambda dim, d: 10000 ** (2 * (dim // 2) / d)):
            raise Feedback(
                "that is 1/ω = 10000^(2i/d_model). The sine repeats when its angle pos·ω has grown "
                "by 2π, so the wavelength is 2π/ω: multiply by 2π"
            )
        if matches(lambda dim, d: 10000 ** (-2 * (dim // 2) / d)):
            raise Feedback(
                "that is the angular frequency ω_i = 1/10000^(2i/d_model), the angle per position; "
                "the wavelength is 2π/ω_i"
            )
        if matches(lambda dim, d: 1 / right(dim, d)):
            raise Feedback("that is the frequency, in periods per position; the wavelength is its inverse")
        if matches(lambda dim, d: 2 * math.pi * 10000 ** (dim / d)):
            raise Feedback(
                "right for the even dimensions, but an odd dimension 2i+1 is the cosine of the same "
                "pair and shares the frequency of dimension 2i: use the pair index i = dim // 2"
            )
        if matches(lambda dim, d: 2 * math.pi * 10000 ** (2 * dim / d)):
            raise Feedback(
                "you used dim as the pair index i. Dimension dim belongs to pair i = dim // 2 "
                "(dims 2i and 2i+1), and the exponent is 2i/d_model"
            )
        dim, d = next(c for c in _WAVELENGTH_CASES if not math.isclose(answers[c], right(*c), rel_tol=1e-6))
        raise Feedback(
            f"wavelength({dim}, {d}) gave {answers[(dim, d)]:.6g}, expected {right(dim, d):.6g} "
            "positions. Pair i = dim // 2 has the angle pos / 10000^(2i/d_model); it repeats when "
            "the angle has grown by 2π."
        )

    return _check("wavelength", body)


# --------------------------------------------------------------------------------------------------
# Exercise 4 (an experiment): how fast is a rule about relative position learned?
# --------------------------------------------------------------------------------------------------

# Measured with `python scripts/experiment_ranges.py ch03`: section 9's rotary lag model (2 blocks,
# width 64, lr 3e-3, warm-up 20, cosine over max_steps, batches of 32 sequences of 32 tokens),
# trained for 20, 25, 30, ... steps, each a new run; the fewest steps giving 90% right on positions
# 3-31 of the chapter's test set were 55, 55 and 55 for seeds 0, 1, 2 (the seed draws the initial
# weights and the batches; at 50 steps the seeds gave 79-83%, at 55 steps 92-97%). Accepted: that
# widened by 5 on each side, the step of the reader's scan.
ROTARY_STEPS_TO_LEARN = (50, 60)


def check_rotary_steps_to_learn(rotary_steps_to_learn: Callable[[], object]) -> bool:
    """The reader's ``rotary_steps_to_learn()`` returns the number of steps they found."""
    low, high = ROTARY_STEPS_TO_LEARN
    return check_measured(
        "rotary_steps_to_learn",
        rotary_steps_to_learn,
        low,
        high,
        unit=" steps",
        too_low=(
            "That few steps do not give 90% on positions 3 to 31 (at 50 steps the model is about "
            "80% right). Is each number of steps a run of its own, lag_model built afresh and "
            "trained with max_steps=s, and scored by accuracy_by_position on the test sequences, "
            "not on a training batch?"
        ),
        too_high=(
            "Fewer steps already give 90%: scan below your answer in steps of 5. Is the model the "
            "rotary one (the sinusoidal one needs far more), and is the accuracy averaged over "
            "positions 3 to 31 only (positions 0 to 2 have no answer, 32 on were never trained)?"
        ),
    )
