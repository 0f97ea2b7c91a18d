"""The chapter 00a exercise checks: a right answer passes, each usual mistake gets its own hint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attention_book.exercises import ch00a


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------------------ gru_layer
def gru_right(x, cell):
    h = torch.zeros(x.shape[0], cell.hidden_size)
    states = []
    for t in range(x.shape[1]):
        h = cell(x[:, t], h)
        states.append(h)
    return torch.stack(states, dim=1)


def gru_last_only(x, cell):
    return gru_right(x, cell)[:, -1]


def gru_time_first(x, cell):
    return gru_right(x, cell).transpose(0, 1)


def gru_with_initial(x, cell):
    states = gru_right(x, cell)
    return torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)


def gru_one_late(x, cell):
    h = torch.zeros(x.shape[0], cell.hidden_size)
    states = []
    for t in range(x.shape[1]):
        states.append(h)
        h = cell(x[:, t], h)
    return torch.stack(states, dim=1)


def gru_no_carry(x, cell):
    zeros = torch.zeros(x.shape[0], cell.hidden_size)
    return torch.stack([cell(x[:, t], zeros) for t in range(x.shape[1])], dim=1)


def gru_tuple(x, cell):
    states = gru_right(x, cell)
    return states, states[:, -1]


@pytest.mark.parametrize(
    ("fn", "hint"),
    [
        (gru_last_only, "state after every step"),
        (gru_time_first, "stack them along dim=1"),
        (gru_with_initial, "T + 1 states"),
        (gru_one_late, "one step late"),
        (gru_no_carry, "carry the state along"),
        (gru_tuple, "return one tensor"),
        (stub, "not attempted yet"),
    ],
)
def test_gru_layer_mistakes(fn, hint, capsys):
    ok, out = verdict(ch00a.check_gru_layer, fn, capsys)
    assert not ok and hint in out, out


def test_gru_layer_right(capsys):
    ok, out = verdict(ch00a.check_gru_layer, gru_right, capsys)
    assert ok and "✓" in out, out


# ---------------------------------------------------------------------------- additive_attention
def attention_with(softmax_dim=-1, transpose=True, squash=torch.tanh, blend_keys=False, swap=False):
    def f(state, annotations, W, U, v):
        Wm, Um = (W.T, U.T) if transpose else (W, U)
        keys = annotations @ Um
        weights = (squash((state @ Wm)[:, None] + keys) @ v).softmax(dim=softmax_dim)
        context = (weights[:, :, None] * (keys if blend_keys else annotations)).sum(1)
        return (weights, context) if swap else (context, weights)

    return f


@pytest.mark.parametrize(
    ("fn", "hint"),
    [
        (attention_with(softmax_dim=0), "over the batch"),
        (attention_with(transpose=False), "untransposed"),
        (attention_with(squash=lambda t: t), "tanh is missing"),
        (attention_with(blend_keys=True), "blend the annotations"),
        (attention_with(swap=True), "return (context, weights)"),
        (lambda *args: None, "return two tensors"),
        (stub, "not attempted yet"),
    ],
)
def test_additive_attention_mistakes(fn, hint, capsys):
    ok, out = verdict(ch00a.check_additive_attention, fn, capsys)
    assert not ok and hint in out, out


def test_additive_attention_right(capsys):
    ok, out = verdict(ch00a.check_additive_attention, attention_with(), capsys)
    assert ok and "✓" in out, out


# ------------------------------------------------------------------------- dilated_layers_needed
def measured(dilated=True):
    def f(distance, kernel_size):
        x = torch.randn(1, 1, distance + 1, requires_grad=True)
        n_layers = 0
        while True:
            n_layers += 1
            y = x
            for i in range(n_layers):
                dilation = kernel_size**i if dilated else 1
                conv = nn.Conv1d(1, 1, kernel_size, dilation=dilation)
                y = conv(F.pad(y, ((kernel_size - 1) * dilation, 0)))
            (grad,) = torch.autograd.grad(y[0, 0, distance], x)
            if grad[0, 0, 0] != 0:
                return n_layers

    return f


@pytest.mark.parametrize(
    ("fn", "hint"),
    [
        (measured(dilated=False), "without* dilation"),
        (lambda d, k: ch00a.dilated_path_layers(d, k) + 1, "one too many"),
        (lambda d, k: ch00a.dilated_path_layers(d, k) - 1, "one too few"),
        (lambda d, k: 2.0, "an int"),
        (lambda d, k: None, "forget a `return`"),
        (stub, "not attempted yet"),
    ],
)
def test_dilated_layers_needed_mistakes(fn, hint, capsys):
    ok, out = verdict(ch00a.check_dilated_layers_needed, fn, capsys)
    assert not ok and hint in out, out


def test_dilated_layers_needed_right(capsys):
    ok, out = verdict(ch00a.check_dilated_layers_needed, measured(), capsys)
    assert ok and "✓" in out, out


def test_the_formula_is_the_measurement():
    """Table 1's log_k: L dilated layers reach back k**L - 1 positions, and measuring agrees."""
    for k in (2, 3):
        for distance in range(1, 30):
            assert measured()(distance, k) == ch00a.dilated_path_layers(distance, k)


def test_checks_leave_the_random_state_alone(capsys):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    ch00a.check_gru_layer(gru_right)
    ch00a.check_additive_attention(attention_with())
    ch00a.check_dilated_layers_needed(measured())
    assert torch.equal(before, torch.random.get_rng_state())
    capsys.readouterr()
