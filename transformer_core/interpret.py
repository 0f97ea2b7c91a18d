"""Head scores: one number per attention head that says what the head does (chapter 10).

Attention weights come from ``model(idx, return_attention=True)``, shaped ``(L, B, H, T, T)``:
layers, batch, heads, queries, keys; each row sums to 1 and a causal model puts exactly 0 on the
future. Every score here reduces the last two dimensions (one attention matrix) to one number, so
it works on any leading shape: ``(L, B, H, T, T) -> (L, B, H)``; :func:`head_scores` then averages
over the batch to get a ``(L, H)`` table.

* :func:`previous_token_score` -- the mean weight a query puts on the token just before it (the
  sub-diagonal). A *previous-token head* scores near 1.
* :func:`induction_score` -- on a sequence whose second half repeats its first half, the mean
  weight a query in the second half puts on the token *after* the previous occurrence of the
  current token (key ``t - half_len + 1``). An *induction head* scores near 1.
* :func:`attention_entropy` and :func:`entropy_score` -- how spread out the rows are, in nats:
  0 for a head that looks at one key, ``log(t + 1)`` for a causal row spread evenly.

What to notice: a score is a hypothesis test, not a discovery. It finds the heads that do what
the score describes, and says nothing about the heads that do something else.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "attention_entropy",
    "entropy_score",
    "head_scores",
    "induction_score",
    "previous_token_score",
    "top_heads",
]


def _check_attn(attn: Tensor, min_len: int = 1, square: bool = True) -> Tensor:
    if not isinstance(attn, Tensor):
        raise TypeError(f"attention weights must be a torch.Tensor, got {type(attn).__name__}")
    if attn.dim() < 2 or (square and attn.shape[-1] != attn.shape[-2]):
        raise ValueError(
            f"attention weights must end in (queries, keys){' of equal length' if square else ''}, "
            f"got shape {tuple(attn.shape)}"
        )
    if attn.shape[-1] < min_len:
        raise ValueError(f"this score needs at least {min_len} positions, got {attn.shape[-1]}")
    return attn


def previous_token_score(attn: Tensor) -> Tensor:
    """Mean weight from each query ``t`` to key ``t - 1``: ``(..., T, T) -> (...)``.

    The sub-diagonal of each matrix, averaged over its ``T - 1`` queries (query 0 has no previous
    token and is left out).
    """
    attn = _check_attn(attn, min_len=2)
    return attn.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=-1)


def induction_score(attn: Tensor, half_len: int) -> Tensor:
    """Mean weight from query ``t`` to key ``t - half_len + 1``, over the repeated half: ``(..., T, T) -> (...)``.

    For sequences ``[a b c ... | a b c ...]`` whose token ``t`` repeats token ``t - half_len``:
    the token after the previous occurrence of the current token sits at ``t - half_len + 1``,
    and the next token is a copy of it. Only queries ``t = half_len ... T - 1`` count (in the first
    half there is no previous occurrence). That is the diagonal at offset ``-(half_len - 1)`` of
    each matrix without its first entry (query ``half_len - 1``, whose key 0 is no answer).
    """
    attn = _check_attn(attn)
    T = attn.shape[-1]
    if isinstance(half_len, bool) or not isinstance(half_len, int) or not 1 <= half_len < T:
        raise ValueError(
            f"half_len must be an int with 1 <= half_len < T = {T} (the length of the repeated "
            f"part), got {half_len!r}"
        )
    stripe = attn.diagonal(offset=-(half_len - 1), dim1=-2, dim2=-1)  # queries half_len - 1 ... T - 1
    return stripe[..., 1:].mean(dim=-1)


def attention_entropy(attn: Tensor) -> Tensor:
    """Entropy in nats of every row: ``(..., T_q, T_k) -> (..., T_q)`` (cross-attention too).

    ``-sum_j w_j log w_j``, with ``0 log 0 = 0`` (``torch.xlogy``): the masked future, whose
    weights are exactly 0, adds nothing, where a plain ``w * w.log()`` would give NaN.
    """
    attn = _check_attn(attn, square=False)
    return -torch.xlogy(attn, attn).sum(dim=-1)


def entropy_score(attn: Tensor) -> Tensor:
    """Mean row entropy in nats: ``(..., T, T) -> (...)``. Low: a sharp head; high: a broad one.

    The same number as :attr:`transformer_core.viz.AttentionExplorer.entropy` shows in its
    overview grid.
    """
    return attention_entropy(attn).mean(dim=-1)


def head_scores(attn: Tensor, half_len: int | None = None) -> dict[str, Tensor]:
    """Every score of every head, averaged over the batch: ``(L, B, H, T, T) -> {name: (L, H)}``.

    Keys: ``"previous_token"``, ``"entropy"`` and, when ``half_len`` is given (the inputs were
    repeated sequences), ``"induction"``.
    """
    attn = _check_attn(attn)
    if attn.dim() != 5:
        raise ValueError(
            "head_scores takes the weights of model(idx, return_attention=True), shaped "
            f"(L, B, H, T, T); got shape {tuple(attn.shape)}"
        )
    scores = {
        "previous_token": previous_token_score(attn).mean(dim=1),
        "entropy": entropy_score(attn).mean(dim=1),
    }
    if half_len is not None:
        scores["induction"] = induction_score(attn, half_len).mean(dim=1)
    return scores


def top_heads(scores: Tensor, k: int = 1) -> list[tuple[int, int, float]]:
    """The ``k`` highest-scoring heads of an ``(L, H)`` table: ``[(layer, head, score), ...]``.

    Ties go to the earlier layer, then the lower head.
    """
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise ValueError(f"scores must be an (L, H) tensor, got {getattr(scores, 'shape', scores)!r}")
    n_head = scores.shape[1]
    flat = scores.flatten().double()
    order = sorted(range(flat.numel()), key=lambda i: (-float(flat[i]), i))[:k]
    return [(i // n_head, i % n_head, float(flat[i])) for i in order]
