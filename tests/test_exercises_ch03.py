"""The checks of chapter 03's exercises: ✓ for a right answer, a specific hint for each typical
wrong one, "not attempted" for the untouched stub, and never an exception."""

from __future__ import annotations

import math

import pytest
import torch

from attention_book.exercises import ch03


def verdict(capsys, ok: bool, *expected: str) -> None:
    out = capsys.readouterr().out
    assert ok is (out.startswith("✓")), out
    for text in expected:
        assert text in out, f"expected {text!r} in the feedback, got: {out}"


def stub(*args, **kwargs):
    raise NotImplementedError


# --- exercise 1: the sinusoidal table -------------------------------------------------------------


def make_pe(angle_fn, layout="interleaved", swap=False, dtype=torch.float32):
    """A table builder with one knob per typical mistake."""

    def sinusoidal_pe(max_len, d_model):
        pos = torch.arange(max_len, dtype=torch.float64)[:, None]
        i = torch.arange(d_model // 2, dtype=torch.float64)[None, :]
        angle = angle_fn(pos, i, d_model)
        first, second = (torch.cos(angle), torch.sin(angle)) if swap else (torch.sin(angle), torch.cos(angle))
        if layout == "halves":
            pe = torch.cat((first, second), dim=-1)
        else:
            pe = torch.stack((first, second), dim=-1).flatten(-2)
        return pe.to(dtype)

    return sinusoidal_pe


def right_angle(pos, i, d):
    return pos / 10000 ** (2 * i / d)


def per_dim_pe(max_len, d_model):
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]
    dims = torch.arange(d_model)[None, :]
    angle = pos / 10000 ** (dims / d_model)
    return torch.where(dims % 2 == 0, torch.sin(angle), torch.cos(angle)).float()


def test_sinusoidal_pe_right(capsys):
    assert ch03.check_sinusoidal_pe(make_pe(right_angle)) is True
    verdict(capsys, True)


def test_sinusoidal_pe_package_is_right(capsys):
    from transformer_core import sinusoidal_encoding

    assert ch03.check_sinusoidal_pe(sinusoidal_encoding) is True


@pytest.mark.parametrize(
    ("fn", "hint"),
    [
        (make_pe(right_angle, swap=True), "sin and cos are swapped"),
        (make_pe(lambda p, i, d: p / 10000 ** (i / d)), "the exponent is i/d_model"),
        (make_pe(lambda p, i, d: p / 10000 ** (4 * i / d)), "off by a factor 2"),
        (per_dim_pe, "must share one frequency"),
        (make_pe(lambda p, i, d: i / 10000 ** (2 * p / d)), "pos and i are swapped"),
        (make_pe(lambda p, i, d: p * 10000 ** (2 * i / d)), "instead of dividing"),
        (make_pe(right_angle, layout="halves"), "interleaves"),
        (make_pe(right_angle, dtype=torch.float64), "return float32"),
        (lambda n, d: make_pe(right_angle)(n, d).T, "the rows should be the positions"),
        (lambda n, d: torch.sin(right_angle(torch.arange(n)[:, None], torch.arange(d // 2)[None], d)),
         "only one column per pair"),
        (make_pe(lambda p, i, d: p / 1000 ** (2 * i / d)), "PE[pos, 2i] = sin"),
        (lambda n, d: torch.full((n, d), float("nan")), "expected"),
        (lambda n, d: torch.zeros(n, d, dtype=torch.long), "should hold floats"),
        (lambda n, d: None, "forget a `return`"),
        (lambda n, d: [[0.0] * d] * n, "torch.Tensor"),
    ],
)
def test_sinusoidal_pe_mistakes(capsys, fn, hint):
    assert ch03.check_sinusoidal_pe(fn) is False
    verdict(capsys, False, hint)


def test_sinusoidal_pe_stub(capsys):
    assert ch03.check_sinusoidal_pe(stub) is False
    verdict(capsys, False, "not attempted")


# --- exercise 2: rotate the pairs -----------------------------------------------------------------


def make_rotate(pairs="neighbours", sign=1, swap=False, interleave=True):
    def rotate_pairs(x, angles):
        cos, sin = angles.cos(), sign * angles.sin()
        if swap:
            cos, sin = sin, cos
        if pairs == "neighbours":
            a, b = x[..., 0::2], x[..., 1::2]
        else:
            h = x.shape[-1] // 2
            a, b = x[..., :h], x[..., h:]
        first, second = a * cos - b * sin, a * sin + b * cos
        if pairs == "halves" or not interleave:
            return torch.cat((first, second), dim=-1)
        return torch.stack((first, second), dim=-1).flatten(-2)

    return rotate_pairs


def complex_rotate(x, angles):
    pairs = torch.view_as_complex(x.contiguous().view(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)).flatten(-2)


def test_rotate_pairs_right(capsys):
    assert ch03.check_rotate_pairs(make_rotate()) is True
    verdict(capsys, True)


def test_rotate_pairs_complex_is_right(capsys):
    assert ch03.check_rotate_pairs(complex_rotate) is True


def in_place(x, angles):
    x.mul_(2)
    return x


def double_angle(x, angles):
    return make_rotate()(x, 2 * angles)


@pytest.mark.parametrize(
    ("fn", "hint"),
    [
        (make_rotate(sign=-1), "wrong way"),
        (make_rotate(swap=True), "cos and sin are swapped"),
        (make_rotate(pairs="halves"), "rotate_half"),
        (make_rotate(interleave=False), "written back"),
        (double_angle, "not the one asked"),
        (lambda x, a: x * 2, "not a rotation"),
        (lambda x, a: x[..., :-1], "keep the shape"),
        (in_place, "in place"),
        (lambda x, a: None, "forget a `return`"),
        (lambda x, a: torch.view_as_complex(x.contiguous().view(*x.shape[:-1], -1, 2)), "shape"),
    ],
)
def test_rotate_pairs_mistakes(capsys, fn, hint):
    assert ch03.check_rotate_pairs(fn) is False
    verdict(capsys, False, hint)


def test_rotate_pairs_stub(capsys):
    assert ch03.check_rotate_pairs(stub) is False
    verdict(capsys, False, "not attempted")


# --- exercise 3: the wavelength -------------------------------------------------------------------


def test_wavelength_right(capsys):
    assert ch03.check_wavelength(lambda dim, d: 2 * math.pi * 10000 ** (2 * (dim // 2) / d)) is True
    verdict(capsys, True)


def test_wavelength_tensor_is_right(capsys):
    def wavelength(dim, d):
        return 2 * torch.pi * torch.tensor(10000.0, dtype=torch.float64) ** (2 * (dim // 2) / d)

    assert ch03.check_wavelength(wavelength) is True


@pytest.mark.parametrize(
    ("fn", "hint"),
    [
        (lambda dim, d: 10000 ** (2 * (dim // 2) / d), "multiply by 2π"),
        (lambda dim, d: 10000 ** (-2 * (dim // 2) / d), "angular frequency"),
        (lambda dim, d: 1 / (2 * math.pi * 10000 ** (2 * (dim // 2) / d)), "its inverse"),
        (lambda dim, d: 2 * math.pi * 10000 ** (dim / d), "use the pair index i = dim // 2"),
        (lambda dim, d: 2 * math.pi * 10000 ** (2 * dim / d), "you used dim as the pair index"),
        (lambda dim, d: 2 * math.pi * 1000 ** (2 * (dim // 2) / d), "expected"),
        (lambda dim, d: None, "forget a `return`"),
        (lambda dim, d: "6.28", "should return a number"),
        (lambda dim, d: torch.ones(2), "one number"),
    ],
)
def test_wavelength_mistakes(capsys, fn, hint):
    assert ch03.check_wavelength(fn) is False
    verdict(capsys, False, hint)


def test_wavelength_stub(capsys):
    assert ch03.check_wavelength(stub) is False
    verdict(capsys, False, "not attempted")


def test_checks_leave_the_random_state_alone():
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    ch03.check_rotate_pairs(make_rotate())
    assert torch.equal(torch.rand(3), expected)


# --- exercise 4: an experiment, the steps rotary positions need to learn the rule -----------------


def test_rotary_steps_to_learn_accepts_the_measured_range(capsys):
    for found in (55, *ch03.ROTARY_STEPS_TO_LEARN):
        assert ch03.check_rotary_steps_to_learn(lambda found=found: found) is True
        verdict(capsys, True, "✓ rotary_steps_to_learn")


@pytest.mark.parametrize(
    ("answer", "message", "hint"),
    [(40, "is too low", "max_steps=s"), (150, "is too high", "sinusoidal one needs far more")],
)
def test_rotary_steps_to_learn_explains_a_wrong_answer(capsys, answer, message, hint):
    assert ch03.check_rotary_steps_to_learn(lambda: answer) is False
    verdict(capsys, False, "✗ rotary_steps_to_learn", message, hint, "50 to 60 steps")


def test_rotary_steps_to_learn_not_attempted(capsys):
    assert ch03.check_rotary_steps_to_learn(stub) is False
    verdict(capsys, False, "not attempted yet")
