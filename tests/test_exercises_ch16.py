"""The chapter 16 exercise checks: a right answer passes, each usual mistake gets its own hint."""

from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from attention_book.exercises import ch16


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


# ---------------------------------------------------------------------------- quantize_symmetric
def q_right(x):
    scale = x.abs().amax(dim=-1, keepdim=True) / 127
    return torch.round(x / scale).to(torch.int8), scale


def q_with(scale_fn, to_int=lambda v: torch.round(v).to(torch.int8)):
    def f(x):
        scale = scale_fn(x)
        return to_int(x / scale), scale

    return f


def test_quantize_right(capsys):
    ok, out = verdict(ch16.check_quantize_symmetric, q_right, capsys)
    assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (q_with(lambda x: x.abs().max() / 127), "one scale for the whole tensor"),
        (q_with(lambda x: x.abs().amax(-1, keepdim=True) / 128), "not 128"),
        (q_with(lambda x: x.abs().amax(-1, keepdim=True)), "divide it by 127"),
        (lambda x: (q_right(x)[0], q_right(x)[1].squeeze(-1)), "(..., 1)"),
        (q_with(lambda x: x.abs().amax(-1, keepdim=True) / 127, lambda v: v.to(torch.int8)), "truncated"),
        (q_with(lambda x: x.abs().amax(-1, keepdim=True) / 127, torch.round), "int8"),
        (lambda x: torch.round(x / (x.abs().amax(-1, keepdim=True) / 127)).to(torch.int8), "pair"),
        (q_with(lambda x: x.abs().amax(-1, keepdim=True) / 127, lambda v: (v + 0.5).floor().to(torch.int8)), None),
    ],
)
def test_quantize_mistakes(fn, words, capsys):
    ok, out = verdict(ch16.check_quantize_symmetric, fn, capsys)
    if words is None:  # rounding half up differs from torch.round only on exact halves: accepted
        assert ok, out
        return
    assert not ok and out.startswith("✗"), out
    assert words in out, out


def test_quantize_stub_and_in_place(capsys):
    ok, out = verdict(ch16.check_quantize_symmetric, stub, capsys)
    assert not ok and "not attempted" in out

    def in_place(x):
        q, s = q_right(x.clone())
        x.zero_()
        return q, s

    ok, out = verdict(ch16.check_quantize_symmetric, in_place, capsys)
    assert not ok and "in place" in out


# ---------------------------------------------------------------------------- saved_bytes
def saved_right(fn):
    seen = {}

    def pack(t):
        seen.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def saved_every_time(fn):
    sizes = []

    def pack(t):
        sizes.append(t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(sizes)


def saved_by_view(fn):
    seen = {}

    def pack(t):
        seen.setdefault(t.untyped_storage().data_ptr(), t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def saved_outside(fn):
    seen = {}

    def pack(t):
        seen.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        pass
    fn()
    return sum(seen.values())


def test_saved_bytes_right(capsys):
    ok, out = verdict(ch16.check_saved_bytes, saved_right, capsys)
    assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (saved_every_time, "each time it was saved"),
        (saved_by_view, "whole storage"),
        (saved_outside, "inside"),
        (lambda fn: saved_right(fn) + 4, "you counted"),
        (lambda fn: "many", "number of bytes"),
    ],
)
def test_saved_bytes_mistakes(fn, words, capsys):
    ok, out = verdict(ch16.check_saved_bytes, fn, capsys)
    assert not ok and out.startswith("✗"), out
    assert words in out, out


# ---------------------------------------------------------------------------- run_checkpointed
def run_right(layers, x):
    for layer in layers:
        x = checkpoint(layer, x, use_reentrant=False)
    return x


def run_plain(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def run_first_only(layers, x):
    for i, layer in enumerate(layers):
        x = checkpoint(layer, x, use_reentrant=False) if i == 0 else layer(x)
    return x


def run_detached(layers, x):
    for layer in layers:
        x = checkpoint(layer, x.detach(), use_reentrant=False)
    return x


def run_no_grad(layers, x):
    with torch.no_grad():
        return run_plain(layers, x)


def test_run_checkpointed_right(capsys):
    ok, out = verdict(ch16.check_run_checkpointed, run_right, capsys)
    assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (run_plain, "as much as without checkpointing"),
        (run_first_only, "not all of them"),
        (run_detached, "gradients are missing"),
        (run_no_grad, "no gradient"),
        (lambda layers, x: run_right(layers[:2], x), "output differs"),
        (lambda layers, x: None, "return"),
        (stub, "not attempted"),
    ],
)
def test_run_checkpointed_mistakes(fn, words, capsys):
    ok, out = verdict(ch16.check_run_checkpointed, fn, capsys)
    assert not ok, out
    assert words in out, out


# --------------------------------------------------------------------------- fewest_bits (experiment)
def test_fewest_bits_accepts_the_measured_answer(capsys):
    ok, out = verdict(ch16.check_fewest_bits, lambda: 4, capsys)
    assert ok is True, out
    assert out.startswith("✓ fewest_bits")


@pytest.mark.parametrize(
    ("answer", "message"),
    [(3, "is too low"), (8, "is too high"), (None, "forget a `return`")],
)
def test_fewest_bits_explains_a_wrong_answer(answer, message, capsys):
    ok, out = verdict(ch16.check_fewest_bits, lambda: answer, capsys)
    assert ok is False
    assert out.startswith("✗ fewest_bits")
    assert message in out, out
    if answer == 3:
        assert "one bit for the sign" in out and "seeds give 4 bits." in out
    if answer == 8:
        assert "one scale per row" in out


def test_fewest_bits_not_attempted(capsys):
    ok, out = verdict(ch16.check_fewest_bits, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out
