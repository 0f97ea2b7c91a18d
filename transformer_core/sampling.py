"""Choosing the next token from a model's logits: greedy, temperature, top-k and top-p."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "check_sampling_args",
    "filter_logits",
    "filter_top_k",
    "filter_top_p",
    "next_token_probs",
    "sample_next_token",
]


def check_sampling_args(
    temperature: float, top_k: int | None, top_p: float | None, vocab_size: int | None = None
) -> None:
    """Raise a clear error for settings that would silently do something else."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(
            f"temperature must be a number > 0, got {temperature!r}; for argmax decoding pass greedy=True"
        )
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        if vocab_size is not None and top_k > vocab_size:
            raise ValueError(f"top_k={top_k} exceeds the vocabulary size {vocab_size}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")


def filter_top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row ``(B, V)``; the rest become ``-inf``."""
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1): the k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering: keep the smallest set of tokens whose probabilities add up to at least ``p``.

    The most likely token is always kept, so ``p`` close to 0 degrades to greedy decoding, and
    ``p = 1`` keeps every token: the logits come back unchanged (summed in floating point, the
    probabilities can reach 1 before the last token, which would drop the tail).
    """
    if p >= 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)  # float32 even for bf16/fp16 logits
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    drop_sorted = mass_before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Top-k, then top-p: the logits of the tokens sampling may draw, every other one ``-inf``."""
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    if top_p is not None:
        logits = filter_top_p(logits, top_p)
    return logits


def next_token_probs(
    logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """The distribution sampling draws from: ``softmax(filter(logits / temperature))``, ``(B, V)``."""
    check_sampling_args(temperature, top_k, top_p, logits.shape[-1])
    return torch.softmax(filter_logits(logits / temperature, top_k, top_p).float(), dim=-1)


def sample_next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick one token per row of ``logits`` ``(B, V)``; returns ``(B, 1)`` int64."""
    if greedy:
        return logits.argmax(dim=-1, keepdim=True)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator)
