"""Attention whose cost grows linearly with the sequence length: sliding windows and linear attention.

Full causal attention compares every query with every earlier key: ``T²/2`` scores per head, and the
explicit path keeps a ``(T, T)`` matrix of weights for the backward pass. Chapter 14 builds two ways
around that and measures what each costs and buys.

* **Sliding-window attention** (local attention; Longformer, Mistral): query ``i`` sees only the last
  ``window`` keys, ``i - window + 1 .. i``. :func:`sliding_window_attention` computes it block by
  block, so it never forms a ``(T, T)`` matrix: each block of ``b`` queries meets the
  ``window - 1 + b`` keys it can see, and the work is ``O(T · window)``.
  :func:`sliding_window_attention_reference` is the same thing done the slow way, full attention with a
  band mask, to check against and to draw.
* **Linear attention** (Katharopoulos et al. 2020, "Transformers are RNNs"): replace
  ``exp(q · k)`` by ``φ(q) · φ(k)`` with the feature map ``φ(x) = elu(x) + 1 > 0``. The product
  ``φ(Q) (φ(K)ᵀ V)`` can then be computed right to left, in ``O(T · d²)``; the causal version keeps
  running sums of ``φ(k) vᵀ`` (:func:`linear_attention`, computed in chunks: exact, and it keeps
  little for the backward pass). :func:`linear_attention_quadratic` forms the ``(T, T)`` weights
  explicitly, to check against and to draw.

:class:`SlidingWindowAttention` and :class:`LinearAttention` are multi-head modules with the
projections, arguments and return values of :class:`~transformer_core.attention.MultiHeadAttention`
(they are subclasses), so they drop into a :class:`~transformer_core.blocks.TransformerBlock`;
``GPTConfig(attention="sliding_window", window=16)`` or ``attention="linear"`` builds such a GPT.

Shapes: ``q, k, v`` are ``(B, H, T, hd)``; outputs ``(B, H, T, hd_v)``; weights ``(B, H, T_q, T_k)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import MultiHeadAttention
from .validation import check_int, check_number

__all__ = [
    "ATTENTION_KINDS",
    "sliding_window_mask",
    "sliding_window_attention",
    "sliding_window_attention_reference",
    "elu_feature_map",
    "linear_attention",
    "linear_attention_quadratic",
    "SlidingWindowAttention",
    "LinearAttention",
    "make_attention",
]

ATTENTION_KINDS = ("full", "sliding_window", "linear")


# ----------------------------------------------------------------------------------- input checks
def _check_window(window: object) -> int:
    if isinstance(window, bool) or not isinstance(window, int):
        raise TypeError(f"window must be an int (how many keys each query sees, itself included), got {window!r}")
    if window < 1:
        raise ValueError(f"window must be >= 1 (each query sees at least itself), got {window}")
    return window


def _check_qkv(q: Tensor, k: Tensor, v: Tensor, name: str) -> None:
    for t, n in ((q, "q"), (k, "k"), (v, "v")):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {n} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: {n} must be a floating-point tensor, got {t.dtype}; convert it with .float()")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"{name}: q, k, v must be 4-D (B, H, T, head_dim); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.dtype != k.dtype or k.dtype != v.dtype:
        raise TypeError(f"{name}: q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
        raise ValueError(
            f"{name}: q, k, v must have the same batch and head sizes (B, H); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{name}: q and k need the same head width, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{name}: k and v need the same length, got {k.shape[-2]} and {v.shape[-2]}")
    if q.shape[-2] > k.shape[-2]:
        raise ValueError(
            f"{name}: more queries ({q.shape[-2]}) than keys ({k.shape[-2]}); causal queries are the last "
            "positions of the keys' sequence"
        )


# ----------------------------------------------------------------------------------- sliding window
def sliding_window_mask(
    t_q: int, window: int, t_k: int | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Boolean ``(t_q, t_k)`` band, ``True`` where query ``i`` may see key ``j``: ``0 <= i - j < window``.

    Queries are the last ``t_q`` positions of the ``t_k`` keys (as with a KV cache), like
    :func:`~transformer_core.attention.causal_mask`; with ``window >= t_k`` the band is the whole
    causal triangle.
    """
    _check_window(window)
    t_k = t_q if t_k is None else t_k
    if t_q < 1 or t_k < t_q:
        raise ValueError(f"sliding_window_mask needs 1 <= t_q <= t_k, got t_q={t_q}, t_k={t_k}")
    q_pos = torch.arange(t_k - t_q, t_k, device=device)[:, None]
    k_pos = torch.arange(t_k, device=device)[None, :]
    distance = q_pos - k_pos  # how far back key j lies from query i
    return (distance >= 0) & (distance < window)


def sliding_window_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, window: int, dropout_p: float = 0.0, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """Sliding-window attention the quadratic way: full ``(T_q, T_k)`` scores, band-masked.

    For checking and for heatmaps on short inputs. Returns ``(out, weights)``; the weights are
    exactly 0 outside the band and each row sums to 1.
    """
    _check_qkv(q, k, v, "sliding_window_attention_reference")
    _check_window(window)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    band = sliding_window_mask(q.shape[-2], window, k.shape[-2], device=q.device)  # (T_q, T_k)
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T_q, T_k)
    weights = torch.softmax(scores.masked_fill(~band, float("-inf")), dim=-1)  # every row keeps its own key
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights


def sliding_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    scale: float | None = None,
    block_size: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Causal attention in which query ``i`` sees keys ``i - window + 1 .. i``, in ``O(T · window)``.

    The sequence is cut into blocks of ``block_size`` queries (default: ``window``, at most ``T``).
    Block ``n`` starts at position ``n·b``; its queries can see keys from ``n·b - window + 1`` on, so
    each block meets ``P + b`` keys, where ``P`` (``window - 1`` rounded up to whole blocks) keys come
    before the block. Scores are ``(B, H, T/b, b, P + b)``: linear in ``T`` for a fixed window.

    With ``need_weights`` the ``(B, H, T_q, T_k)`` weights are returned too, computed by
    :func:`sliding_window_attention_reference` (a ``(T, T)`` matrix: for short inputs and heatmaps).
    With fewer queries than keys (decoding with a KV cache) the queries are the last positions and
    only the last ``window + T_q - 1`` keys are used.
    """
    _check_qkv(q, k, v, "sliding_window_attention")
    _check_window(window)
    if need_weights:
        return sliding_window_attention_reference(q, k, v, window, dropout_p, scale)
    B, H, T, hd = q.shape
    S = k.shape[-2]
    scale = 1.0 / math.sqrt(hd) if scale is None else scale
    if T < S:  # decoding: T new queries at the end; older keys than the window are never read
        first = max(0, S - T - window + 1)
        out, _ = sliding_window_attention_reference(q, k[..., first:, :], v[..., first:, :], window, dropout_p, scale)
        return out, None

    b = check_int("block_size", min(window, T) if block_size is None else block_size)
    n_blocks = -(-T // b)  # ceil
    P = -(-(window - 1) // b) * b  # keys before a block that its queries may need, in whole blocks
    pad_end = n_blocks * b - T  # the extra queries at the end see only keys before them, then are dropped
    q_blocks = F.pad(q, (0, 0, 0, pad_end)).view(B, H, n_blocks, b, hd)  # (B, H, nb, b, hd)
    k_pad = F.pad(k, (0, 0, P, pad_end))  # (B, H, P + nb·b, hd): P zero keys in front (masked below)
    v_pad = F.pad(v, (0, 0, P, pad_end))
    # keys of block n: padded positions n·b .. n·b + P + b - 1, i.e. real positions n·b - P .. n·b + b - 1
    k_win = k_pad.unfold(2, P + b, b).transpose(-2, -1)  # (B, H, nb, P + b, hd), a strided view
    v_win = v_pad.unfold(2, P + b, b).transpose(-2, -1)

    a = torch.arange(b, device=q.device)[:, None]  # query offset inside its block
    c = torch.arange(P + b, device=q.device)[None, :]  # key offset inside the block's keys
    distance = a + P - c  # query position minus key position: the same for every block
    band = (distance >= 0) & (distance < window)  # (b, P + b)
    key_pos = torch.arange(n_blocks, device=q.device)[:, None] * b - P + c  # (nb, P + b) real key positions
    allowed = band[None] & (key_pos >= 0)[:, None, :]  # (nb, b, P + b): no key before the start

    scores = (q_blocks @ k_win.transpose(-2, -1)) * scale  # (B, H, nb, b, P + b)
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)  # own key always allowed
    if dropout_p > 0:
        weights = F.dropout(weights, p=dropout_p)
    out = (weights @ v_win).reshape(B, H, n_blocks * b, v.shape[-1])  # (B, H, nb·b, hd_v)
    return out[:, :, :T], None


# ----------------------------------------------------------------------------------- linear attention
def elu_feature_map(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1: positive everywhere (so the weights are), smooth, and cheap."""
    return F.elu(x) + 1.0


def linear_attention_quadratic(q: Tensor, k: Tensor, v: Tensor, causal: bool = True,
                               feature_map: Callable[[Tensor], Tensor] = elu_feature_map,
                               eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Linear attention written as attention: weights ``φ(q_i)·φ(k_j) / Σ_j' φ(q_i)·φ(k_j')``.

    ``O(T²)``, for checking and for drawing the effective ``(T_q, T_k)`` weights (rows sum to 1,
    up to ``eps``). With ``causal`` the queries are the last ``T_q`` positions of the keys.
    """
    _check_qkv(q, k, v, "linear_attention_quadratic")
    fq, fk = feature_map(q), feature_map(k)
    scores = fq @ fk.transpose(-2, -1)  # (B, H, T_q, T_k), all > 0
    if causal:
        allowed = sliding_window_mask(q.shape[-2], k.shape[-2], k.shape[-2], device=q.device)  # the causal triangle
        scores = scores.masked_fill(~allowed, 0.0)
    weights = scores / (scores.sum(dim=-1, keepdim=True) + eps)
    return weights @ v, weights


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool = True,
    feature_map: Callable[[Tensor], Tensor] = elu_feature_map,
    eps: float = 1e-6,
    chunk_size: int = 64,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Linear attention (Katharopoulos et al. 2020) in ``O(T · d²)``.

    Non-causal: ``out = φ(Q) (φ(K)ᵀ V) / (φ(Q) · Σ_j φ(k_j))``, the ``(d, d_v)`` matrix first.

    Causal: query ``i`` needs the running sums ``S_i = Σ_{j<=i} φ(k_j) v_jᵀ`` and
    ``z_i = Σ_{j<=i} φ(k_j)``. Keeping ``S_i`` for every position costs ``T · d · d_v`` numbers, so the
    sums are taken per chunk of ``chunk_size`` positions: a cumulative sum over chunks carries the state
    from one chunk to the next, and inside a chunk a small ``(c, c)`` masked product does the rest. The
    result is the same (``chunk_size=1`` is the pure recurrent form). With fewer queries than keys
    (decoding with a KV cache) the queries are the last positions.

    ``need_weights`` also returns the effective ``(B, H, T_q, T_k)`` weights of
    :func:`linear_attention_quadratic` (quadratic: short inputs only).
    """
    _check_qkv(q, k, v, "linear_attention")
    check_int("chunk_size", chunk_size)
    check_number("eps", eps, minimum=0)
    weights = linear_attention_quadratic(q, k, v, causal, feature_map, eps)[1] if need_weights else None
    fq, fk = feature_map(q), feature_map(k)  # (B, H, T, d), (B, H, S, d), all > 0
    if not causal:
        kv = fk.transpose(-2, -1) @ v  # (B, H, d, d_v): the keys summed once, for every query
        num = fq @ kv  # (B, H, T, d_v)
        den = fq @ fk.sum(dim=-2).unsqueeze(-1)  # (B, H, T, 1)
        return num / (den + eps), weights

    B, H, T, d = fq.shape
    S, dv = fk.shape[-2], v.shape[-1]
    # keys before the first query (a KV cache's past) enter as a starting state
    past = S - T
    state = fk[..., :past, :].transpose(-2, -1) @ v[..., :past, :]  # (B, H, d, d_v)
    norm = fk[..., :past, :].sum(dim=-2)  # (B, H, d)
    fk, v = fk[..., past:, :], v[..., past:, :]

    c = min(chunk_size, T)
    n = -(-T // c)
    pad = n * c - T  # zero-padded positions at the end: φ is never applied to them, they add nothing
    fq_c = F.pad(fq, (0, 0, 0, pad)).view(B, H, n, c, d)  # (B, H, n, c, d)
    fk_c = F.pad(fk, (0, 0, 0, pad)).view(B, H, n, c, d)
    v_c = F.pad(v, (0, 0, 0, pad)).view(B, H, n, c, dv)

    chunk_kv = fk_c.transpose(-2, -1) @ v_c  # (B, H, n, d, d_v): Σ φ(k) vᵀ of each chunk
    chunk_k = fk_c.sum(dim=-2)  # (B, H, n, d)
    # the state *before* each chunk: the past, then a cumulative sum over the chunks before it
    # (shifted by one chunk, not "inclusive sum minus own chunk", whose rounding would leak the future)
    state_before = torch.cat([state[:, :, None], chunk_kv[:, :, :-1]], dim=2).cumsum(dim=2)  # (B, H, n, d, d_v)
    norm_before = torch.cat([norm[:, :, None], chunk_k[:, :, :-1]], dim=2).cumsum(dim=2)  # (B, H, n, d)

    inside = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()  # (c, c): earlier keys of the chunk
    local = (fq_c @ fk_c.transpose(-2, -1)).masked_fill(~inside, 0.0)  # (B, H, n, c, c)
    num = fq_c @ state_before + local @ v_c  # (B, H, n, c, d_v)
    den = (fq_c * norm_before[:, :, :, None, :]).sum(-1, keepdim=True) + local.sum(-1, keepdim=True)
    out = (num / (den + eps)).reshape(B, H, n * c, dv)[:, :, :T]
    return out, weights


# ----------------------------------------------------------------------------------- the modules
class _LinearCostSelfAttention(MultiHeadAttention):
    """MultiHeadAttention with another :meth:`~MultiHeadAttention.attend`: causal self-attention only."""

    causal_only = True

    def forward(self, x, context=None, attn_mask=None, key_padding_mask=None, is_causal=True, cache=None,
                need_weights=False):
        """``x`` ``(B, T, D)`` -> ``(out (B, T, D), weights (B, H, T, S) or None)``, as MultiHeadAttention.

        Unlike MultiHeadAttention, ``is_causal`` defaults to True. Self-attention only: ``context``,
        ``attn_mask`` and ``key_padding_mask`` must be None.
        """
        name = type(self).__name__
        if context is not None:
            raise ValueError(f"{name} is self-attention only: context must be None (use MultiHeadAttention)")
        if attn_mask is not None or key_padding_mask is not None:
            raise ValueError(f"{name} builds its own mask: attn_mask and key_padding_mask must be None")
        if self.causal_only and not is_causal:
            raise ValueError(f"{name} is causal by construction: is_causal must be True")
        if not is_causal and cache is not None:
            raise ValueError(f"{name}: a KV cache is for causal decoding; pass is_causal=True")
        return super().forward(x, is_causal=is_causal, cache=cache, need_weights=need_weights)


class SlidingWindowAttention(_LinearCostSelfAttention):
    """Causal multi-head self-attention in which each query sees only the last ``window`` keys.

    The projections (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``), grouped key/value heads and
    rotary positions are :class:`MultiHeadAttention`'s (this is a subclass), so weights load from one
    into the other; only the attention itself is :func:`sliding_window_attention`. Self-attention
    only, always causal. A KV cache works (it keeps every key, though only the last ``window`` are
    read; a rolling buffer of ``window`` keys, as in Mistral, would be enough).
    """

    def __init__(self, d_model: int, n_head: int, window: int, dropout: float = 0.0, bias: bool = True,
                 n_kv_head: int | None = None, rotary: nn.Module | None = None,
                 block_size: int | None = None) -> None:
        super().__init__(d_model, n_head, dropout, bias, n_kv_head=n_kv_head, rotary=rotary)
        self.window = _check_window(window)
        self.block_size = check_int("block_size", block_size, optional=True)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_head={self.n_head}, window={self.window}"

    def attend(self, q, k, v, attn_mask=None, key_padding_mask=None, is_causal=True, need_weights=False):
        p = self.dropout if self.training else 0.0
        return sliding_window_attention(q, k, v, self.window, p, need_weights, block_size=self.block_size)


class LinearAttention(_LinearCostSelfAttention):
    """Multi-head linear attention (elu + 1 features), causal or not, in ``O(T · d²)``.

    The same projections as :class:`MultiHeadAttention` (a subclass: its weights load as they are);
    the attention is :func:`linear_attention`. There are no attention weights to drop out, so there is
    no ``dropout`` argument (a block's residual dropout still applies). With a KV cache the running
    sums are recomputed from the cached keys and values at each step (a recurrent decoder would keep
    only the ``(d, d)`` state; an exercise of chapter 14 builds that form).
    """

    causal_only = False

    def __init__(self, d_model: int, n_head: int, bias: bool = True, n_kv_head: int | None = None,
                 rotary: nn.Module | None = None, feature_map: Callable[[Tensor], Tensor] = elu_feature_map,
                 eps: float = 1e-6, chunk_size: int = 64) -> None:
        super().__init__(d_model, n_head, 0.0, bias, n_kv_head=n_kv_head, rotary=rotary)
        if not callable(feature_map):
            raise TypeError(f"feature_map must be a function of a tensor, got {type(feature_map).__name__}")
        self.feature_map = feature_map
        self.eps, self.chunk_size = check_number("eps", eps, minimum=0), check_int("chunk_size", chunk_size)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_head={self.n_head}, chunk_size={self.chunk_size}"

    def attend(self, q, k, v, attn_mask=None, key_padding_mask=None, is_causal=True, need_weights=False):
        return linear_attention(q, k, v, is_causal, self.feature_map, self.eps, self.chunk_size, need_weights)


def make_attention(kind: str, d_model: int, n_head: int, window: int | None = None, dropout: float = 0.0,
                   bias: bool = True, n_kv_head: int | None = None,
                   rotary: nn.Module | None = None) -> MultiHeadAttention:
    """The self-attention module for ``kind`` in :data:`ATTENTION_KINDS` (what ``GPTConfig.attention`` names)."""
    if kind == "full":
        return MultiHeadAttention(d_model, n_head, dropout, bias, n_kv_head=n_kv_head, rotary=rotary)
    if kind == "sliding_window":
        if window is None:
            raise ValueError("attention='sliding_window' needs a window (how many keys each query sees)")
        return SlidingWindowAttention(d_model, n_head, window, dropout, bias, n_kv_head=n_kv_head, rotary=rotary)
    if kind == "linear":
        return LinearAttention(d_model, n_head, bias, n_kv_head=n_kv_head, rotary=rotary)
    raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {kind!r}")
