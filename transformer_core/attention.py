"""Scaled dot-product attention and multi-head attention.

Conventions used throughout the package (and the book):

* Shapes: ``B`` batch, ``H`` heads, ``T`` / ``T_q`` query positions, ``S`` / ``T_k`` key positions,
  ``D`` model width, ``hd`` head width (``D // H``).
* A **boolean** ``attn_mask`` follows :func:`torch.nn.functional.scaled_dot_product_attention`:
  ``True`` means "this query may attend to this key". A **float** ``attn_mask`` is added to the scores
  (``0`` keeps a key, ``-inf`` removes it).
* ``key_padding_mask`` follows :class:`torch.nn.MultiheadAttention`: shape ``(B, S)``, ``True`` marks a
  padding key that nobody may attend to.
* A query whose keys are all masked gets an output of zeros and weights of zeros, never NaN.
* Masking uses ``-inf`` plus a guard for fully masked rows, never a large negative constant such as
  ``-1e9``, which overflows in float16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .validation import check_heads

__all__ = [
    "causal_mask",
    "scaled_dot_product_attention",
    "KVCache",
    "MultiHeadAttention",
]


def causal_mask(t_q: int, t_k: int | None = None, device: torch.device | str | None = None) -> Tensor:
    """Boolean ``(t_q, t_k)`` mask, ``True`` where query ``i`` may see key ``j``.

    Queries are aligned to the *end* of the keys, so with a KV cache (``t_k > t_q``) the last query
    sees every key and the first query sees the keys up to its own position ``t_k - t_q``.
    With ``t_k == t_q`` this is the familiar lower triangle.
    """
    t_k = t_q if t_k is None else t_k
    if t_q < 1 or t_k < t_q:
        raise ValueError(f"causal_mask needs 1 <= t_q <= t_k, got t_q={t_q}, t_k={t_k}")
    q_pos = torch.arange(t_k - t_q, t_k, device=device)[:, None]
    k_pos = torch.arange(t_k, device=device)[None, :]
    return k_pos <= q_pos


def _check_mask_shape(mask: Tensor, target: tuple[int, ...], name: str) -> None:
    """Raise a clear error unless ``mask`` broadcasts to ``target`` = (B, H, T_q, T_k)."""
    if mask.dim() > 4:
        raise ValueError(f"{name} has {mask.dim()} dimensions; expected at most 4 (B, H, T_q, T_k)")
    shape = (1,) * (4 - mask.dim()) + tuple(mask.shape)
    for have, want in zip(shape, target, strict=True):
        if have not in (1, want):
            raise ValueError(
                f"{name} of shape {tuple(mask.shape)} does not fit attention scores of shape "
                f"(B, H, T_q, T_k) = {target}; give (T_q, T_k), (B, 1, T_q, T_k) or (B, H, T_q, T_k)"
            )


def _combine_masks(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    is_causal: bool,
    score_shape: tuple[int, int, int, int],
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor | None:
    """Merge the three kinds of mask into one tensor the scores can take.

    Returns ``None`` (no masking), a boolean mask (``True`` = attend) or, when ``attn_mask`` is a float
    mask, a float mask to add to the scores.
    """
    B, H, T_q, T_k = score_shape
    mask: Tensor | None = None
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            raise TypeError(f"attn_mask must be a torch.Tensor, got {type(attn_mask).__name__}")
        _check_mask_shape(attn_mask, score_shape, "attn_mask")
        if attn_mask.dtype == torch.bool:
            mask = attn_mask.to(device)
        elif attn_mask.is_floating_point():
            mask = attn_mask.to(device=device, dtype=dtype)
        else:
            raise TypeError(
                f"attn_mask must be bool (True = attend) or float (added to scores), got {attn_mask.dtype}"
            )
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, Tensor) or key_padding_mask.dtype != torch.bool:
            raise TypeError("key_padding_mask must be a bool tensor of shape (B, T_k), True = padding")
        if key_padding_mask.shape != (B, T_k):
            raise ValueError(
                f"key_padding_mask has shape {tuple(key_padding_mask.shape)}, expected (B, T_k) = {(B, T_k)}"
            )
        keep = ~key_padding_mask.to(device)[:, None, None, :]
        mask = _and_masks(mask, keep, dtype)
    if is_causal:
        mask = _and_masks(mask, causal_mask(T_q, T_k, device=device), dtype)
    return mask


def _and_masks(mask: Tensor | None, keep: Tensor, dtype: torch.dtype) -> Tensor:
    if mask is None:
        return keep
    if mask.dtype == torch.bool:
        return mask & keep
    # float mask: removed keys become -inf
    return mask.masked_fill(~keep, float("-inf"))


def _allowed(mask: Tensor) -> Tensor:
    """Boolean view of a mask: True where a key is allowed."""
    return mask if mask.dtype == torch.bool else ~torch.isneginf(mask)


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    scale: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """softmax(q kᵀ / √d_k) v, with masks.

    Args:
        q: ``(B, H, T_q, hd)`` queries.  k: ``(B, H, T_k, hd)`` keys.  v: ``(B, H, T_k, hd_v)`` values.
        attn_mask: bool (True = attend) or float (added to the scores), broadcastable to
            ``(B, H, T_q, T_k)``.
        key_padding_mask: ``(B, T_k)`` bool, True = padding key.
        is_causal: hide future keys (queries aligned to the end of the keys, see :func:`causal_mask`).
        dropout_p: dropout on the attention weights (pass 0.0 in eval mode).
        need_weights: if True, take the explicit path and also return the weights
            ``(B, H, T_q, T_k)``; otherwise use PyTorch's fused kernel and return ``None`` for them.

    Returns:
        ``(out, weights)`` with ``out`` of shape ``(B, H, T_q, hd_v)``. Rows of ``weights`` sum to 1,
        except rows whose keys are all masked, which are all zero (as is their output).
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "q, k, v must be 4-D (B, H, T, head_dim); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"q/k head widths or k/v lengths disagree: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    B, H, T_q, hd = q.shape
    T_k = k.shape[-2]
    scale = 1.0 / math.sqrt(hd) if scale is None else scale
    if not need_weights and is_causal and attn_mask is None and key_padding_mask is None and T_q in (1, T_k):
        # The common cases need no mask tensor at all: a square causal pattern is the fused kernel's
        # own ``is_causal``, and a single query (a decoding step with a KV cache) sits at the end
        # of the keys, where it may see every one of them.
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=bool(T_q > 1), scale=scale)
        return out, None
    mask = _combine_masks(attn_mask, key_padding_mask, is_causal, (B, H, T_q, T_k), q.device, q.dtype)

    # A row with no allowed key would be softmax over all -inf = NaN. Let such rows see every key
    # (harmless), then zero their output and weights afterwards.
    dead_rows = None
    if mask is not None:
        dead_rows = ~_allowed(mask).any(dim=-1, keepdim=True)  # (.., T_q, 1)
        if dead_rows.any():
            mask = mask | dead_rows if mask.dtype == torch.bool else mask.masked_fill(dead_rows, 0.0)
        else:
            dead_rows = None

    if need_weights:
        scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T_q, T_k)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        weights = torch.softmax(scores, dim=-1)
        if dead_rows is not None:
            weights = weights.masked_fill(dead_rows, 0.0)
        dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
        out = dropped @ v  # (B, H, T_q, hd_v)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
        weights = None
    if dead_rows is not None:
        out = out.masked_fill(dead_rows, 0.0)
    return out, weights


@dataclass
class KVCache:
    """Keys and values of the positions already seen, for one attention layer.

    ``k`` and ``v`` have shape ``(B, H_kv, S, hd)``; each decoding step appends its new positions.

    Appending with ``torch.cat`` would copy the whole cache at every step (quadratic work over a
    generation). Instead the cache writes into a buffer with room to spare -- ``capacity``
    positions if given (``GPT.generate`` knows the final length), else doubling when full -- and
    ``k``/``v`` are views of its filled part. While gradients are recorded it falls back to
    ``torch.cat``, since writing into a buffer in place would break the backward pass.
    """

    k: Tensor | None = None
    v: Tensor | None = None
    capacity: int | None = None
    _k_buf: Tensor | None = field(default=None, repr=False)
    _v_buf: Tensor | None = field(default=None, repr=False)

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add this step's keys/values and return all keys/values so far."""
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            self._k_buf = self._v_buf = None
            if self.k is None:
                self.k, self.v = k, v
            else:
                self.k = torch.cat([self.k, k], dim=-2)
                self.v = torch.cat([self.v, v], dim=-2)
            return self.k, self.v
        old, new = self.length, k.shape[-2]
        if self._k_buf is None or old + new > self._k_buf.shape[-2] or not self._fits(k):
            self._grow(k, v, old + new)
        self._k_buf[:, :, old : old + new] = k
        self._v_buf[:, :, old : old + new] = v
        self.k = self._k_buf[:, :, : old + new]  # (B, H_kv, S, hd) views of the filled part
        self.v = self._v_buf[:, :, : old + new]
        return self.k, self.v

    def _fits(self, k: Tensor) -> bool:
        buf = self._k_buf
        same_views = self.k is None or self.k.data_ptr() == buf.data_ptr()
        return same_views and buf.shape[:2] == k.shape[:2] and buf.dtype == k.dtype and buf.device == k.device

    def _grow(self, k: Tensor, v: Tensor, needed: int) -> None:
        size = max(needed, self.capacity or 0, 2 * (self._k_buf.shape[-2] if self._k_buf is not None else 0))
        B, H, _, hd = k.shape
        k_buf = k.new_empty(B, H, size, hd)
        v_buf = v.new_empty(B, H, size, v.shape[-1])
        if self.k is not None:  # keep what is cached so far
            k_buf[:, :, : self.length] = self.k
            v_buf[:, :, : self.length] = self.v
        self._k_buf, self._v_buf = k_buf, v_buf

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search keeps the caches of the surviving beams)."""
        if self.k is not None:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)
            self._k_buf = self._v_buf = None  # the next append starts a fresh buffer


class MultiHeadAttention(nn.Module):
    """Multi-head attention: self-attention (``context=None``) or cross-attention.

    Each of ``n_head`` heads attends in its own ``head_dim = d_model // n_head`` subspace; the heads'
    outputs are concatenated and mixed by ``out_proj``. With ``n_kv_head < n_head`` several query heads
    share one key/value head (grouped-query attention; ``n_kv_head=1`` is multi-query attention).

    The attention itself, on the heads, is :meth:`attend`: the one method a variant overrides to
    attend another way with the same projections, heads, rotary positions and KV cache (chapter 14's
    sliding-window and linear attention do).

    Args:
        d_model: model width D.  n_head: number of query heads H.
        dropout: dropout on the attention weights.  bias: biases in the four projections.
        n_kv_head: key/value heads (defaults to ``n_head``); must divide ``n_head``.
        rotary: optional :class:`~transformer_core.positional.RotaryEmbedding` applied to q and k.
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        dropout: float = 0.0,
        bias: bool = True,
        n_kv_head: int | None = None,
        rotary: nn.Module | None = None,
    ) -> None:
        super().__init__()
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        check_heads(d_model, n_head)
        if n_head % n_kv_head != 0:
            raise ValueError(f"n_head={n_head} must be a multiple of n_kv_head={n_kv_head}")
        self.d_model, self.n_head, self.n_kv_head = d_model, n_head, n_kv_head
        self.head_dim = d_model // n_head
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_head * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_head * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.rotary = rotary

    def _split(self, x: Tensor, n: int) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, n, self.head_dim).transpose(1, 2)  # (B, n, T, hd)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``x`` ``(B, T, D)`` to itself, or to ``context`` ``(B, S, D)``.

        With a ``cache`` (self-attention only) the new keys/values are appended and the queries attend
        to everything cached; rotary positions continue from the cache length.
        Returns ``(out (B, T, D), weights (B, H, T, S) or None)``.
        """
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, T, {self.d_model}), got {tuple(getattr(x, 'shape', ()))}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor (B, T, D), got {x.dtype}")
        src = x if context is None else context
        if src.dim() != 3 or src.shape[0] != x.shape[0] or src.shape[-1] != self.d_model:
            raise ValueError(
                f"context must have shape (B={x.shape[0]}, S, {self.d_model}), got {tuple(src.shape)}"
            )
        q = self._split(self.q_proj(x), self.n_head)  # (B, H, T, hd)
        k = self._split(self.k_proj(src), self.n_kv_head)  # (B, H_kv, S, hd)
        v = self._split(self.v_proj(src), self.n_kv_head)
        if self.rotary is not None:
            offset = 0 if cache is None else cache.length
            q = self.rotary(q, offset=offset)
            k = self.rotary(k, offset=offset)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H_kv, past + T, hd)
        if self.n_kv_head != self.n_head:
            repeat = self.n_head // self.n_kv_head
            k = k.repeat_interleave(repeat, dim=1)  # (B, H, S, hd)
            v = v.repeat_interleave(repeat, dim=1)
        out, weights = self.attend(q, k, v, attn_mask, key_padding_mask, is_causal, need_weights)
        B, _, T, _ = out.shape
        out = out.transpose(1, 2).reshape(B, T, self.d_model)  # concatenate heads: (B, T, D)
        return self.out_proj(out), weights

    def attend(self, q, k, v, attn_mask=None, key_padding_mask=None, is_causal=False, need_weights=False):
        """``q`` ``(B, H, T, hd)``, ``k``, ``v`` ``(B, H, S, hd)`` -> ``(out (B, H, T, hd), weights or None)``.

        Scaled dot-product attention with the masks, and dropout on the weights while training.
        """
        p = self.dropout if self.training else 0.0
        return scaled_dot_product_attention(q, k, v, attn_mask, key_padding_mask, is_causal, p, need_weights)

    @torch.no_grad()
    def load_from_torch(self, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a :class:`torch.nn.MultiheadAttention` (same D and H) into this module."""
        if mha.embed_dim != self.d_model or mha.num_heads != self.n_head or self.n_kv_head != self.n_head:
            raise ValueError("nn.MultiheadAttention must have the same d_model and n_head (and no GQA)")
        if mha.in_proj_weight is None:
            raise ValueError("only nn.MultiheadAttention with equal q/k/v widths (kdim == vdim == embed_dim)")
        wq, wk, wv = mha.in_proj_weight.chunk(3, dim=0)
        for lin, w in zip((self.q_proj, self.k_proj, self.v_proj), (wq, wk, wv), strict=True):
            lin.weight.copy_(w)
        self.out_proj.weight.copy_(mha.out_proj.weight)
        if mha.in_proj_bias is not None and self.q_proj.bias is not None:
            bq, bk, bv = mha.in_proj_bias.chunk(3)
            self.q_proj.bias.copy_(bq)
            self.k_proj.bias.copy_(bk)
            self.v_proj.bias.copy_(bv)
            self.out_proj.bias.copy_(mha.out_proj.bias)
        return self
