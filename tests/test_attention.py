"""Scaled dot-product and multi-head attention against PyTorch's own implementations."""

from __future__ import annotations

import ast
import io
import math
import tokenize
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import transformer_core
from transformer_core import KVCache, MultiHeadAttention, RotaryEmbedding, causal_mask
from transformer_core import scaled_dot_product_attention as sdpa

B, H, T_Q, T_K, HD = 2, 3, 5, 7, 8


def qkv(t_q=T_Q, t_k=T_K, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, t_q, HD, generator=g, dtype=torch.float64).to(dtype)
    k = torch.randn(B, H, t_k, HD, generator=g, dtype=torch.float64).to(dtype)
    v = torch.randn(B, H, t_k, HD, generator=g, dtype=torch.float64).to(dtype)
    return q, k, v


def random_bool_mask(t_q, t_k, seed=1):
    """(B, 1, t_q, t_k), True = attend, with at least one allowed key per row (the last one)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, 1, t_q, t_k, generator=g) > 0.4
    mask[..., -1] = True
    return mask


def to_float_mask(mask):
    return torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))


# ----------------------------------------------------------------------------- causal_mask


def test_causal_mask_is_the_lower_triangle():
    assert torch.equal(causal_mask(4), torch.ones(4, 4).tril().bool())


def test_causal_mask_aligns_queries_to_the_end_of_the_keys():
    # two new queries after two cached positions: query 0 is position 2, query 1 is position 3
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(2, 4), expected)


def test_causal_mask_rejects_more_queries_than_keys():
    with pytest.raises(ValueError, match="t_q <= t_k"):
        causal_mask(5, 3)


# ----------------------------------------------------------------------------- scaled dot-product


@pytest.mark.parametrize("need_weights", [True, False], ids=["explicit", "fused"])
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
def test_sdpa_matches_torch(need_weights, is_causal, mask_kind):
    t_q, t_k = (T_K, T_K) if is_causal else (T_Q, T_K)
    q, k, v = qkv(t_q, t_k)
    mask = random_bool_mask(t_q, t_k)
    if is_causal:  # keep the diagonal so that no row is fully masked in the reference
        mask = mask | torch.eye(t_q, t_k, dtype=torch.bool)
    ours_mask = {None: None, "bool": mask, "float": to_float_mask(mask)}[mask_kind]

    out, weights = sdpa(q, k, v, attn_mask=ours_mask, is_causal=is_causal, need_weights=need_weights)

    # torch refuses attn_mask together with is_causal: fold the causal mask into the reference mask
    ref_mask = None if mask_kind is None else mask
    if is_causal:
        tri = causal_mask(t_q, t_k)
        ref_mask = tri if ref_mask is None else ref_mask & tri
    if mask_kind == "float":
        ref_mask = to_float_mask(ref_mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=ref_mask)
    torch.testing.assert_close(out, expected)
    assert out.shape == (B, H, t_q, HD)

    if need_weights:
        allowed = torch.ones(t_q, t_k, dtype=torch.bool) if ref_mask is None else ref_mask
        if allowed.dtype != torch.bool:
            allowed = ~torch.isneginf(allowed)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(HD)
        expected_w = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        torch.testing.assert_close(weights, expected_w)
        torch.testing.assert_close(weights @ v, out)
    else:
        assert weights is None


@pytest.mark.parametrize("need_weights", [True, False], ids=["explicit", "fused"])
def test_sdpa_key_padding_mask_equals_a_bool_attn_mask(need_weights):
    q, k, v = qkv()
    pad = torch.zeros(B, T_K, dtype=torch.bool)
    pad[0, -3:] = True
    pad[1, :2] = True
    out, _ = sdpa(q, k, v, key_padding_mask=pad, need_weights=need_weights)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=~pad[:, None, None, :])
    torch.testing.assert_close(out, expected)


def test_sdpa_combines_padding_causal_and_attn_mask():
    q, k, v = qkv(T_K, T_K)
    mask = random_bool_mask(T_K, T_K) | torch.eye(T_K, dtype=torch.bool)
    pad = torch.zeros(B, T_K, dtype=torch.bool)
    pad[:, -2:] = True
    out_w, w = sdpa(q, k, v, attn_mask=mask, key_padding_mask=pad, is_causal=True, need_weights=True)
    out_f, _ = sdpa(q, k, v, attn_mask=mask, key_padding_mask=pad, is_causal=True)
    allowed = mask & ~pad[:, None, None, :] & causal_mask(T_K)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(out_w, expected)
    torch.testing.assert_close(out_f, expected)
    assert (w[~allowed.expand_as(w)] == 0).all()


@pytest.mark.parametrize("need_weights", [True, False], ids=["explicit", "fused"])
def test_sdpa_custom_scale(need_weights):
    q, k, v = qkv()
    out, _ = sdpa(q, k, v, scale=0.3, need_weights=need_weights)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.3))


def test_sdpa_causal_with_cached_keys_matches_full_attention_rows():
    """Queries for the last 2 positions against 7 keys = the last 2 rows of full causal attention."""
    q, k, v = qkv(T_K, T_K)
    full, _ = sdpa(q, k, v, is_causal=True)
    for need_weights in (True, False):
        tail, _ = sdpa(q[:, :, -2:], k, v, is_causal=True, need_weights=need_weights)
        torch.testing.assert_close(tail, full[:, :, -2:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("need_weights", [True, False], ids=["explicit", "fused"])
@pytest.mark.parametrize("mask_kind", ["bool", "float", "padding"])
def test_fully_masked_rows_give_zeros_not_nan(dtype, need_weights, mask_kind):
    q, k, v = qkv(dtype=dtype)
    allowed = random_bool_mask(T_Q, T_K).expand(B, 1, T_Q, T_K).clone()
    if mask_kind == "padding":  # every key of batch row 1 is padding
        pad = torch.zeros(B, T_K, dtype=torch.bool)
        pad[1] = True
        kwargs = {"key_padding_mask": pad}
        allowed = ~pad[:, None, None, :].expand(B, 1, T_Q, T_K)
    else:
        allowed[0, 0, 2] = False  # one dead query row
        allowed[1] = False  # a whole dead batch row
        kwargs = {"attn_mask": allowed if mask_kind == "bool" else to_float_mask(allowed).to(dtype)}
    out, w = sdpa(q, k, v, need_weights=need_weights, **kwargs)
    assert out.dtype == dtype
    assert not out.isnan().any()
    dead = ~allowed.any(-1)  # (B, 1, T_Q)
    dead_out = out.masked_select(dead[..., None].expand_as(out))
    assert dead_out.numel() > 0 and (dead_out == 0).all()
    # the live rows are unaffected by the guard
    live = ~dead[0, 0]
    ref = F.scaled_dot_product_attention(
        q[:1, :, live].double(), k[:1].double(), v[:1].double(), attn_mask=allowed[:1, :, live]
    )
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    if mask_kind != "padding":
        torch.testing.assert_close(out[:1, :, live].double(), ref, atol=tol, rtol=tol)
    if need_weights:
        assert not w.isnan().any()
        assert (w.masked_select(dead[..., None].expand_as(w)) == 0).all()


def test_sdpa_errors_name_the_problem():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="4-D"):
        sdpa(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="attn_mask of shape"):
        sdpa(q, k, v, attn_mask=torch.ones(T_Q, T_K + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask has 5 dimensions"):
        sdpa(q, k, v, attn_mask=torch.ones(1, B, H, T_Q, T_K, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_padding_mask has shape"):
        sdpa(q, k, v, key_padding_mask=torch.zeros(B, T_Q, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_padding_mask must be a bool"):
        sdpa(q, k, v, key_padding_mask=torch.zeros(B, T_K))
    with pytest.raises(TypeError, match="attn_mask must be bool"):
        sdpa(q, k, v, attn_mask=torch.ones(T_Q, T_K, dtype=torch.long))


def large_negative_constants(source: str) -> list[str]:
    """Numbers <= -10000 in code (not in comments or docstrings): ``-1e9``, ``float("-1e4")``, ..."""
    found, previous = [], None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NUMBER and previous is not None and previous.string == "-":
            if float(tok.string.replace("_", "")) >= 1e4:
                found.append(f"line {tok.start[0]}: -{tok.string}")
        elif tok.type == tokenize.STRING:
            try:
                value = float(ast.literal_eval(tok.string))
            except (ValueError, TypeError, SyntaxError):
                value = 0.0
            if math.isfinite(value) and value <= -1e4:
                found.append(f"line {tok.start[0]}: {tok.string}")
        if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            previous = tok
    return found


def test_no_large_negative_constants_for_masking():
    """Masking uses -inf with a guard; -1e9 or -10000 overflow (or fail to mask) in float16."""
    # the checker catches the slips it is meant to catch
    assert large_negative_constants("s = scores.masked_fill(m, -1e9)\n")
    assert large_negative_constants("s = scores.masked_fill(m, - 10000.0)\n")
    assert large_negative_constants('s = scores.masked_fill(m, float("-1e9"))\n')
    assert not large_negative_constants("eps = 1e-9  # not -1e9\nx = -1e-5\n")
    package = Path(transformer_core.__file__).parent
    offenders = {
        path.name: found
        for path in sorted(package.rglob("*.py"))
        if (found := large_negative_constants(path.read_text()))
    }
    assert offenders == {}


# ----------------------------------------------------------------------------- multi-head attention

D, N_HEAD, T, S = 16, 4, 6, 9


def mha_pair(seed=0, bias=True):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(D, N_HEAD, bias=bias, batch_first=True).eval()
    with torch.no_grad():  # nn.MultiheadAttention starts with zero biases: make them count
        for p in ref.parameters():
            p.normal_(0, 0.3)
    ours = MultiHeadAttention(D, N_HEAD, bias=bias).eval().load_from_torch(ref)
    return ours, ref


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, generator=g), torch.randn(B, S, D, generator=g)


@pytest.mark.parametrize("need_weights", [True, False], ids=["explicit", "fused"])
@pytest.mark.parametrize("bias", [True, False])
def test_mha_self_attention_matches_torch(need_weights, bias):
    ours, ref = mha_pair(bias=bias)
    x, _ = inputs()
    out, _ = ours(x, need_weights=need_weights)
    expected, _ = ref(x, x, x)
    torch.testing.assert_close(out, expected)


def test_mha_cross_attention_with_padding_matches_torch_and_per_head_weights():
    ours, ref = mha_pair()
    x, ctx = inputs()
    pad = torch.zeros(B, S, dtype=torch.bool)
    pad[0, -4:] = True  # key_padding_mask: True = ignore, in both conventions
    out, w = ours(x, context=ctx, key_padding_mask=pad, need_weights=True)
    expected, expected_w = ref(x, ctx, ctx, key_padding_mask=pad, average_attn_weights=False)
    torch.testing.assert_close(out, expected)
    assert w.shape == (B, N_HEAD, T, S)
    torch.testing.assert_close(w, expected_w)
    _, mean_w = ref(x, ctx, ctx, key_padding_mask=pad)  # default: averaged over heads
    torch.testing.assert_close(w.mean(dim=1), mean_w)
    assert (w[0, :, :, -4:] == 0).all()


def test_mha_bool_attn_mask_convention_is_opposite_to_torch():
    """Ours: True = may attend (like F.scaled_dot_product_attention).
    nn.MultiheadAttention: True = NOT allowed. The same mask therefore gives different results."""
    ours, ref = mha_pair()
    x, ctx = inputs()
    allowed = torch.rand(T, S, generator=torch.Generator().manual_seed(3)) > 0.5
    allowed[:, 0] = True
    out, w = ours(x, context=ctx, attn_mask=allowed, need_weights=True)
    expected, expected_w = ref(x, ctx, ctx, attn_mask=~allowed, average_attn_weights=False)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(w, expected_w)
    assert (w[:, :, ~allowed] == 0).all()
    # passing our mask unchanged to torch would hide exactly the keys we allow
    wrong, _ = ref(x, ctx, ctx, attn_mask=allowed | ~allowed.any(-1, keepdim=True))
    assert not torch.allclose(out, wrong)


def test_mha_float_attn_mask_matches_torch():
    ours, ref = mha_pair()
    x, ctx = inputs()
    bias = torch.randn(T, S, generator=torch.Generator().manual_seed(4))
    bias[:, 2] = float("-inf")
    for need_weights in (True, False):
        out, _ = ours(x, context=ctx, attn_mask=bias, need_weights=need_weights)
        expected, _ = ref(x, ctx, ctx, attn_mask=bias)
        torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("need_weights", [True, False], ids=["explicit", "fused"])
def test_mha_causal_matches_torch(need_weights):
    ours, ref = mha_pair()
    x, _ = inputs()
    out, w = ours(x, is_causal=True, need_weights=need_weights)
    expected, expected_w = ref(x, x, x, attn_mask=~causal_mask(T), average_attn_weights=False)
    torch.testing.assert_close(out, expected)
    if need_weights:
        torch.testing.assert_close(w, expected_w)


def test_mha_grouped_query_attention_equals_mha_with_shared_kv_heads():
    torch.manual_seed(0)
    gqa = MultiHeadAttention(D, N_HEAD, n_kv_head=2).eval()
    full = MultiHeadAttention(D, N_HEAD).eval()
    hd = D // N_HEAD
    with torch.no_grad():
        full.load_state_dict(
            {k: v for k, v in gqa.state_dict().items() if not k.startswith(("k_proj", "v_proj"))},
            strict=False,
        )
        for name in ("k_proj", "v_proj"):
            src, dst = getattr(gqa, name), getattr(full, name)
            # kv head j serves query heads 2j and 2j+1
            dst.weight.copy_(src.weight.view(2, hd, D).repeat_interleave(2, dim=0).reshape(D, D))
            dst.bias.copy_(src.bias.view(2, hd).repeat_interleave(2, dim=0).reshape(D))
    assert gqa.k_proj.weight.shape == (2 * hd, D)
    x, _ = inputs()
    torch.testing.assert_close(gqa(x, is_causal=True)[0], full(x, is_causal=True)[0])


@pytest.mark.parametrize("rotary", [False, True])
@pytest.mark.parametrize("n_kv_head", [None, 2])
def test_mha_kv_cache_matches_full_causal_pass(rotary, n_kv_head):
    torch.manual_seed(0)
    rope = RotaryEmbedding(D // N_HEAD, max_len=32) if rotary else None
    attn = MultiHeadAttention(D, N_HEAD, n_kv_head=n_kv_head, rotary=rope).eval()
    x, _ = inputs()
    full, _ = attn(x, is_causal=True)
    cache = KVCache()
    first, _ = attn(x[:, :3], is_causal=True, cache=cache)  # a prompt of 3, then one at a time
    steps = [first] + [attn(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(3, T)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    assert cache.length == T
    assert cache.k.shape == (B, n_kv_head or N_HEAD, T, D // N_HEAD)


def test_kv_cache_reorder_selects_batch_rows():
    cache = KVCache()
    k = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 4, 5)
    cache.append(k, k + 10)
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.k[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0]
    assert cache.v[:, 0, 0, 0].tolist() == [12.0, 12.0, 10.0]


def test_mha_errors_name_the_problem():
    with pytest.raises(ValueError, match="d_model=10 is not divisible by n_head=4"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        MultiHeadAttention(12, 4, n_kv_head=3)
    attn = MultiHeadAttention(D, N_HEAD)
    x, ctx = inputs()
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 16\)"):
        attn(x[..., :8])
    with pytest.raises(ValueError, match="context must have shape"):
        attn(x, context=ctx[:1])
    with pytest.raises(ValueError, match="attn_mask of shape"):
        attn(x, attn_mask=torch.ones(T, T + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_padding_mask has shape"):
        attn(x, key_padding_mask=torch.zeros(B, T + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_padding_mask has shape"):
        attn(x, context=ctx, key_padding_mask=torch.zeros(B, T, dtype=torch.bool))
    with pytest.raises(ValueError, match="same d_model and n_head"):
        attn.load_from_torch(nn.MultiheadAttention(D, 2))
