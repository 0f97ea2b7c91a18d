"""Auto-checks for chapter 16, *Memory and deployment*.

Each check runs the reader's function on small inputs, compares it with the package's answer and,
when they differ, recognises the usual mistakes (a scale from 128 or from the whole tensor instead
of each row, truncating instead of rounding, counting a storage twice or counting views by their
own size, checkpointing nothing, cutting the graph with ``detach``) and says which. The checks use
their own random numbers (``torch.random.fork_rng``): running one does not change the reader's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from transformer_core.deploy import quantize_per_row
from transformer_core.memory import SavedTensorMeter

from ._checker import Feedback
from ._checker import run_seeded_check as _check
from ._measured import check_measured

__all__ = ["check_quantize_symmetric", "check_saved_bytes", "check_run_checkpointed", "check_fewest_bits"]


# ------------------------------------------------------------------------------- quantization
def check_quantize_symmetric(quantize_symmetric: Callable[[Tensor], tuple[Tensor, Tensor]]) -> bool:
    """Check ``quantize_symmetric(x) -> (q int8, scale (..., 1))`` against the package's quantizer."""

    def body() -> None:
        g = torch.Generator().manual_seed(16)
        x = torch.randn(3, 4, 10, generator=g) * torch.tensor([0.1, 1.0, 5.0, 20.0])[:, None]
        x_before = x.clone()
        out = quantize_symmetric(x)
        if not isinstance(out, tuple) or len(out) != 2:
            raise Feedback("return a pair (q, scale): the int8 values and the scale of each row.")
        q, scale = out
        if not isinstance(q, Tensor) or not isinstance(scale, Tensor):
            raise Feedback("q and scale should both be torch.Tensors.")
        if not torch.equal(x, x_before):
            raise Feedback("quantize_symmetric changed its input x in place; compute new tensors instead.")
        if q.shape != x.shape:
            raise Feedback(f"q has shape {tuple(q.shape)}; it should have x's shape {tuple(x.shape)}.")
        if scale.numel() == 1:
            raise Feedback(
                "you used one scale for the whole tensor. Each row (the last dimension) gets its own: "
                "x.abs().amax(dim=-1, keepdim=True) / 127."
            )
        if scale.shape != (3, 4, 1):
            raise Feedback(
                f"scale has shape {tuple(scale.shape)}; one scale per row, kept as (..., 1) "
                f"(here (3, 4, 1)): amax(dim=-1, keepdim=True)."
            )
        if q.dtype != torch.int8:
            raise Feedback(f"q is {q.dtype}; store it as int8: .to(torch.int8) after rounding.")
        want_q, want_s = quantize_per_row(x)
        if torch.allclose(scale, x.abs().amax(-1, keepdim=True) / 128):
            raise Feedback("divide the largest |x| of the row by 127, not 128: a symmetric int8 range is [-127, 127].")
        if torch.allclose(scale, x.abs().amax(-1, keepdim=True)):
            raise Feedback("scale is the largest |x| itself; divide it by 127 so that q spans [-127, 127].")
        if torch.allclose(scale, 127 / x.abs().amax(-1, keepdim=True)):
            raise Feedback("scale is upside down: scale = max|x| / 127, and q = x / scale.")
        if not torch.allclose(scale.float(), want_s, rtol=1e-5, atol=0):
            raise Feedback("scale should be max|x| / 127 over each row: x.abs().amax(dim=-1, keepdim=True) / 127.")
        if torch.equal(q, (x / want_s).to(torch.int8)) and not torch.equal(q, want_q):
            raise Feedback(
                "you truncated: .to(torch.int8) cuts the fractional part off (2.9 -> 2). Round first: "
                "torch.round(x / scale).to(torch.int8)."
            )
        if (q.int() - want_q.int()).abs().max() > 1:
            raise Feedback("q should be round(x / scale): the values differ from that by more than one step.")
        mismatches = int((q != want_q).sum())
        if mismatches > 2:  # a value exactly halfway may round either way after float error
            raise Feedback(f"{mismatches} values of q are one step off: round to the nearest integer with torch.round.")

    return _check("quantize_symmetric", body)


# ------------------------------------------------------------------------------- saved bytes
def _saved_cases() -> list[tuple[str, Callable[[], Tensor]]]:
    g = torch.Generator().manual_seed(7)
    w = torch.randn(16, 24, generator=g, requires_grad=True)
    x = torch.randn(8, 16, generator=g, requires_grad=True)
    big = torch.randn(6, 40, generator=g, requires_grad=True)

    def mlp() -> Tensor:  # saves x, w, and the GELU's input
        return torch.nn.functional.gelu(x @ w).sum()

    def square_twice() -> Tensor:  # h * h saves the same storage twice
        h = torch.tanh(x)  # tanh saves its output
        return (h * h).sum()

    def view_of_big() -> Tensor:  # a saved view keeps its whole storage alive
        part = big[:, :5]  # a (6, 5) view of the (6, 40) storage; slicing saves nothing
        return (part * part).sum()  # mul saves the view (twice): 960 bytes stay alive, not 120

    return [("a linear layer + GELU", mlp), ("h * h", square_twice), ("a view", view_of_big)]


def check_saved_bytes(saved_bytes: Callable[[Callable[[], Tensor]], int]) -> bool:
    """Check ``saved_bytes(fn)`` against :class:`transformer_core.memory.SavedTensorMeter`."""

    def body() -> None:
        for name, fn in _saved_cases():
            with SavedTensorMeter() as meter:
                fn()
            want = meter.bytes
            got = saved_bytes(fn)
            if isinstance(got, Tensor):
                got = got.item()
            if not isinstance(got, int | float):
                raise Feedback(f"saved_bytes should return a number of bytes, got {type(got).__name__}.")
            if got == want:
                continue
            # the usual mistakes, recomputed on the same case
            every, by_view = [], {}

            def pack(t: Tensor, every: list = every, by_view: dict = by_view) -> Tensor:
                every.append(t.untyped_storage().nbytes())
                by_view.setdefault(t.untyped_storage().data_ptr(), t.numel() * t.element_size())
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                fn()
            if got == sum(every):
                raise Feedback(
                    f"on {name} you counted a storage each time it was saved ({got} bytes, want {want}). "
                    "Remember the storages already seen (t.untyped_storage().data_ptr()) and count each once."
                )
            if got == sum(by_view.values()):
                raise Feedback(
                    f"on {name} you counted a saved view by its own size ({got} bytes, want {want}); it keeps "
                    "its whole storage alive: count t.untyped_storage().nbytes()."
                )
            if got == 0:
                raise Feedback(
                    "you counted 0 bytes: run fn() *inside* the `with saved_tensors_hooks(pack, unpack):` block, "
                    "and let pack record each tensor (and return it)."
                )
            raise Feedback(f"on {name} you counted {got} bytes; autograd saved {want}.")

    return _check("saved_bytes", body)


# ------------------------------------------------------------------------------- checkpointing
class _Layer(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def check_run_checkpointed(run_checkpointed: Callable[[nn.ModuleList, Tensor], Tensor]) -> bool:
    """Check ``run_checkpointed(layers, x)``: same output and gradients as the plain loop, less memory."""

    def body() -> None:
        layers = nn.ModuleList(_Layer(8) for _ in range(3))
        x = torch.randn(4, 6, 8, requires_grad=True)

        def plain_run() -> Tensor:
            h = x
            for layer in layers:
                h = layer(h)
            return h

        with SavedTensorMeter(exclude=layers.parameters()) as meter:
            want = plain_run()
        plain_bytes = meter.bytes
        want.square().sum().backward()
        want_grads = [p.grad.clone() for p in layers.parameters()] + [x.grad.clone()]
        layers.zero_grad(set_to_none=True)
        x.grad = None

        with SavedTensorMeter(exclude=layers.parameters()) as meter:
            out = run_checkpointed(layers, x)
        if not isinstance(out, Tensor):
            raise Feedback(f"run_checkpointed should return a tensor, got {type(out).__name__}. Did you forget `return`?")
        if out.shape != want.shape:
            raise Feedback(f"the output has shape {tuple(out.shape)}, expected {tuple(want.shape)}.")
        if not torch.allclose(out, want, atol=1e-6):
            raise Feedback("the output differs from running the layers in order; apply every layer, each to the previous output.")
        if not out.requires_grad:
            raise Feedback("the output has no gradient: don't detach and don't run under torch.no_grad().")
        out.square().sum().backward()
        grads = [p.grad for p in layers.parameters()] + [x.grad]
        if any(g is None for g in grads):
            raise Feedback(
                "some gradients are missing (a detach, or a checkpoint whose inputs needed no grad?): "
                "pass the tensor itself to checkpoint(layer, h, use_reentrant=False)."
            )
        if not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, want_grads, strict=True)):
            raise Feedback("the gradients differ from the plain loop's: each layer should be checkpointed as it is.")
        if meter.bytes >= plain_bytes:
            raise Feedback(
                f"the output and gradients are right, but autograd saved {meter.bytes} bytes, as much as "
                f"without checkpointing ({plain_bytes}). Wrap each layer: h = checkpoint(layer, h, use_reentrant=False)."
            )
        if meter.bytes > plain_bytes / 2:
            raise Feedback(
                f"some layers are checkpointed ({meter.bytes} bytes saved, {plain_bytes} without), but not all of them."
            )

    return _check("run_checkpointed", body)


# --------------------------------------------------------------------------------------------------
# Exercise 5 (an experiment): how few bits can the weights keep?
# --------------------------------------------------------------------------------------------------

# Measured with `python scripts/experiment_ranges.py ch16`: every linear weight of the story model
# rounded to b bits (levels -(2**(b-1) - 1)..2**(b-1) - 1, one scale per row), validation loss in
# float64 on 200 held-out stories from generate_corpus seeds 2, 3 and 4 (seed 2's are the chapter's).
# 4 bits stayed within 1% of the float loss for all three (+0.5%, +0.6%, +0.7%), 3 bits did for
# none (+3.8% to +4.3%): the answer is 4, on every seed.
FEWEST_BITS = (4, 4)


def check_fewest_bits(fewest_bits: Callable[[], object]) -> bool:
    """The reader's ``fewest_bits()`` returns the number of bits they found."""
    low, high = FEWEST_BITS
    return check_measured(
        "fewest_bits",
        fewest_bits,
        low,
        high,
        unit=" bits",
        too_low=(
            "With that few bits the loss rises by more than 1% (3 bits: about 4%). Does your b-bit "
            "grid keep one bit for the sign, levels -(2**(b-1) - 1) to 2**(b-1) - 1 (-7..7 for 4 "
            "bits)? And is the 1% relative to the float loss, not 0.01 nats?"
        ),
        too_high=(
            "Fewer bits already keep the loss within 1% of the float model's. Try every b from 2 up, "
            "with one scale per row (the largest |w| of each row maps to the top level), not one "
            "scale for the whole matrix, and compare with the float model's loss on the same blocks."
        ),
    )
