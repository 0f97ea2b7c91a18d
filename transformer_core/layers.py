"""The position-wise feed-forward network and the normalisation layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .validation import check_choice

__all__ = ["ACTIVATIONS", "NORMS", "FeedForward", "RMSNorm", "make_norm"]

# "gelu" is the exact erf form; "gelu_tanh" is GPT-2's approximation (Hugging Face's "gelu_new").
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "swiglu")
NORMS = ("layernorm", "rmsnorm")


class FeedForward(nn.Module):
    """``FFN(x) = W2 · act(W1 x + b1) + b2``, applied to every position independently.

    ``activation="swiglu"`` uses a gated unit, ``W2 · (silu(W1 x) ⊙ W3 x)`` (Shazeer 2020), as in
    LLaMA; it has three matrices, so give it a ``d_ff`` of about 2/3 of the usual ``4 * d_model`` to
    keep the parameter count equal.
    """

    def __init__(
        self, d_model: int, d_ff: int, activation: str = "relu", dropout: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)  # W1: expand to d_ff
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)  # W2: project back to d_model
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if activation == "swiglu" else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)  # (B, T, d_ff)
        if self.activation == "relu":
            h = F.relu(h)
        elif self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "gelu_tanh":
            h = F.gelu(h, approximate="tanh")
        else:  # swiglu
            h = F.silu(h) * self.gate(x)
        return self.fc2(self.dropout(h))


class RMSNorm(nn.Module):
    """``x / rms(x) * g``: LayerNorm without centring and without a bias (Zhang & Sennrich 2019)."""

    def __init__(self, d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        # normalise in float32 at least: squares of bfloat16 values lose too many bits
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        rms = torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (xf * rms).to(x.dtype) * self.weight


def make_norm(kind: str, d_model: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    """``"layernorm"`` or ``"rmsnorm"``."""
    if check_choice("norm", kind, NORMS) == "layernorm":
        return nn.LayerNorm(d_model, eps=eps, bias=bias)
    return RMSNorm(d_model, eps=eps)
