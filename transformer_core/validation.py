"""Input checks shared by the models: a clear error at the door instead of a crash deep inside torch."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_token_ids"]


def check_token_ids(idx: object, vocab_size: int, max_len: int | None = None, name: str = "idx") -> Tensor:
    """Check that ``idx`` is a ``(B, T)`` integer tensor of ids in ``[0, vocab_size)``; return it.

    ``max_len`` bounds ``T`` (the model's context length).
    """
    if not isinstance(idx, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of token ids, got {type(idx).__name__}; "
            f"wrap it with torch.tensor(..., dtype=torch.long)"
        )
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise TypeError(
            f"{name} holds {idx.dtype} values, but token ids must be integers; "
            f"convert with {name}.long() (and check how the ids were made)"
        )
    if idx.dim() != 2:
        hint = f"; for one sequence use {name}[None]" if idx.dim() == 1 else ""
        raise ValueError(f"{name} must have shape (B, T), got {tuple(idx.shape)}{hint}")
    B, T = idx.shape
    if B == 0 or T == 0:
        raise ValueError(f"{name} is empty (shape {tuple(idx.shape)}): give at least one token per sequence")
    if max_len is not None and T > max_len:
        raise ValueError(
            f"{name} has {T} tokens but the model's context_length is {max_len}; "
            f"crop to the last {max_len} tokens ({name}[:, -{max_len}:]) or use a larger context_length"
        )
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{name} contains token id {bad}, outside the vocabulary [0, {vocab_size - 1}]; "
            f"encode with the tokenizer the model was built for, or raise vocab_size"
        )
    return idx
