"""Positional encodings, the feed-forward network, the norms and the blocks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer_core import (
    DecoderLayer,
    EncoderLayer,
    FeedForward,
    LearnedPositionalEmbedding,
    RMSNorm,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    TransformerBlock,
    causal_mask,
    sinusoidal_encoding,
)
from transformer_core.layers import make_norm

# ----------------------------------------------------------------------------- sinusoidal


def test_sinusoidal_table_follows_the_paper():
    d = 16
    pe = sinusoidal_encoding(50, d)
    assert pe.shape == (50, d) and pe.dtype == torch.float32
    for pos in (0, 1, 7, 49):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_shift_is_a_fixed_rotation():
    """PE[pos + k] = R_k PE[pos], with R_k the same rotation for every pos."""
    d, k = 8, 5
    pe = sinusoidal_encoding(40, d).double()
    inv_freq = 10000 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    cos, sin = torch.cos(k * inv_freq), torch.sin(k * inv_freq)
    s, c = pe[:-k, 0::2], pe[:-k, 1::2]  # sin(a), cos(a)
    torch.testing.assert_close(pe[k:, 0::2], s * cos + c * sin, atol=1e-6, rtol=0)  # sin(a + b)
    torch.testing.assert_close(pe[k:, 1::2], c * cos - s * sin, atol=1e-6, rtol=0)  # cos(a + b)


def test_sinusoidal_module_adds_the_table_from_an_offset():
    enc = SinusoidalPositionalEncoding(8, max_len=20)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(enc(x), x + sinusoidal_encoding(20, 8)[:5])
    torch.testing.assert_close(enc(x, offset=3), x + sinusoidal_encoding(20, 8)[3:8])
    assert list(enc.state_dict()) == []  # a fixed table, not saved
    with pytest.raises(ValueError, match="positions up to 20"):
        enc(x, offset=16)
    with pytest.raises(ValueError, match="even d_model"):
        sinusoidal_encoding(10, 7)


def test_learned_positions_add_their_rows():
    pos = LearnedPositionalEmbedding(10, 4)
    x = torch.zeros(3, 4, 4)
    torch.testing.assert_close(pos(x, offset=2), pos.weight[2:6].expand(3, 4, 4))
    assert 0.005 < pos.weight.std().item() < 0.05  # GPT-2's N(0, 0.02)
    with pytest.raises(ValueError, match="learned position table holds 10"):
        pos(torch.zeros(1, 11, 4))


# ----------------------------------------------------------------------------- rotary


def rotate_complex(x, offset=0, base=10000.0):
    """RoPE written with complex numbers: pair (x0, x1) -> (x0 + i x1) * exp(i m theta)."""
    hd = x.shape[-1]
    theta = base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    m = torch.arange(offset, offset + x.shape[-2], dtype=torch.float64)
    rot = torch.polar(torch.ones(len(m), hd // 2, dtype=torch.float64), m[:, None] * theta)
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], hd // 2, 2).contiguous())
    return torch.view_as_real(z * rot).flatten(-2)


def test_rotary_matches_the_complex_number_form():
    rope = RotaryEmbedding(8, max_len=32)
    x = torch.randn(2, 3, 6, 8)
    torch.testing.assert_close(rope(x).double(), rotate_complex(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rope(x, offset=9).double(), rotate_complex(x, 9), atol=1e-5, rtol=1e-5)


def test_rotary_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding(16, max_len=64).double()
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)

    def score(m, n):
        qm = rope(q.view(1, 1, 1, 16), offset=m)
        kn = rope(k.view(1, 1, 1, 16), offset=n)
        return (qm * kn).sum().item()

    # (the angle table is stored in float32, hence rel=1e-6 even in float64)
    assert score(10, 3) == pytest.approx(score(40, 33), rel=1e-6)
    assert score(5, 5) == pytest.approx(float(q @ k), rel=1e-6)
    assert score(10, 3) != pytest.approx(score(10, 4), rel=1e-3)
    # a rotation keeps lengths
    torch.testing.assert_close(rope(q.view(1, 1, 1, 16), offset=17).norm(), q.norm())


def test_rotary_errors():
    with pytest.raises(ValueError, match="even head_dim"):
        RotaryEmbedding(7)
    with pytest.raises(ValueError, match="rotary table holds 8"):
        RotaryEmbedding(4, max_len=8)(torch.zeros(1, 1, 5, 4), offset=4)


# ----------------------------------------------------------------------------- feed-forward, norms


@pytest.mark.parametrize(
    "activation, fn",
    [
        ("relu", F.relu),
        ("gelu", lambda h: 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))),
        ("gelu_tanh", lambda h: 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))),
    ],
)
def test_feed_forward_formula(activation, fn):
    ff = FeedForward(8, 32, activation).eval()
    x = torch.randn(2, 5, 8)
    expected = fn(x @ ff.fc1.weight.T + ff.fc1.bias) @ ff.fc2.weight.T + ff.fc2.bias
    torch.testing.assert_close(ff(x), expected)


def test_swiglu_formula_and_parameter_count():
    ff = FeedForward(8, 12, "swiglu", bias=False)
    x = torch.randn(3, 8)
    expected = (F.silu(x @ ff.fc1.weight.T) * (x @ ff.gate.weight.T)) @ ff.fc2.weight.T
    torch.testing.assert_close(ff(x), expected)
    assert sum(p.numel() for p in ff.parameters()) == 3 * 8 * 12
    with pytest.raises(ValueError, match="activation must be one of"):
        FeedForward(8, 12, "tanh")


def test_rmsnorm_formula_and_torch_parity():
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 8) * 3 + 1
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    if hasattr(nn, "RMSNorm"):
        ref = nn.RMSNorm(8, eps=1e-6)
        ref.weight.data.copy_(norm.weight.data)
        torch.testing.assert_close(norm(x), ref(x))
    # a bfloat16 model: normalised in float32 inside, returned in bfloat16
    y = norm.bfloat16()(x.bfloat16())
    assert y.dtype == torch.bfloat16


def bf16_rmsnorm_relative_errors(forward) -> Tensor:
    """Relative errors of a bf16 RMSNorm against the exact (float64) one on the same bf16 inputs."""
    torch.manual_seed(0)
    d = 512
    weight = torch.empty(d).uniform_(0.5, 1.5).bfloat16()
    x = (torch.randn(256, d) * 3 + 1).bfloat16()
    x64 = x.double()
    exact = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6) * weight.double()
    y = forward(x, weight)
    assert y.dtype == torch.bfloat16
    return (y.double() - exact).abs() / exact.abs()


# A float32 reduction leaves two roundings to bfloat16 (x * rms, then * weight): each at most half a
# unit in the last place, 2^-8 of the value, so never more than 2^-7 in all. Squares, mean and rsqrt
# computed in bfloat16 add roundings of their own and go past it (a running bf16 sum by far).
TWO_BF16_ROUNDINGS = 2.0**-7 * (1 + 2.0**-7)


def test_bf16_rmsnorm_reduces_in_float32():
    def package(x, weight):
        norm = RMSNorm(x.shape[-1], eps=1e-6).bfloat16()
        with torch.no_grad():
            norm.weight.copy_(weight)
        return norm(x)

    errors = bf16_rmsnorm_relative_errors(package)
    assert errors.max() <= TWO_BF16_ROUNDINGS, (
        f"RMSNorm in bfloat16 is off by up to {errors.max():.3g} of the value, more than two "
        f"roundings ({TWO_BF16_ROUNDINGS:.3g}): is the mean of squares computed in bfloat16?"
    )


def test_the_bf16_bound_catches_a_norm_computed_in_bf16():
    def in_bf16(x, weight):  # what the test must reject
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight

    assert bf16_rmsnorm_relative_errors(in_bf16).max() > TWO_BF16_ROUNDINGS


def test_make_norm():
    assert isinstance(make_norm("layernorm", 8), nn.LayerNorm)
    assert isinstance(make_norm("rmsnorm", 8), RMSNorm)
    assert make_norm("layernorm", 8, bias=False).bias is None
    with pytest.raises(ValueError, match="norm must be one of"):
        make_norm("batchnorm", 8)


# ----------------------------------------------------------------------------- blocks vs PyTorch's layers

D, H, FF = 16, 4, 32


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.3
            is_gain = ("norm" in name or "ln_" in name) and name.endswith("weight")
            p.copy_(noise + 1.0 if is_gain else noise)  # norm gains near 1, the rest near 0
    return module


def copy_ff_and_norms(ours, ref, norms):
    """PyTorch's norm1, norm2 (, norm3) are the block's norms in order: ln_1 (, ln_cross), ln_2."""
    with torch.no_grad():
        ours.mlp.fc1.weight.copy_(ref.linear1.weight)
        ours.mlp.fc1.bias.copy_(ref.linear1.bias)
        ours.mlp.fc2.weight.copy_(ref.linear2.weight)
        ours.mlp.fc2.bias.copy_(ref.linear2.bias)
        for name, theirs in norms.items():
            getattr(ours, name).load_state_dict(getattr(ref, theirs).state_dict())


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_encoder_layer_matches_torch(norm_first):
    ref = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    randomise(ref).eval()
    ours = EncoderLayer(D, H, FF, dropout=0.0, norm_first=norm_first).eval()
    ours.attn.load_from_torch(ref.self_attn)
    copy_ff_and_norms(ours, ref, {"ln_1": "norm1", "ln_2": "norm2"})
    x = torch.randn(2, 7, D)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, -3:] = True
    out, _ = ours(x, key_padding_mask=pad)
    expected = ref(x, src_key_padding_mask=pad)
    keep = ~pad  # torch's fast path may leave padded positions as zeros: compare real tokens
    torch.testing.assert_close(out[keep], expected[keep], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_decoder_layer_matches_torch(norm_first):
    ref = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    randomise(ref).eval()
    ours = DecoderLayer(D, H, FF, dropout=0.0, norm_first=norm_first).eval()
    ours.attn.load_from_torch(ref.self_attn)
    ours.cross_attn.load_from_torch(ref.multihead_attn)
    copy_ff_and_norms(ours, ref, {"ln_1": "norm1", "ln_cross": "norm2", "ln_2": "norm3"})
    x, memory = torch.randn(2, 6, D), torch.randn(2, 9, D)
    mem_pad = torch.zeros(2, 9, dtype=torch.bool)
    mem_pad[0, -2:] = True
    out, w_self, w_cross = ours(x, memory, memory_key_padding_mask=mem_pad, need_weights=True)
    expected = ref(x, memory, tgt_mask=~causal_mask(6), memory_key_padding_mask=mem_pad)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    assert w_self.shape == (2, H, 6, 6) and w_cross.shape == (2, H, 6, 9)
    assert (w_self.triu(1) == 0).all()
    assert (w_cross[0, ..., -2:] == 0).all()


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_gpt_block_wiring(norm_first):
    """Pre-norm: x + f(norm(x)). Post-norm: norm(x + f(x)). Written out with the block's own parts."""
    block = TransformerBlock(D, H, FF, norm_first=norm_first).eval()
    randomise(block)
    x = torch.randn(2, 5, D)
    out, _ = block(x)

    def attn(h):
        return block.attn(h, is_causal=True)[0]

    if norm_first:
        h = x + attn(block.ln_1(x))
        expected = h + block.mlp(block.ln_2(h))
    else:
        h = block.ln_1(x + attn(x))
        expected = block.ln_2(h + block.mlp(h))
    torch.testing.assert_close(out, expected)
    if not norm_first:  # post-norm output rows are normalised (then scaled and shifted)
        z = (out - block.ln_2.bias) / block.ln_2.weight
        torch.testing.assert_close(z.mean(-1), torch.zeros(2, 5), atol=1e-4, rtol=0)
