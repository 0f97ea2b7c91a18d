"""Checks for the exercises of chapter 00a, before attention.

Each check runs the reader's code on small inputs, compares it with the right answer (PyTorch's own
GRU, additive attention computed here, the path length a dilated stack must have) and, when they
differ, with the usual wrong answers (only the last state, the initial state kept, a softmax over
the batch, a missing tanh, an undilated stack), so that the hint names the likely mistake. The checks
use their own random numbers: running one does not change the reader's random state.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._checker import Feedback
from ._checker import run_seeded_check as _check

__all__ = ["check_gru_layer", "check_additive_attention", "check_dilated_layers_needed", "dilated_path_layers"]


def _need_tensor(value: object, what: str) -> Tensor:
    if value is None:
        raise Feedback(f"{what} returned None: did you forget a `return`?")
    if isinstance(value, tuple):
        raise Feedback(f"{what} returned a tuple; return one tensor (the states), not (states, last) as nn.GRU does")
    if not isinstance(value, Tensor):
        raise Feedback(f"{what} should return a torch.Tensor, got {type(value).__name__}")
    return value


def _close(a: Tensor, b: Tensor, atol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=atol, rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# Exercise 1: a GRU layer from a cell
# --------------------------------------------------------------------------------------------------


def check_gru_layer(gru_layer: Callable[[Tensor, nn.GRUCell], Tensor]) -> bool:
    """``gru_layer(x, cell)``: every state of ``cell`` run over ``x`` (B, T, D) from zeros, (B, T, H)."""

    def body() -> None:
        B, T, D, H = 3, 6, 4, 5
        cell = nn.GRUCell(D, H)
        x = torch.randn(B, T, D)
        gru = nn.GRU(D, H, batch_first=True)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(gru, f"{name}_l0").copy_(getattr(cell, name))
            want, _ = gru(x)  # (B, T, H)
        x_before = x.clone()
        with torch.no_grad():
            out = _need_tensor(gru_layer(x, cell), "gru_layer")
        if not torch.equal(x, x_before):
            raise Feedback("gru_layer changed its input x in place; leave x as it is")
        if out.shape == (B, H):
            raise Feedback(
                f"you returned one state per sequence, shape {(B, H)}: return the state after every "
                f"step, stacked along a time axis, shape (B, T, H) = {(B, T, H)}"
            )
        if out.shape == (T, B, H):
            raise Feedback(
                f"your states are stacked as (T, B, H) = {(T, B, H)}; stack them along dim=1 to get "
                f"(B, T, H) = {(B, T, H)}, as nn.GRU(batch_first=True) does"
            )
        if out.shape == (B, T + 1, H):
            raise Feedback(
                "you returned T + 1 states: the initial state of zeros is not an output. Return the "
                "states after each of the T steps"
            )
        if out.shape != (B, T, H):
            raise Feedback(f"gru_layer returned shape {tuple(out.shape)}, expected (B, T, H) = {(B, T, H)}")
        if _close(out, want):
            return
        shifted = torch.cat([torch.zeros(B, 1, H), want[:, :-1]], dim=1)
        if _close(out, shifted):
            raise Feedback(
                "your states are one step late: you stored each state before the update. Store h "
                "after h = cell(x[:, t], h)"
            )
        fresh = torch.stack([cell(x[:, t], torch.zeros(B, H)) for t in range(T)], dim=1).detach()
        if _close(out, fresh):
            raise Feedback(
                "every step starts from zeros: carry the state along, h = cell(x[:, t], h), and start "
                "from zeros only once, before the loop"
            )
        err = float((out - want).abs().max())
        raise Feedback(
            f"your states differ from nn.GRU's by up to {err:.3g}. Loop over the time axis (dim 1), "
            "h = cell(x[:, t], h) from h = zeros(B, H), and stack the states along dim=1"
        )

    return _check("gru_layer", body)


# --------------------------------------------------------------------------------------------------
# Exercise 2: additive attention
# --------------------------------------------------------------------------------------------------


def _additive(state: Tensor, annotations: Tensor, W: Tensor, U: Tensor, v: Tensor,
              softmax_dim: int = -1, squash=torch.tanh) -> tuple[Tensor, Tensor]:
    scores = squash((state @ W.T)[:, None] + annotations @ U.T) @ v  # (B, S)
    weights = scores.softmax(dim=softmax_dim)
    return (weights[:, :, None] * annotations).sum(dim=1), weights


def check_additive_attention(additive_attention: Callable[..., tuple[Tensor, Tensor]]) -> bool:
    """``additive_attention(state, annotations, W, U, v)`` -> (context (B, H), weights (B, S))."""

    def body() -> None:
        B, S, H = 3, 5, 4
        state, annotations = torch.randn(B, H), torch.randn(B, S, H)
        W, U, v = torch.randn(H, H), torch.randn(H, H), torch.randn(H)
        out = additive_attention(state, annotations, W, U, v)
        if not isinstance(out, tuple) or len(out) != 2:
            raise Feedback("return two tensors, (context, weights)")
        context = _need_tensor(out[0], "additive_attention's context")
        weights = _need_tensor(out[1], "additive_attention's weights")
        want_c, want_w = _additive(state, annotations, W, U, v)
        if context.shape == (B, S) and weights.shape == (B, H):
            raise Feedback("you returned (weights, context): return (context, weights)")
        if weights.shape != (B, S):
            raise Feedback(f"the weights should be (B, S) = {(B, S)}, one per source position, got {tuple(weights.shape)}")
        if context.shape != (B, H):
            raise Feedback(f"the context should be (B, H) = {(B, H)}, got {tuple(context.shape)}")
        if _close(weights, want_w) and _close(context, want_c):
            return
        mistakes = [
            (_additive(state, annotations, W, U, v, softmax_dim=0),
             "your softmax runs over the batch (dim 0): the weights of one decoder step must sum to 1 over "
             "the source positions, softmax(dim=-1)"),
            (_additive(state, annotations, W.T, U.T, v),
             "W s and U h_j are matrix-vector products: with the vectors as rows, state @ W.T and "
             "annotations @ U.T (you used W and U untransposed)"),
            (_additive(state, annotations, W, U, v, squash=lambda t: t),
             "the tanh is missing: e_j = v · tanh(W s + U h_j), a small network with one hidden layer"),
        ]
        for (_, cand_w), message in mistakes:
            if _close(weights, cand_w):
                raise Feedback(message)
        if _close(weights, want_w):
            keys = annotations @ U.T
            if _close(context, (want_w[:, :, None] * keys).sum(1)):
                raise Feedback("the weights are right, but the context blends U h_j: blend the annotations h_j themselves")
            raise Feedback("the weights are right, the context is not: c = Σ_j α_j h_j, (weights[:, :, None] * annotations).sum(1)")
        if not torch.allclose(weights.sum(-1), torch.ones(B), atol=1e-5):
            raise Feedback("your weights do not sum to 1 over the source positions: take a softmax over dim -1 of the scores")
        err = float((weights - want_w).abs().max())
        raise Feedback(
            f"your weights differ from the right ones by up to {err:.3g}. Scores: "
            "(tanh((state @ W.T)[:, None] + annotations @ U.T) @ v), shape (B, S); then a softmax over S"
        )

    return _check("additive_attention", body)


# --------------------------------------------------------------------------------------------------
# Exercise 3: the path length of a dilated convolution
# --------------------------------------------------------------------------------------------------


def dilated_path_layers(distance: int, kernel_size: int) -> int:
    """Table 1's log_k n: layers of a causal stack with dilations 1, k, k², ... for output
    ``distance`` to see input 0. ``L`` layers reach back ``k**L - 1`` positions."""
    layers = 0
    while kernel_size**layers - 1 < distance:
        layers += 1
    return layers


_CASES = [(1, 2), (2, 2), (3, 2), (4, 2), (7, 2), (8, 2), (2, 3), (3, 3), (8, 3), (9, 3), (26, 3), (27, 3)]


def check_dilated_layers_needed(dilated_layers_needed: Callable[[int, int], int]) -> bool:
    """``dilated_layers_needed(distance, kernel_size)``, measured, against Table 1's log_k."""

    def body() -> None:
        for distance, k in _CASES:
            got = dilated_layers_needed(distance, k)
            if got is None:
                raise Feedback("dilated_layers_needed returned None: did you forget a `return`?")
            if isinstance(got, Tensor) and got.numel() == 1:
                got = int(got)
            if isinstance(got, bool) or not isinstance(got, int):
                raise Feedback(f"return a whole number of layers, an int; got {type(got).__name__}")
            want = dilated_path_layers(distance, k)
            if got == want:
                continue
            plain = -(-distance // (k - 1))  # layers of an undilated stack
            where = f"for distance {distance}, kernel width {k} you found {got} layers, but {want} suffice"
            if got == plain:
                raise Feedback(
                    f"{where}: {got} is what a stack *without* dilation needs. Give layer i the dilation "
                    f"k**i (nn.Conv1d(..., dilation=kernel_size**i)) and pad by (kernel_size - 1) * dilation"
                )
            if got == want + 1:
                raise Feedback(
                    f"{where}: one too many. Do you test the stack before adding a layer? L layers with "
                    f"dilations 1, k, ..., k^(L-1) reach back k^L - 1 positions"
                )
            if got == want - 1:
                raise Feedback(
                    f"{where}: one too few. Check the gradient of output `distance` (the last position "
                    f"of a sequence of distance + 1) with respect to input 0, and that the padding is on "
                    f"the left only"
                )
            raise Feedback(
                f"{where}. Stack causal layers (pad on the left by (k - 1) * dilation) until the gradient of "
                f"output `distance` with respect to input 0 is non-zero"
            )

    return _check("dilated_layers_needed", body)
