"""Transformer blocks: attention and feed-forward sublayers joined by residuals and norms.

One :class:`Block` serves every model of the book; it is built from the parts it is given:

* ``attn``, its self-attention (a :class:`~transformer_core.attention.MultiHeadAttention`, or a
  variant such as sliding-window attention), causal or not;
* ``cross_attn``, an optional second attention that reads an encoder's output (the decoder of the
  encoder-decoder);
* ``mlp``, its feed-forward network (a :class:`~transformer_core.layers.FeedForward`, or a mixture
  of experts);
* the norm (LayerNorm or RMSNorm) and where it goes:

  - **post-norm** (the 2017 paper, ``norm_first=False``): ``x = norm(x + dropout(sublayer(x)))``;
  - **pre-norm** (GPT-2 and most models since, ``norm_first=True``): ``x = x + dropout(sublayer(norm(x)))``.

Pre-norm keeps a clean residual path from the output to the input, which is why deep pre-norm stacks
train without a careful warm-up; chapter 04 measures the difference.

:class:`TransformerBlock` (GPT's), :class:`EncoderLayer` and :class:`DecoderLayer` (the paper's) are
a ``Block`` with the parts of their kind. A :class:`Stack` runs blocks in turn; its flag
``checkpoint_every`` turns on activation checkpointing (chapter 16).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import KVCache, MultiHeadAttention
from .layers import ACTIVATIONS, NORMS, FeedForward, make_norm
from .validation import Config, check_choice, check_model_shape

__all__ = ["Block", "Stack", "TransformerBlock", "EncoderLayer", "DecoderLayer", "ModelConfig", "count_parameters"]


class Block(nn.Module):
    """One Transformer layer from its parts: self-attention, optional cross-attention, feed-forward.

    ``block(x)`` maps ``(B, T, D)`` to ``(x (B, T, D), weights (B, H, T, T) or None)``; a block with
    ``cross_attn`` takes the encoder's ``memory`` ``(B, S, D)`` and returns
    ``(x, self_weights, cross_weights (B, H, T, S))``. The names are GPT-2's: ``ln_1`` and ``attn``,
    (``ln_cross`` and ``cross_attn``), ``ln_2`` and ``mlp``.
    """

    def __init__(
        self,
        attn: MultiHeadAttention,
        mlp: nn.Module,
        *,
        cross_attn: MultiHeadAttention | None = None,
        causal: bool = True,
        norm: str = "layernorm",
        norm_first: bool = True,
        dropout: float = 0.0,
        eps: float = 1e-5,
        bias: bool = True,
    ) -> None:
        super().__init__()
        d_model = attn.d_model
        self.norm_first, self.causal = norm_first, causal
        self.ln_1 = make_norm(norm, d_model, eps, bias)
        self.attn = attn
        if cross_attn is not None:
            self.ln_cross = make_norm(norm, d_model, eps, bias)
        self.cross_attn = cross_attn
        self.ln_2 = make_norm(norm, d_model, eps, bias)
        self.mlp = mlp
        self.drop = nn.Dropout(dropout)  # the paper's dropout on each sublayer's output

    def _residual(self, x: Tensor, norm: nn.Module, sublayer: Callable) -> tuple[Tensor, Tensor | None]:
        """One sublayer joined to the residual stream, its norm placed before (pre) or after (post)."""
        if self.norm_first:
            out, weights = sublayer(norm(x))
            return x + self.drop(out), weights
        out, weights = sublayer(x)
        return norm(x + self.drop(out)), weights

    def forward(self, x: Tensor, memory: Tensor | None = None, key_padding_mask: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None, cache: KVCache | None = None,
                need_weights: bool = False, attn_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        """``x`` ``(B, T, D)`` attends to itself (``key_padding_mask`` ``(B, T)``, True = padding) and,
        with cross-attention, to ``memory`` ``(B, S, D)`` (``memory_key_padding_mask`` ``(B, S)``).
        ``attn_mask`` goes to the self-attention (T5's relative position bias, a float mask)."""
        if (memory is None) != (self.cross_attn is None):
            raise ValueError("a block with cross_attn needs memory=..., and only such a block takes it")

        def attend(h: Tensor) -> tuple[Tensor, Tensor | None]:
            return self.attn(h, attn_mask=attn_mask, key_padding_mask=key_padding_mask, is_causal=self.causal,
                             cache=cache, need_weights=need_weights)

        def attend_memory(h: Tensor) -> tuple[Tensor, Tensor | None]:
            return self.cross_attn(h, context=memory, key_padding_mask=memory_key_padding_mask,
                                   need_weights=need_weights)

        x, weights = self._residual(x, self.ln_1, attend)
        out = [weights]
        if self.cross_attn is not None:
            x, cross_weights = self._residual(x, self.ln_cross, attend_memory)
            out.append(cross_weights)
        x, _ = self._residual(x, self.ln_2, lambda h: (self.mlp(h), None))
        return (x, *out)


class TransformerBlock(Block):
    """A decoder-only (GPT) block: causal multi-head self-attention, then a feed-forward network."""

    def __init__(self, d_model: int, n_head: int, d_ff: int, dropout: float = 0.0, activation: str = "gelu",
                 norm: str = "layernorm", norm_first: bool = True, bias: bool = True, eps: float = 1e-5,
                 n_kv_head: int | None = None, rotary: nn.Module | None = None) -> None:
        attn = MultiHeadAttention(d_model, n_head, dropout, bias, n_kv_head=n_kv_head, rotary=rotary)
        mlp = FeedForward(d_model, d_ff, activation, dropout, bias)
        super().__init__(attn, mlp, norm=norm, norm_first=norm_first, dropout=dropout, eps=eps, bias=bias)


class EncoderLayer(Block):
    """The paper's encoder layer: bidirectional self-attention, then a feed-forward network."""

    def __init__(self, d_model: int, n_head: int, d_ff: int, dropout: float = 0.1, activation: str = "relu",
                 norm: str = "layernorm", norm_first: bool = False, eps: float = 1e-5) -> None:
        attn = MultiHeadAttention(d_model, n_head, dropout)
        mlp = FeedForward(d_model, d_ff, activation, dropout)
        super().__init__(attn, mlp, causal=False, norm=norm, norm_first=norm_first, dropout=dropout, eps=eps)


class DecoderLayer(Block):
    """The paper's decoder layer: causal self-attention, cross-attention to the encoder, feed-forward."""

    def __init__(self, d_model: int, n_head: int, d_ff: int, dropout: float = 0.1, activation: str = "relu",
                 norm: str = "layernorm", norm_first: bool = False, eps: float = 1e-5) -> None:
        attn, cross_attn = MultiHeadAttention(d_model, n_head, dropout), MultiHeadAttention(d_model, n_head, dropout)
        mlp = FeedForward(d_model, d_ff, activation, dropout)
        super().__init__(attn, mlp, cross_attn=cross_attn, norm=norm, norm_first=norm_first, dropout=dropout,
                         eps=eps)


class Stack(nn.ModuleList):
    """Blocks run in turn: ``x, weights = stack(x, ...)`` (a decoder's stack also returns the
    cross-attention weights), one entry per block in each list.

    ``checkpoint_every = k`` checkpoints blocks 0, k, 2k, ... (0: none): such a block keeps only its
    input for the backward pass and runs its forward pass again during backward, the same gradients
    for less memory (chapter 16). It applies while gradients are recorded, without a KV cache and
    without attention weights; everything else runs the blocks as they are.
    """

    def __init__(self, blocks: Iterable[nn.Module] = (), checkpoint_every: int = 0) -> None:
        super().__init__(blocks)
        self.checkpoint_every = checkpoint_every

    def checkpointed(self, i: int) -> bool:
        return self.checkpoint_every > 0 and i % self.checkpoint_every == 0

    def forward(
        self, x: Tensor, caches: list[KVCache] | None = None, need_weights: bool = False, **kwargs
    ) -> tuple[Tensor, ...]:
        weights = []
        for i, block in enumerate(self):
            cache = None if caches is None else caches[i]
            if self.checkpointed(i) and cache is None and not need_weights and torch.is_grad_enabled():
                # use_reentrant=False: the variant PyTorch recommends; it replays the random state,
                # so that dropout draws the same masks in the recomputation
                out = checkpoint(block, x, use_reentrant=False, **kwargs)
            else:
                out = block(x, cache=cache, need_weights=need_weights, **kwargs)
            x = out[0]
            weights.append(out[1:])
        return (x, *(list(w) for w in zip(*weights, strict=True)))


@dataclass
class ModelConfig(Config):
    """The fields of a model made of token embeddings and a :class:`Stack` of blocks, checked once:
    the shared part of :class:`~transformer_core.GPTConfig` and :class:`~transformer_core.BERTConfig`.

    ``d_ff`` defaults to ``4 * d_model``; ``positional`` is one of the subclass's ``POSITIONALS``.
    """

    POSITIONALS: ClassVar[tuple[str, ...]] = ("learned", "sinusoidal")

    vocab_size: int
    context_length: int
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    d_ff: int | None = None
    dropout: float = 0.0
    activation: str = "gelu"
    norm: str = "layernorm"
    norm_first: bool = True
    positional: str = "learned"

    def __post_init__(self) -> None:
        check_model_shape(self, "vocab_size", "context_length", "n_layer", "n_head", "d_model")
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("norm", self.norm, NORMS)
        check_choice("positional", self.positional, self.POSITIONALS)
        if self.positional == "sinusoidal" and self.d_model % 2:
            raise ValueError("sinusoidal positions need an even d_model")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


def count_parameters(model: nn.Module, non_embedding: bool = False) -> int:
    """The parameters of ``model``, each once (a tied head shares the embedding's matrix).

    ``non_embedding`` leaves out the token embedding ``model.tok_emb`` and a learned position table
    ``model.pos_emb`` (GPT-2's count of a model's size; sinusoidal and rotary positions have none).
    """
    n = sum(p.numel() for p in model.parameters())
    if non_embedding:
        for name in ("tok_emb", "pos_emb"):
            table = getattr(model, name, None)
            n -= sum(p.numel() for p in table.parameters()) if isinstance(table, nn.Module) else 0
    return n
