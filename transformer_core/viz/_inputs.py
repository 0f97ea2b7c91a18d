"""Inputs every view takes, with numpy alone: arrays, tokens, a model run for its attention."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any, name: str = "array") -> np.ndarray:
    """A float64 (or bool) numpy copy of a numpy array, torch tensor or nested list."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bool":
            return x.numpy().copy()
        return x.double().numpy()
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr.copy()
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def attention_stack(attn: Any, batch_index: int | None, what: str = "attn") -> np.ndarray:
    """Attention in any accepted layout -> a float (layers, heads, queries, keys) array, not empty.

    Accepted: (layers, heads, queries, keys); (layers, batch, heads, queries, keys) with
    ``batch_index`` choosing the sequence (needed unless the batch holds one); (heads, queries,
    keys) as one layer; or a list with one (heads, queries, keys) array per layer.
    """
    if isinstance(attn, (list, tuple)):
        if not attn:
            raise ValueError(f"{what}: no layers (an empty list)")
        try:
            w = np.stack([to_numpy(a, what) for a in attn])
        except ValueError as err:
            raise ValueError(f"{what}: the layers' weights differ in shape ({err})") from None
    else:
        w = to_numpy(attn, what)
    if w.ndim == 5:
        n_batch = w.shape[1]
        if batch_index is None:
            if n_batch != 1:
                raise ValueError(
                    f"{what} of shape {tuple(w.shape)} holds a batch of {n_batch} sequences; pass "
                    "batch_index=i to choose which one to show"
                )
            batch_index = 0
        if not -n_batch <= batch_index < n_batch:
            raise ValueError(f"batch_index={batch_index} is out of range for a batch of {n_batch}")
        w = w[:, batch_index]
    elif batch_index is not None:
        raise ValueError(
            f"batch_index is for weights shaped (layers, batch, heads, queries, keys); {what} "
            f"has shape {tuple(w.shape)}"
        )
    elif w.ndim == 3:
        w = w[None]  # one layer
    if w.ndim != 4:
        raise ValueError(
            f"{what} must be shaped (layers, heads, queries, keys), (layers, batch, heads, "
            f"queries, keys) or (heads, queries, keys); got shape {tuple(w.shape)}"
        )
    if w.size == 0:
        raise ValueError(f"{what} is empty (shape {tuple(w.shape)})")
    if not np.isfinite(w).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return w


def as_tokens(tokens: Any, name: str = "tokens") -> list[str]:
    """Tokens as a list of strings: a string counts as its characters, ids become ``str(id)``."""
    if isinstance(tokens, str):
        return list(tokens)
    if hasattr(tokens, "tolist"):
        tokens = tokens.tolist()
    try:
        return [str(t) for t in tokens]
    except TypeError:
        raise ValueError(
            f"{name} must be a sequence of tokens, got {type(tokens).__name__}"
        ) from None


def encode_input(text_or_ids: Any, tokenizer: Any) -> list[int]:
    """Text (encoded with ``tokenizer``) or ids (a list, a (T,) or (1, T) tensor) -> a list of ids."""
    if isinstance(text_or_ids, str):
        if tokenizer is None:
            raise ValueError("text was given without a tokenizer: pass tokenizer=... or token ids")
        ids = tokenizer.encode(text_or_ids)
    else:
        ids = text_or_ids
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    ids = list(ids)
    if ids and isinstance(ids[0], (list, tuple)):
        if len(ids) != 1:
            raise ValueError(f"from_model explores one sequence, got a batch of {len(ids)}")
        ids = list(ids[0])
    if not ids:
        raise ValueError("no tokens to explore")
    return [int(i) for i in ids]


def run_for_attention(model: Any, ids: list[int], tgt_ids: list[int] | None = None) -> Any:
    """``model(idx, return_attention=True)`` (or ``model(src, tgt, ...)``) on one sequence: its attention.

    The model runs in eval mode (no dropout) under ``torch.no_grad()`` on its own device and is
    put back in its previous mode. Returns what the model returns as attention: a tensor
    (GPT, BERT) or a NamedTuple of parts (the encoder-decoder's ``TransformerAttention``).
    """
    import torch

    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    device = first.device if first is not None else torch.device("cpu")
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    was_training = getattr(model, "training", None)
    if was_training is not None:
        model.eval()
    try:
        with torch.no_grad():
            if tgt_ids is None:
                out = model(idx, return_attention=True)
            else:
                tgt_idx = torch.tensor([tgt_ids], dtype=torch.long, device=device)
                out = model(idx, tgt_idx, return_attention=True)
    finally:
        if was_training is not None:
            model.train(was_training)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError("model(idx, return_attention=True) should return (logits, attn)")
    return out[1]
