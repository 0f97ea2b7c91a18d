"""Activation memory (chapter 16): what autograd keeps for the backward pass, and trading it for time.

Training needs, for every operation of the forward pass, some of its inputs or outputs to compute the
gradients later: a matrix multiply keeps its input, a softmax its output, a GELU its input. These
*saved tensors* ("activations") grow with batch size, sequence length and depth, and for long
sequences they outgrow the weights by far. **Activation checkpointing** keeps only each block's input
and recomputes the block's forward pass during backward: the same gradients, less memory, about one
extra forward pass of time.

Two tools here:

* :func:`enable_activation_checkpointing` turns it on for a model's blocks (a GPT's, a BERT's, an
  encoder-decoder's; :func:`disable_activation_checkpointing` off again), through the flag of the
  :class:`~transformer_core.blocks.Stack` that runs them; the weights, their names in the state dict
  and every output stay exactly the same;
* :class:`SavedTensorMeter` counts the bytes autograd saves for backward while it is active, each
  storage once (many saved tensors are views of one another), leaving out the parameters, which
  live in memory anyway. It is exact and deterministic on any device, unlike a process's memory use
  (which also holds temporaries, the allocator's caches and everything else the process has).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .blocks import Stack
from .validation import check_int

__all__ = [
    "enable_activation_checkpointing",
    "disable_activation_checkpointing",
    "checkpointed_blocks",
    "SavedTensorMeter",
    "saved_activation_bytes",
]


def _stacks(model: nn.Module, fn: str) -> dict[str, Stack]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn} needs a model (an nn.Module built of blocks, such as GPT), got {type(model).__name__}")
    stacks = {name: m for name, m in model.named_modules() if isinstance(m, Stack)}
    if not stacks:
        raise TypeError(
            f"{fn} works on models whose blocks run in a transformer_core.blocks.Stack (GPT, BERT, "
            f"Transformer); {type(model).__name__} has none"
        )
    return stacks


def enable_activation_checkpointing(model: nn.Module, every: int = 1) -> nn.Module:
    """Checkpoint every ``every``-th block of ``model`` (blocks 0, every, 2·every, ...); return ``model``.

    ``every=1`` checkpoints all blocks (the least memory); ``every=2`` half of them, and so on. It
    sets the flag ``checkpoint_every`` of each of the model's stacks of blocks (a GPT's or a BERT's
    ``blocks``, a Transformer's ``encoder`` and ``decoder``): the modules, their weights and every
    output stay as they are. Gradients are the same as without.
    """
    stacks = _stacks(model, "enable_activation_checkpointing")
    check_int("every", every)
    for stack in stacks.values():
        stack.checkpoint_every = every
    return model


def disable_activation_checkpointing(model: nn.Module) -> nn.Module:
    """Undo :func:`enable_activation_checkpointing`: every block stores its activations again."""
    for stack in _stacks(model, "disable_activation_checkpointing").values():
        stack.checkpoint_every = 0
    return model


def checkpointed_blocks(model: nn.Module) -> list[int] | dict[str, list[int]]:
    """The indices of the checkpointed blocks of ``model``: a list for a model with one stack (GPT,
    BERT), a dict ``{stack name: indices}`` for one with several (the encoder-decoder)."""
    stacks = _stacks(model, "checkpointed_blocks")
    found = {name: [i for i in range(len(s)) if s.checkpointed(i)] for name, s in stacks.items()}
    return next(iter(found.values())) if len(found) == 1 else found


class SavedTensorMeter:
    """Counts what autograd saves for backward inside a ``with`` block.

    ::

        with SavedTensorMeter(exclude=model.parameters()) as meter:
            loss = model.loss(x, y)
        meter.bytes     # activation memory kept until loss.backward()
        meter.count     # distinct storages saved

    Each storage counts once, with its full size (a saved view keeps its whole storage alive).
    Storages of the tensors in ``exclude`` (usually the parameters) are not counted.
    Under activation checkpointing the meter sees what the checkpoint really keeps: the inputs of the
    checkpointed blocks (the recomputation inside backward happens after the ``with`` block).
    """

    def __init__(self, exclude: Iterable[Tensor] = ()) -> None:
        exclude = list(exclude)
        for t in exclude:
            if not isinstance(t, Tensor):
                raise TypeError(f"exclude must hold tensors (e.g. model.parameters()), got {type(t).__name__}")
        self._excluded = {_storage_key(t) for t in exclude}
        self._seen: dict[tuple, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: Tensor) -> Tensor:
        key = _storage_key(t)
        if key is not None and key not in self._excluded and key not in self._seen:
            self._seen[key] = t.untyped_storage().nbytes()
        return t  # autograd keeps the tensor as it would without the meter

    @staticmethod
    def _unpack(t: Tensor) -> Tensor:
        return t

    def __enter__(self) -> SavedTensorMeter:
        self._seen.clear()
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    @property
    def bytes(self) -> int:
        return sum(self._seen.values())

    @property
    def count(self) -> int:
        return len(self._seen)


def _storage_key(t: Tensor) -> tuple | None:
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # tensors without a storage (sparse, meta, ...)
        return None
    return (t.device.type, t.device.index, storage.data_ptr())


def saved_activation_bytes(model: nn.Module, idx: Tensor, targets: Tensor | None = None) -> int:
    """Bytes that one forward pass of ``model`` on ``idx`` saves for backward (parameters left out).

    With ``targets`` the forward pass includes the loss (``model.loss(idx, targets)``, as in
    training), else it ends at the logits. The graph is freed again before returning.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    with torch.enable_grad(), SavedTensorMeter(exclude=model.parameters()) as meter:
        out = model(idx) if targets is None else model.loss(idx, targets)
    del out
    return meter.bytes

