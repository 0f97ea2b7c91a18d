"""Sliding-window and linear attention: equal to their quadratic references, causal, trainable, and
drop-in replacements for MultiHeadAttention inside a GPT."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from transformer_core.attention import KVCache, MultiHeadAttention, scaled_dot_product_attention
from transformer_core.efficient_attention import (
    LinearAttention,
    SlidingWindowAttention,
    elu_feature_map,
    linear_attention,
    linear_attention_quadratic,
    make_attention,
    sliding_window_attention,
    sliding_window_attention_reference,
    sliding_window_mask,
)
from transformer_core.gpt import GPT, GPTConfig
from transformer_core.positional import RotaryEmbedding


def qkv(T: int, B: int = 2, H: int = 3, hd: int = 8, seed: int = 0, dtype=torch.float64, grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, hd, generator=g, dtype=dtype).requires_grad_(grad) for _ in range(3))


# ---------------------------------------------------------------------------------- the band mask
def test_sliding_window_mask_is_the_band():
    m = sliding_window_mask(5, 2)
    want = torch.tensor([
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(m, want)
    # queries at the end of the keys (a KV cache), and a window wider than the sequence = causal
    assert torch.equal(sliding_window_mask(2, 3, 5), want.new_tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]]))
    assert torch.equal(sliding_window_mask(4, 10), torch.ones(4, 4, dtype=torch.bool).tril())


# ---------------------------------------------------------------------------------- sliding window
@pytest.mark.parametrize("T", [1, 2, 7, 16, 33])
@pytest.mark.parametrize("window", [1, 2, 3, 5, 16, 40])
def test_blocked_sliding_window_equals_band_masked_full_attention(T, window):
    q, k, v = qkv(T, seed=T * 100 + window)
    out, weights = sliding_window_attention(q, k, v, window)
    assert weights is None
    # the band mask given to the package's ordinary (full) attention
    band = sliding_window_mask(T, window)
    want, _ = scaled_dot_product_attention(q, k, v, attn_mask=band, need_weights=True)
    assert_close(out, want)
    ref, ref_weights = sliding_window_attention_reference(q, k, v, window)
    assert_close(out, ref)
    assert_close(ref_weights.sum(-1), torch.ones(2, 3, T, dtype=torch.float64))
    assert (ref_weights[..., ~band] == 0).all()


@pytest.mark.parametrize("block_size", [1, 2, 3, 4, 7, 50])
def test_block_size_does_not_change_the_result(block_size):
    q, k, v = qkv(23, seed=5)
    ref, _ = sliding_window_attention_reference(q, k, v, 6)
    out, _ = sliding_window_attention(q, k, v, 6, block_size=block_size)
    assert_close(out, ref)


@pytest.mark.parametrize("T,window", [(8, 8), (8, 9), (12, 100), (1, 1)])
def test_window_covering_the_sequence_is_full_causal_attention(T, window):
    q, k, v = qkv(T, seed=3)
    out, _ = sliding_window_attention(q, k, v, window)
    want, _ = scaled_dot_product_attention(q, k, v, is_causal=True)
    assert_close(out, want)


def test_window_one_copies_each_value():
    q, k, v = qkv(9, seed=4)
    out, _ = sliding_window_attention(q, k, v, 1)
    assert_close(out, v)


def test_sliding_window_never_builds_a_t_by_t_matrix():
    """What autograd keeps grows like T · window, not T²: doubling T doubles it."""
    saved = []
    for T in (256, 512):
        q, k, v = qkv(T, B=1, H=1, dtype=torch.float32, grad=True)
        sizes = []

        def pack(t, sizes=sizes):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            sliding_window_attention(q, k, v, window=16)[0].sum()
        assert max(sizes) < T * T // 4
        saved.append(sum(sizes))
    assert saved[1] <= 2.1 * saved[0]


def test_sliding_window_with_fewer_queries_than_keys_is_the_end_of_the_band():
    q, k, v = qkv(20, seed=6)
    ref, _ = sliding_window_attention_reference(q, k, v, 5)
    for n_new in (1, 3):
        out, _ = sliding_window_attention(q[:, :, -n_new:], k, v, 5)
        assert_close(out, ref[:, :, -n_new:])


# ---------------------------------------------------------------------------------- linear attention
@pytest.mark.parametrize("T", [1, 5, 16, 37])
@pytest.mark.parametrize("chunk_size", [1, 4, 16, 64])
def test_causal_linear_attention_equals_its_quadratic_form(T, chunk_size):
    q, k, v = qkv(T, seed=T + chunk_size)
    out, _ = linear_attention(q, k, v, causal=True, chunk_size=chunk_size)
    want, weights = linear_attention_quadratic(q, k, v, causal=True)
    assert_close(out, want)
    assert (weights >= 0).all()
    assert (weights[..., ~torch.ones(T, T, dtype=torch.bool).tril()] == 0).all()
    assert_close(weights.sum(-1), torch.ones(2, 3, T, dtype=torch.float64), atol=1e-5, rtol=0)  # eps


def test_causal_linear_attention_written_out_as_an_rnn():
    """Straight from the paper: S_i = S_{i-1} + φ(k_i) v_iᵀ, z_i = z_{i-1} + φ(k_i)."""
    q, k, v = qkv(11, seed=8)
    fq, fk = elu_feature_map(q), elu_feature_map(k)
    S = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    z = torch.zeros(2, 3, 8, dtype=torch.float64)
    outs = []
    for i in range(11):
        S = S + fk[:, :, i, :, None] * v[:, :, i, None, :]
        z = z + fk[:, :, i]
        outs.append((fq[:, :, i, None, :] @ S).squeeze(-2) / ((fq[:, :, i] * z).sum(-1, keepdim=True) + 1e-6))
    out, _ = linear_attention(q, k, v)
    assert_close(out, torch.stack(outs, dim=2))


def test_noncausal_linear_attention_equals_its_quadratic_form():
    q, k, v = qkv(13, seed=9)
    out, _ = linear_attention(q, k, v, causal=False)
    want, weights = linear_attention_quadratic(q, k, v, causal=False)
    assert_close(out, want)
    assert (weights > 0).all()


def test_linear_attention_need_weights_and_a_custom_feature_map():
    q, k, v = qkv(6, seed=10)
    relu1 = lambda x: torch.relu(x) + 0.1  # noqa: E731
    out, weights = linear_attention(q, k, v, feature_map=relu1, need_weights=True)
    want, want_w = linear_attention_quadratic(q, k, v, feature_map=relu1)
    assert_close(out, want)
    assert_close(weights, want_w)


def test_linear_attention_with_fewer_queries_than_keys_continues_the_sums():
    q, k, v = qkv(20, seed=11)
    ref, _ = linear_attention_quadratic(q, k, v)
    for n_new in (1, 5):
        out, _ = linear_attention(q[:, :, -n_new:], k, v, chunk_size=2)
        assert_close(out, ref[:, :, -n_new:])


# ---------------------------------------------------------------------------------- causality, grads
def _module(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "sliding":
        return SlidingWindowAttention(16, 4, window=3)
    return LinearAttention(16, 4, chunk_size=4)


@pytest.mark.parametrize("kind", ["sliding", "linear"])
def test_changing_a_future_token_leaves_earlier_outputs_alone(kind):
    attn = _module(kind).double().eval()
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    out, _ = attn(x)
    for t in (0, 5, 11):
        x2 = x.clone()
        x2[:, t] += torch.randn(2, 16, dtype=torch.float64) * 5
        out2, _ = attn(x2)
        assert_close(out2[:, :t], out[:, :t], atol=0, rtol=0)
        assert not torch.allclose(out2[:, t], out[:, t])


def test_sliding_window_forgets_tokens_out_of_the_window():
    attn = _module("sliding").double().eval()  # one layer, window 3: position 8 sees 6, 7, 8
    x = torch.randn(1, 10, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 5] += 10.0
    out, out2 = attn(x)[0], attn(x2)[0]
    assert_close(out2[:, 8:], out[:, 8:], atol=0, rtol=0)
    assert not torch.allclose(out2[:, 7], out[:, 7])


@pytest.mark.parametrize("kind", ["sliding", "linear"])
def test_gradients_reach_every_projection_and_the_input(kind):
    attn = _module(kind)
    x = torch.randn(2, 9, 16, requires_grad=True)
    out, _ = attn(x)
    out.pow(2).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("fn", ["sliding", "linear"])
def test_gradcheck_of_the_functions(fn):
    q, k, v = qkv(7, B=1, H=2, hd=3, seed=12, grad=True)
    if fn == "sliding":
        f = lambda q, k, v: sliding_window_attention(q, k, v, 3, block_size=2)[0]  # noqa: E731
    else:
        f = lambda q, k, v: linear_attention(q, k, v, chunk_size=3)[0]  # noqa: E731
    assert torch.autograd.gradcheck(f, (q, k, v))


# ---------------------------------------------------------------------------------- the modules
def test_modules_load_multi_head_attention_weights():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).double().eval()
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    sw = SlidingWindowAttention(16, 4, window=10).double().eval()
    sw.load_state_dict(mha.state_dict())
    assert_close(sw(x)[0], mha(x, is_causal=True)[0])  # a window as long as the input: full attention
    sw4 = SlidingWindowAttention(16, 4, window=4).double().eval()
    sw4.load_state_dict(mha.state_dict())
    band = sliding_window_mask(10, 4)
    assert_close(sw4(x)[0], mha(x, attn_mask=band)[0])
    lin = LinearAttention(16, 4).double()
    lin.load_state_dict(mha.state_dict())
    out, w = lin(x, need_weights=True)
    assert w.shape == (2, 4, 10, 10)
    out_nc, w_nc = lin(x, is_causal=False, need_weights=True)
    assert (w_nc > 0).all() and not torch.allclose(out, out_nc)


@pytest.mark.parametrize("kind", ["sliding", "linear"])
def test_modules_with_grouped_heads_rotary_and_a_kv_cache(kind):
    torch.manual_seed(1)
    rope = RotaryEmbedding(4, 64)
    if kind == "sliding":
        attn = SlidingWindowAttention(16, 4, window=5, n_kv_head=2, rotary=rope)
    else:
        attn = LinearAttention(16, 4, n_kv_head=2, rotary=rope, chunk_size=3)
    attn = attn.double().eval()
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    full, _ = attn(x)
    cache = KVCache()
    steps = [attn(x[:, :4], cache=cache)[0]] + [attn(x[:, t : t + 1], cache=cache)[0] for t in range(4, 11)]
    assert_close(torch.cat(steps, dim=1), full)


@pytest.mark.parametrize("attention,window", [("sliding_window", 4), ("linear", None), ("full", None)])
def test_gpt_config_picks_the_attention(attention, window):
    cfg = GPTConfig(vocab_size=13, context_length=24, n_layer=2, n_head=2, d_model=16, attention=attention, window=window)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    kinds = {"full": MultiHeadAttention, "sliding_window": SlidingWindowAttention, "linear": LinearAttention}
    assert all(type(b.attn) is kinds[attention] for b in model.blocks)
    idx = torch.randint(13, (2, 10))
    logits, attn = model(idx, return_attention=True)
    assert logits.shape == (2, 10, 13) and attn.shape == (2, 2, 2, 10, 10)
    assert_close(attn.sum(-1), torch.ones(2, 2, 2, 10), atol=1e-4, rtol=0)
    assert (attn.triu(1) == 0).all()
    if attention == "sliding_window":
        assert (attn[..., ~sliding_window_mask(10, 4)] == 0).all()
    assert_close(model(idx), logits)  # the fast path and the weights path agree
    cached = model.generate(idx[:, :3], 15, greedy=True, use_cache=True)
    uncached = model.generate(idx[:, :3], 15, greedy=True, use_cache=False)
    assert torch.equal(cached, uncached)
    loss = model.loss(idx, idx)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_gpt_with_the_same_weights_and_a_long_window_is_the_full_gpt():
    base = dict(vocab_size=13, context_length=16, n_layer=2, n_head=2, d_model=16)
    torch.manual_seed(0)
    full = GPT(GPTConfig(**base)).eval()
    local = GPT(GPTConfig(**base, attention="sliding_window", window=16)).eval()
    local.load_state_dict(full.state_dict())
    idx = torch.randint(13, (2, 16))
    assert_close(local(idx), full(idx))


# ---------------------------------------------------------------------------------- bad input
def test_bad_windows_and_shapes_are_refused_clearly():
    q, k, v = qkv(4)
    with pytest.raises(ValueError, match="window must be >= 1"):
        sliding_window_attention(q, k, v, 0)
    with pytest.raises(TypeError, match="window must be an int"):
        sliding_window_attention(q, k, v, 2.5)
    with pytest.raises(TypeError, match="window must be an int"):
        SlidingWindowAttention(16, 4, window=True)
    with pytest.raises(ValueError, match="window must be >= 1"):
        SlidingWindowAttention(16, 4, window=-3)
    with pytest.raises(ValueError, match="4-D"):
        sliding_window_attention(q[0], k[0], v[0], 2)
    with pytest.raises(ValueError, match="4-D"):
        linear_attention(q[0], k, v)
    with pytest.raises(ValueError, match="same head width"):
        linear_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="same length"):
        sliding_window_attention(q, k, v[:, :, :3], 2)
    with pytest.raises(ValueError, match="more queries"):
        sliding_window_attention(q, k[:, :, :2], v[:, :, :2], 2)
    with pytest.raises(ValueError, match="block_size"):
        sliding_window_attention(q, k, v, 2, block_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention(q, k, v, chunk_size=0)


def test_bad_dtypes_are_refused_clearly():
    q, k, v = qkv(4)
    with pytest.raises(TypeError, match="floating-point"):
        sliding_window_attention(q.long(), k, v, 2)
    with pytest.raises(TypeError, match="share one dtype"):
        linear_attention(q.float(), k, v)
    with pytest.raises(TypeError, match="torch.Tensor"):
        linear_attention(q.tolist(), k, v)
    with pytest.raises(TypeError, match="floating-point"):
        SlidingWindowAttention(16, 4, window=2)(torch.zeros(1, 3, 16, dtype=torch.long))


def test_module_misuse_is_refused_clearly():
    sw, lin = SlidingWindowAttention(16, 4, window=2), LinearAttention(16, 4)
    x = torch.randn(1, 5, 16)
    with pytest.raises(ValueError, match="causal by construction"):
        sw(x, is_causal=False)
    with pytest.raises(ValueError, match="self-attention only"):
        lin(x, context=x)
    with pytest.raises(ValueError, match="attn_mask and key_padding_mask must be None"):
        sw(x, key_padding_mask=torch.zeros(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"shape \(B, T, 16\)"):
        sw(torch.randn(1, 5, 8))
    with pytest.raises(ValueError, match="KV cache"):
        lin(x, is_causal=False, cache=KVCache())
    with pytest.raises(TypeError, match="feature_map"):
        LinearAttention(16, 4, feature_map="elu")
    with pytest.raises(ValueError, match="not divisible"):
        SlidingWindowAttention(10, 4, window=2)
    with pytest.raises(ValueError, match="needs a window"):
        make_attention("sliding_window", 16, 4)
    with pytest.raises(ValueError, match="attention must be one of"):
        make_attention("flash", 16, 4)


def test_gpt_config_refuses_bad_attention_options():
    base = dict(vocab_size=10, context_length=8, n_layer=1, n_head=2, d_model=8)
    with pytest.raises(ValueError, match="attention must be one of"):
        GPTConfig(**base, attention="local")
    with pytest.raises(ValueError, match="needs window"):
        GPTConfig(**base, attention="sliding_window")
    with pytest.raises(ValueError, match="window must be a positive int"):
        GPTConfig(**base, attention="sliding_window", window=0)
    with pytest.raises(ValueError, match="only used with attention='sliding_window'"):
        GPTConfig(**base, window=4)


def test_a_sliding_window_gpt_saves_and_loads_with_its_attention(tmp_path):
    cfg = GPTConfig(vocab_size=11, context_length=16, n_layer=1, n_head=2, d_model=8,
                    attention="sliding_window", window=3)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    model.save(tmp_path / "m.pt")
    loaded = GPT.load(tmp_path / "m.pt").eval()
    assert loaded.config == cfg and isinstance(loaded.blocks[0].attn, SlidingWindowAttention)
    idx = torch.randint(11, (1, 16))
    assert_close(loaded(idx), model(idx), atol=0, rtol=0)
