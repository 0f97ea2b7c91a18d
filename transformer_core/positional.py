"""Positional information: sinusoidal (the paper's), learned, and rotary (RoPE).

Attention by itself is permutation-equivariant: shuffle the tokens and the outputs shuffle the same
way. These modules give each position an identity the model can use.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "sinusoidal_encoding",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "RotaryEmbedding",
    "apply_rotary",
]


def sinusoidal_encoding(max_len: int, d_model: int) -> Tensor:
    """The paper's table ``PE[pos, 2i] = sin(pos / 10000^(2i/d))``, ``PE[pos, 2i+1] = cos(...)``.

    Returns ``(max_len, d_model)``. Low dimensions oscillate fast, high ones slowly, so every position
    gets a distinct pattern, and ``PE[pos + k]`` is a fixed rotation of ``PE[pos]``.
    """
    if max_len < 1 or d_model < 2 or d_model % 2:
        raise ValueError(f"need max_len >= 1 and an even d_model >= 2, got {max_len}, {d_model}")
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * inv_freq)
    pe[:, 1::2] = torch.cos(pos * inv_freq)
    return pe.float()


def _check_length(T: int, offset: int, max_len: int, what: str) -> None:
    if offset + T > max_len:
        raise ValueError(
            f"sequence needs positions up to {offset + T - 1}, but the {what} holds {max_len}; "
            f"shorten the input or build the model with a larger context_length"
        )


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to ``(B, T, D)`` embeddings (no parameters)."""

    def __init__(self, d_model: int, max_len: int = 5000) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        T = x.shape[1]
        _check_length(T, offset, self.pe.shape[0], "sinusoidal table")
        return x + self.pe[offset : offset + T].to(x.dtype)


class LearnedPositionalEmbedding(nn.Module):
    """A trained vector per position (GPT-2's ``wpe``), added to ``(B, T, D)`` embeddings."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_len, d_model))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        T = x.shape[1]
        _check_length(T, offset, self.weight.shape[0], "learned position table")
        return x + self.weight[offset : offset + T]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair ``(x[2i], x[2i+1])`` of ``x`` ``(B, H, T, hd)`` by the angles in cos/sin ``(T, hd/2)``."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021) applied to queries and keys inside attention.

    Position ``m`` rotates each 2-D pair of a head's vector by ``m * θ_i``. A dot product of a query at
    ``m`` and a key at ``n`` then depends on ``m - n`` only: attention sees relative position.
    """

    def __init__(self, head_dim: int, max_len: int = 4096, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head_dim, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq  # (max_len, hd/2)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """``x``: ``(B, H, T, head_dim)`` at positions ``offset .. offset + T - 1``."""
        T = x.shape[-2]
        _check_length(T, offset, self.cos.shape[0], "rotary table")
        cos = self.cos[offset : offset + T].to(x.dtype)
        sin = self.sin[offset : offset + T].to(x.dtype)
        return apply_rotary(x, cos, sin)
