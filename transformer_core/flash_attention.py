"""FlashAttention in plain PyTorch: exact attention, tile by tile, without the ``(T_q, T_k)`` matrix.

Attention's explicit path computes every score ``q · k / √d``, a ``(T_q, T_k)`` matrix per head, takes a
softmax over each row and multiplies by the values; autograd keeps the weights for the backward pass.
FlashAttention (Dao et al. 2022; FlashAttention-2, Dao 2023) computes the same numbers block by block:

* **forward**: for a block of queries, walk over the key blocks and keep, per query row, the running
  maximum ``m`` of the scores seen so far, the running sum ``ℓ`` of their exponentials and the running
  weighted sum of values ``acc``. When a key block raises the maximum from ``m`` to ``m'``, what was
  summed so far is rescaled by ``exp(m - m')`` (the *online softmax*, Milakov & Gimelshein 2018). At
  the end ``out = acc / ℓ``. Only ``(block, block)`` scores exist at any time.
* **what it keeps**: the output and one number per query row, the log-sum-exp
  ``L = m + log ℓ``, which is all the softmax needs to be rebuilt: ``P = exp(S - L)``.
* **backward**: recompute each block of scores from ``q``, ``k`` and ``L`` and accumulate the
  gradients with ``dS = P ∘ (dP - D)``, ``D = rowsum(dO ∘ O)``, again one block at a time.

:func:`flash_attention` is the function to call (an autograd function whose backward is the
recomputation above); :func:`flash_attention_forward` and :func:`flash_attention_backward` are its
two halves. On a GPU the point is speed: the blocks live in fast on-chip memory. Written in PyTorch,
one small matrix product at a time, this version is slower than the fused kernel of
``torch.nn.functional.scaled_dot_product_attention``; what it shows, exactly, is the algorithm and its
memory, which grows like ``T``, not ``T²``. Chapter 14 builds it step by step.

Shapes: ``q`` is ``(..., T_q, d)``, ``k`` is ``(..., T_k, d)``, ``v`` is ``(..., T_k, d_v)`` with the same
leading (batch, head) dimensions; the output is ``(..., T_q, d_v)``, the log-sum-exp ``(..., T_q)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["DEFAULT_BLOCK_SIZE", "flash_attention", "flash_attention_forward", "flash_attention_backward"]

DEFAULT_BLOCK_SIZE = 64


# ----------------------------------------------------------------------------------- input checks
def _check(q: Tensor, k: Tensor, v: Tensor, is_causal: object, block_size: object, scale: object, name: str) -> float:
    """Validate the inputs; return the scale (``1/√d`` when ``scale`` is None)."""
    for t, n in ((q, "q"), (k, "k"), (v, "v")):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {n} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: {n} must be a floating-point tensor, got {t.dtype}; convert it with .float()")
        if t.dim() < 2:
            raise ValueError(f"{name}: {n} must have at least 2 dimensions (..., T, d), got shape {tuple(t.shape)}")
    if q.dtype != k.dtype or k.dtype != v.dtype:
        raise TypeError(f"{name}: q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.device != k.device or k.device != v.device:
        raise ValueError(f"{name}: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"{name}: q, k, v must have the same leading (batch, head) dimensions; got {shapes}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{name}: q and k need the same head width d (last dimension); got {shapes}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{name}: k and v need the same number of keys T_k (dimension -2); got {shapes}")
    if k.shape[-2] < 1:
        raise ValueError(f"{name}: attention needs at least one key; got {shapes}")
    if not isinstance(is_causal, bool):
        raise TypeError(f"{name}: is_causal must be True or False, got {is_causal!r}")
    if is_causal and q.shape[-2] > k.shape[-2]:
        raise ValueError(
            f"{name}: is_causal with more queries ({q.shape[-2]}) than keys ({k.shape[-2]}): the queries are "
            "the last positions of the keys' sequence (as with a KV cache), so there can be at most T_k of them"
        )
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"{name}: block_size must be an int (rows and columns per tile), got {block_size!r}")
    if block_size < 1:
        raise ValueError(f"{name}: block_size must be >= 1, got {block_size}")
    if scale is None:
        return 1.0 / math.sqrt(q.shape[-1])
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise TypeError(f"{name}: scale must be a finite number or None (1/√d), got {scale!r}")
    return float(scale)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision inputs are tiled in float32, as the CUDA kernels accumulate them."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _key_stop(i1: int, t_q: int, t_k: int, is_causal: bool) -> int:
    """How many keys the query block ending at row ``i1`` (exclusive) may see."""
    return min(t_k, i1 + t_k - t_q) if is_causal else t_k


def _diagonal_mask(i0: int, i1: int, j0: int, j1: int, t_q: int, t_k: int, device) -> Tensor | None:
    """``(i1 - i0, j1 - j0)`` bool, True on keys in a query's future; None if the tile has none."""
    offset = t_k - t_q  # query row i sits at key position i + offset
    if j1 - 1 <= i0 + offset:  # the tile's last key is not after its first query: all visible
        return None
    q_pos = torch.arange(i0, i1, device=device)[:, None] + offset
    k_pos = torch.arange(j0, j1, device=device)[None, :]
    return k_pos > q_pos


# ----------------------------------------------------------------------------------- forward
def flash_attention_forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    is_causal: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Tiled attention with the online softmax. Returns ``(out (..., T_q, d_v), lse (..., T_q))``.

    ``out`` equals ``softmax(q kᵀ · scale) v`` (``scale`` defaults to ``1/√d``); ``lse`` is each row's
    log-sum-exp of scores, ``log Σ_j exp(s_ij)``, what the backward pass needs to rebuild the weights.
    With ``is_causal`` the queries are the last ``T_q`` positions of the keys' sequence (with
    ``T_q == T_k``: query ``i`` sees keys ``0 .. i``, as ``scaled_dot_product_attention(is_causal=True)``);
    key blocks wholly in a query block's future are skipped, the block on the diagonal masked.
    No tensor larger than ``(..., block_size, block_size)`` is formed besides the inputs and outputs.
    """
    scale = _check(q, k, v, is_causal, block_size, scale, "flash_attention_forward")
    t_q, t_k = q.shape[-2], k.shape[-2]
    work = _work_dtype(q.dtype)
    out = q.new_empty(*q.shape[:-1], v.shape[-1])  # (..., T_q, d_v)
    lse = q.new_empty(q.shape[:-1], dtype=work)  # (..., T_q)
    for i0 in range(0, t_q, block_size):
        i1 = min(i0 + block_size, t_q)
        q_i = q[..., i0:i1, :].to(work) * scale  # (..., b_q, d), scaled once per query block
        m = q_i.new_full(q_i.shape[:-1], float("-inf"))  # (..., b_q): running max of the scores
        ell = q_i.new_zeros(q_i.shape[:-1])  # (..., b_q): running sum of exp(s - m), the ℓ of the docs
        acc = q_i.new_zeros(*q_i.shape[:-1], v.shape[-1])  # (..., b_q, d_v): running sum of exp(s - m) v
        for j0 in range(0, _key_stop(i1, t_q, t_k, is_causal), block_size):
            j1 = min(j0 + block_size, t_k)
            k_j, v_j = k[..., j0:j1, :].to(work), v[..., j0:j1, :].to(work)  # (..., b_k, d), (..., b_k, d_v)
            s = q_i @ k_j.transpose(-2, -1)  # (..., b_q, b_k): this tile's scores
            if is_causal and (future := _diagonal_mask(i0, i1, j0, j1, t_q, t_k, q.device)) is not None:
                s = s.masked_fill(future, float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1))  # finite: key 0 is visible to every query
            p = torch.exp(s - m_new[..., None])  # (..., b_q, b_k), at most 1
            rescale = torch.exp(m - m_new)  # (..., b_q): 0 on the first tile (m = -inf)
            ell = rescale * ell + p.sum(dim=-1)
            acc = rescale[..., None] * acc + p @ v_j
            m = m_new
        out[..., i0:i1, :] = (acc / ell[..., None]).to(out.dtype)
        lse[..., i0:i1] = m + torch.log(ell)
    return out, lse


# ----------------------------------------------------------------------------------- backward
def flash_attention_backward(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    is_causal: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
    scale: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(dq, dk, dv)`` of attention from ``out`` and ``lse``, recomputing the weights tile by tile.

    With ``P = exp(S - L)`` (a tile of weights, rebuilt from the scores and the saved log-sum-exp),
    ``dV += Pᵀ dO``, ``dP = dO Vᵀ``, ``dS = P ∘ (dP - D)`` with ``D = rowsum(dO ∘ O)`` (the softmax's
    Jacobian, one number per row), ``dQ += dS K · scale`` and ``dK += dSᵀ Q · scale``.
    """
    scale = _check(q, k, v, is_causal, block_size, scale, "flash_attention_backward")
    if grad_out.shape != out.shape or out.shape != (*q.shape[:-1], v.shape[-1]) or lse.shape != q.shape[:-1]:
        raise ValueError(
            f"flash_attention_backward: grad_out {tuple(grad_out.shape)} and out {tuple(out.shape)} must be "
            f"{(*q.shape[:-1], v.shape[-1])}, lse {tuple(lse.shape)} must be {tuple(q.shape[:-1])}"
        )
    t_q, t_k = q.shape[-2], k.shape[-2]
    work = _work_dtype(q.dtype)
    d_o = grad_out.to(work)
    D = (d_o * out.to(work)).sum(dim=-1)  # (..., T_q): rowsum(dO ∘ O) = Σ_j P_ij dP_ij
    dq = torch.zeros_like(q, dtype=work)
    dk = torch.zeros_like(k, dtype=work)
    dv = torch.zeros_like(v, dtype=work)
    for i0 in range(0, t_q, block_size):
        i1 = min(i0 + block_size, t_q)
        q_i = q[..., i0:i1, :].to(work)  # (..., b_q, d)
        do_i = d_o[..., i0:i1, :]  # (..., b_q, d_v)
        for j0 in range(0, _key_stop(i1, t_q, t_k, is_causal), block_size):
            j1 = min(j0 + block_size, t_k)
            k_j, v_j = k[..., j0:j1, :].to(work), v[..., j0:j1, :].to(work)
            s = (q_i @ k_j.transpose(-2, -1)) * scale  # (..., b_q, b_k): the forward's tile, again
            if is_causal and (future := _diagonal_mask(i0, i1, j0, j1, t_q, t_k, q.device)) is not None:
                s = s.masked_fill(future, float("-inf"))
            p = torch.exp(s - lse[..., i0:i1, None])  # (..., b_q, b_k): the weights, rebuilt
            dv[..., j0:j1, :] += p.transpose(-2, -1) @ do_i
            dp = do_i @ v_j.transpose(-2, -1)  # (..., b_q, b_k)
            ds = p * (dp - D[..., i0:i1, None])  # the softmax's backward, row by row
            dq[..., i0:i1, :] += (ds @ k_j) * scale
            dk[..., j0:j1, :] += (ds.transpose(-2, -1) @ q_i) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class _FlashAttention(torch.autograd.Function):
    """Forward: tiles with the online softmax. Saved for backward: the output and the log-sum-exp
    (besides the inputs, which the caller holds anyway). Backward: the weights recomputed per tile."""

    @staticmethod
    def forward(ctx, q, k, v, is_causal, block_size, scale):
        out, lse = flash_attention_forward(q, k, v, is_causal, block_size, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.options = (is_causal, block_size, scale)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(grad_out, q, k, v, out, lse, *ctx.options)
        return dq, dk, dv, None, None, None


def flash_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    is_causal: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
    scale: float | None = None,
) -> Tensor:
    """Exact attention ``softmax(q kᵀ · scale) v`` computed FlashAttention's way. Returns ``(..., T_q, d_v)``.

    Equal to ``torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=is_causal,
    scale=scale)`` (for ``is_causal`` with ``T_q < T_k`` the queries are the *last* positions, as
    with a KV cache and :func:`~transformer_core.attention.causal_mask`, where SDPA would align
    them to the first). The forward pass tiles queries and keys into blocks of ``block_size`` and
    never forms the ``(T_q, T_k)`` scores; the backward pass keeps only the output and a log-sum-exp
    per row and recomputes each tile of weights (:func:`flash_attention_backward`). First-order
    gradients only (``torch.autograd.gradcheck`` passes; a second derivative raises).
    """
    _check(q, k, v, is_causal, block_size, scale, "flash_attention")
    return _FlashAttention.apply(q, k, v, is_causal, block_size, scale)
