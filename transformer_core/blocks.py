"""Transformer blocks: attention and feed-forward sublayers joined by residuals and norms.

Two placements of the norm:

* **post-norm** (the 2017 paper, ``norm_first=False``): ``x = norm(x + dropout(sublayer(x)))``;
* **pre-norm** (GPT-2 and most models since, ``norm_first=True``): ``x = x + dropout(sublayer(norm(x)))``.

Pre-norm keeps a clean residual path from the output to the input, which is why deep pre-norm stacks
train without a careful warm-up; chapter 04 measures the difference.
"""

from __future__ import annotations

from torch import Tensor, nn

from .attention import KVCache, MultiHeadAttention
from .layers import FeedForward, make_norm

__all__ = ["TransformerBlock", "EncoderLayer", "DecoderLayer"]


class TransformerBlock(nn.Module):
    """A decoder-only (GPT) block: causal self-attention, then a feed-forward network."""

    def __init__(
        self,
        d_model: int,
        n_head: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "gelu",
        norm: str = "layernorm",
        norm_first: bool = True,
        bias: bool = True,
        eps: float = 1e-5,
        n_kv_head: int | None = None,
        rotary: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.ln_1 = make_norm(norm, d_model, eps, bias)
        self.attn = MultiHeadAttention(d_model, n_head, dropout, bias, n_kv_head=n_kv_head, rotary=rotary)
        self.ln_2 = make_norm(norm, d_model, eps, bias)
        self.mlp = FeedForward(d_model, d_ff, activation, dropout, bias)
        self.drop_1 = nn.Dropout(dropout)  # the paper's dropout on each sublayer's output
        self.drop_2 = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``x``: ``(B, T, D)`` -> ``((B, T, D), weights (B, H, T, S) or None)``."""

        def attend(h: Tensor) -> tuple[Tensor, Tensor | None]:
            return self.attn(
                h, key_padding_mask=key_padding_mask, is_causal=True, cache=cache, need_weights=need_weights
            )

        if self.norm_first:
            a, w = attend(self.ln_1(x))
            x = x + self.drop_1(a)
            x = x + self.drop_2(self.mlp(self.ln_2(x)))
        else:
            a, w = attend(x)
            x = self.ln_1(x + self.drop_1(a))
            x = self.ln_2(x + self.drop_2(self.mlp(x)))
        return x, w


class EncoderLayer(nn.Module):
    """The paper's encoder layer: bidirectional self-attention, then a feed-forward network."""

    def __init__(
        self,
        d_model: int,
        n_head: int,
        d_ff: int,
        dropout: float = 0.1,
        activation: str = "relu",
        norm: str = "layernorm",
        norm_first: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_head, dropout)
        self.ff = FeedForward(d_model, d_ff, activation, dropout)
        self.norm1 = make_norm(norm, d_model, eps)
        self.norm2 = make_norm(norm, d_model, eps)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, src_key_padding_mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        def attend(h: Tensor) -> tuple[Tensor, Tensor | None]:
            return self.self_attn(h, key_padding_mask=src_key_padding_mask, need_weights=need_weights)

        if self.norm_first:
            a, w = attend(self.norm1(x))
            x = x + self.drop1(a)
            x = x + self.drop2(self.ff(self.norm2(x)))
        else:
            a, w = attend(x)
            x = self.norm1(x + self.drop1(a))
            x = self.norm2(x + self.drop2(self.ff(x)))
        return x, w


class DecoderLayer(nn.Module):
    """The paper's decoder layer: causal self-attention, cross-attention to the encoder, feed-forward."""

    def __init__(
        self,
        d_model: int,
        n_head: int,
        d_ff: int,
        dropout: float = 0.1,
        activation: str = "relu",
        norm: str = "layernorm",
        norm_first: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_head, dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_head, dropout)
        self.ff = FeedForward(d_model, d_ff, activation, dropout)
        self.norm1 = make_norm(norm, d_model, eps)
        self.norm2 = make_norm(norm, d_model, eps)
        self.norm3 = make_norm(norm, d_model, eps)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)
        self.drop3 = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``x`` ``(B, T, D)`` attends causally to itself and fully to ``memory`` ``(B, S, D)``.

        Returns ``(x, self_weights (B, H, T, T) or None, cross_weights (B, H, T, S) or None)``.
        """

        def self_attend(h: Tensor) -> tuple[Tensor, Tensor | None]:
            return self.self_attn(
                h, key_padding_mask=tgt_key_padding_mask, is_causal=True, cache=cache, need_weights=need_weights
            )

        def cross_attend(h: Tensor) -> tuple[Tensor, Tensor | None]:
            return self.cross_attn(
                h, context=memory, key_padding_mask=memory_key_padding_mask, need_weights=need_weights
            )

        if self.norm_first:
            a, w_self = self_attend(self.norm1(x))
            x = x + self.drop1(a)
            c, w_cross = cross_attend(self.norm2(x))
            x = x + self.drop2(c)
            x = x + self.drop3(self.ff(self.norm3(x)))
        else:
            a, w_self = self_attend(x)
            x = self.norm1(x + self.drop1(a))
            c, w_cross = cross_attend(x)
            x = self.norm2(x + self.drop2(c))
            x = self.norm3(x + self.drop3(self.ff(x)))
        return x, w_self, w_cross
