"""FlashAttention in plain PyTorch: equal to scaled_dot_product_attention (float64, 1e-10) for any block
size and length, causal and not; its recomputing backward equal to autograd's and to finite
differences; only the output and the log-sum-exp kept for backward; no (T, T) tensor ever allocated;
clear errors on bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import transformer_core
from transformer_core.attention import causal_mask
from transformer_core.flash_attention import (
    DEFAULT_BLOCK_SIZE,
    flash_attention,
    flash_attention_backward,
    flash_attention_forward,
)

TOL = dict(rtol=0, atol=1e-10)


def qkv(t_q, t_k=None, lead=(2, 3), d=8, d_v=None, seed=0, dtype=torch.float64, grad=False):
    g = torch.Generator().manual_seed(seed)
    t_k = t_q if t_k is None else t_k
    d_v = d if d_v is None else d_v
    shapes = ((*lead, t_q, d), (*lead, t_k, d), (*lead, t_k, d_v))
    return tuple(torch.randn(s, generator=g, dtype=dtype).requires_grad_(grad) for s in shapes)


def reference(q, k, v, is_causal=False, scale=None):
    """SDPA; for causal attention with T_q < T_k the queries are the last positions (causal_mask)."""
    if is_causal and q.shape[-2] != k.shape[-2]:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(q.shape[-2], k.shape[-2]), scale=scale)
    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)


# ------------------------------------------------------------------------------------ the forward pass
@pytest.mark.parametrize("block_size", [1, 3, 16, 64, 500])
@pytest.mark.parametrize("T", [1, 2, 17, 64, 100])
@pytest.mark.parametrize("is_causal", [False, True])
def test_equals_sdpa_in_float64(T, block_size, is_causal):
    q, k, v = qkv(T, seed=T * 1000 + block_size)
    out = flash_attention(q, k, v, is_causal=is_causal, block_size=block_size)
    assert out.shape == q.shape and out.dtype == torch.float64
    assert_close(out, reference(q, k, v, is_causal), **TOL)


@pytest.mark.parametrize(("t_q", "t_k"), [(1, 9), (5, 37), (37, 5), (64, 65), (100, 7)])
@pytest.mark.parametrize("block_size", [4, 16, 64])
def test_more_or_fewer_queries_than_keys(t_q, t_k, block_size):
    q, k, v = qkv(t_q, t_k, d=16, d_v=5, seed=t_q + t_k)
    assert_close(flash_attention(q, k, v, block_size=block_size), reference(q, k, v), **TOL)
    if t_q <= t_k:  # causal: the queries are the last t_q positions, as with a KV cache
        out = flash_attention(q, k, v, is_causal=True, block_size=block_size)
        assert_close(out, reference(q, k, v, is_causal=True), **TOL)


@pytest.mark.parametrize("lead", [(), (4,), (2, 3), (2, 2, 3)])
def test_any_leading_dimensions(lead):
    q, k, v = qkv(23, lead=lead, seed=len(lead))
    for is_causal in (False, True):
        assert_close(flash_attention(q, k, v, is_causal, 8), reference(q, k, v, is_causal), **TOL)


def test_scale_and_large_scores():
    q, k, v = qkv(30, seed=3)
    assert_close(flash_attention(q, k, v, block_size=7, scale=0.3), reference(q, k, v, scale=0.3), **TOL)
    # scores in the hundreds: exp would overflow without the running maximum
    big_q = 40 * q
    out = flash_attention(big_q, k, v, is_causal=True, block_size=7)
    assert torch.isfinite(out).all()
    assert_close(out, reference(big_q, k, v, is_causal=True), **TOL)


def test_log_sum_exp_is_that_of_the_full_scores():
    q, k, v = qkv(45, 45, seed=4)
    for is_causal in (False, True):
        out, lse = flash_attention_forward(q, k, v, is_causal, 16)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if is_causal:
            scores = scores.masked_fill(~causal_mask(45), float("-inf"))
        assert lse.shape == q.shape[:-1]
        assert_close(lse, scores.logsumexp(dim=-1), **TOL)
        assert_close(out, torch.softmax(scores, dim=-1) @ v, **TOL)


def test_causal_output_ignores_the_future():
    q, k, v = qkv(40, seed=5)
    out = flash_attention(q, k, v, is_causal=True, block_size=8)
    k2, v2 = k.clone(), v.clone()
    k2[..., 25:, :] += 10.0
    v2[..., 25:, :] -= 3.0
    out2 = flash_attention(q, k2, v2, is_causal=True, block_size=8)
    assert torch.equal(out[..., :25, :], out2[..., :25, :])
    assert not torch.allclose(out[..., 25:, :], out2[..., 25:, :])


def test_float32_and_half_precision():
    q, k, v = qkv(50, dtype=torch.float32, seed=6)
    assert_close(flash_attention(q, k, v, True, 16), reference(q, k, v, True), rtol=1e-5, atol=1e-6)
    for dtype in (torch.bfloat16, torch.float16):
        q16, k16, v16 = (t.to(dtype) for t in (q, k, v))
        out = flash_attention(q16, k16, v16, True, 16)
        assert out.dtype == dtype
        # tiled in float32: as close to the float32 result as rounding the inputs allows
        want = reference(*(t.float() for t in (q16, k16, v16)), True)
        assert_close(out.float(), want, rtol=0, atol=2e-2)


def test_default_block_size_and_public_name():
    assert transformer_core.flash_attention is flash_attention
    assert "flash_attention" in transformer_core.__all__
    q, k, v = qkv(DEFAULT_BLOCK_SIZE * 2 + 5, seed=7)
    assert torch.equal(flash_attention(q, k, v, True), flash_attention(q, k, v, True, DEFAULT_BLOCK_SIZE))


# ------------------------------------------------------------------------------------ the backward pass
def _valid(cases):
    """(t_q, t_k, ..., is_causal) cases, without causal ones with more queries than keys (an error)."""
    return [(*c, causal) for c in cases for causal in (False, True) if not (causal and c[0] > c[1])]


@pytest.mark.parametrize(("t_q", "t_k", "block_size", "is_causal"), _valid([(11, 11, 4), (7, 13, 3), (13, 6, 5), (9, 9, 20)]))
def test_gradcheck(t_q, t_k, block_size, is_causal):
    q, k, v = qkv(t_q, t_k, lead=(1, 2), d=4, d_v=3, seed=t_q * t_k, grad=True)
    assert torch.autograd.gradcheck(lambda q, k, v: flash_attention(q, k, v, is_causal, block_size), (q, k, v))


@pytest.mark.parametrize(
    ("t_q", "t_k", "block_size", "is_causal"),
    _valid([(45, 45, 7), (45, 45, 16), (45, 45, 64), (20, 45, 7), (20, 45, 16), (45, 20, 16), (12, 12, 1), (5, 12, 1)]),
)
def test_gradients_equal_sdpa(t_q, t_k, block_size, is_causal):
    q, k, v = qkv(t_q, t_k, d=8, d_v=6, seed=block_size, grad=True)
    grad_out = torch.randn(*q.shape[:-1], 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mine = torch.autograd.grad(flash_attention(q, k, v, is_causal, block_size), (q, k, v), grad_out)
    want = torch.autograd.grad(reference(q, k, v, is_causal), (q, k, v), grad_out)
    for a, b in zip(mine, want, strict=True):
        assert_close(a, b, **TOL)
    # autograd through the plain-PyTorch forward agrees too (it just keeps every tile for backward)
    plain = torch.autograd.grad(flash_attention_forward(q, k, v, is_causal, block_size)[0], (q, k, v), grad_out)
    for a, b in zip(plain, want, strict=True):
        assert_close(a, b, **TOL)


def test_backward_function_directly_and_gradient_for_some_inputs_only():
    q, k, v = qkv(21, seed=8, grad=True)
    out, lse = flash_attention_forward(q.detach(), k.detach(), v.detach(), True, 8)
    grad_out = torch.randn_like(out)
    dq, dk, dv = flash_attention_backward(grad_out, q.detach(), k.detach(), v.detach(), out, lse, True, 8)
    want = torch.autograd.grad(reference(q, k, v, True), (q, k, v), grad_out)
    for a, b in zip((dq, dk, dv), want, strict=True):
        assert_close(a, b, **TOL)
    # only v needs a gradient
    q2, k2 = q.detach(), k.detach()
    (dv2,) = torch.autograd.grad(flash_attention(q2, k2, v, True, 8), (v,), grad_out)
    assert_close(dv2, want[2], **TOL)
    with pytest.raises(ValueError, match="lse"):
        flash_attention_backward(grad_out, q, k, v, out, lse[..., :-1], True, 8)


def saved_bytes(fn, *inputs):
    """Bytes of the storages autograd keeps for backward while fn(*inputs) runs, the inputs' own excluded."""
    excluded = {t.untyped_storage().data_ptr() for t in inputs}
    saved = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in excluded:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*inputs)
    return sum(saved.values()), out


def test_keeps_only_output_and_log_sum_exp_for_backward():
    q, k, v = qkv(512, lead=(1, 2), d=32, dtype=torch.float32, grad=True)
    kept, out = saved_bytes(lambda q, k, v: flash_attention(q, k, v, is_causal=True, block_size=64), q, k, v)
    assert kept == out.numel() * 4 + 1 * 2 * 512 * 4  # the output and one float per row
    explicit, _ = saved_bytes(
        lambda q, k, v: F.softmax((q @ k.transpose(-2, -1)).masked_fill(~causal_mask(512), float("-inf")), -1) @ v,
        q, k, v,
    )
    assert explicit >= 2 * 512 * 512 * 4  # the (T, T) weights of both heads, at least
    with pytest.raises(RuntimeError):  # first-order only: a second derivative says so
        (g,) = torch.autograd.grad(out.sum(), q, create_graph=True)
        g.sum().backward()


# ------------------------------------------------------------------------------------ memory
class LargestAllocation(TorchDispatchMode):
    """The largest storage any operation creates (views and in-place writes into existing storages excluded)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        existing = {a.untyped_storage().data_ptr() for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in existing:
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize("is_causal", [False, True])
def test_no_t_by_t_tensor_forward_or_backward(is_causal):
    T, d, b = 1024, 16, 64
    q, k, v = qkv(T, lead=(1, 1), d=d, dtype=torch.float32, grad=True)
    with LargestAllocation() as meter:
        out = flash_attention(q, k, v, is_causal=is_causal, block_size=b)
        out.backward(torch.ones_like(out))
    # the biggest tensors are T x d (the output, the gradients); a tile is b x b; T x T would be 4 MiB
    assert meter.largest == max(T * d, b * b) * 4
    assert meter.largest * 64 <= T * T * 4
    # the meter does see a (T, T) matrix where there is one
    with torch.no_grad(), LargestAllocation() as explicit:
        reference(q, k, v, is_causal)
        torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
    assert explicit.largest >= T * T * 4


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("T", "b"), [(100, 16), (64, 16), (10, 64)])
def test_causal_skips_future_tiles_and_masks_only_the_diagonal(T, b):
    q, k, v = qkv(T, dtype=torch.float32)
    n = -(-T // b)
    for is_causal, tiles, masked in ((False, n * n, 0), (True, n * (n + 1) // 2, n)):
        with torch.no_grad(), CountOps() as ops:
            flash_attention(q, k, v, is_causal=is_causal, block_size=b)
        assert ops.calls["aten.amax"] == tiles  # one running-max update per tile of scores
        assert ops.calls.get("aten.masked_fill", 0) == masked


# ------------------------------------------------------------------------------------ bad input
def test_bad_inputs():
    q, k, v = qkv(8)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        flash_attention(q, k, v, block_size=0)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        flash_attention(q, k, v, block_size=-4)
    for bad in (2.0, True, None, "64"):
        with pytest.raises(TypeError, match="block_size must be an int"):
            flash_attention(q, k, v, block_size=bad)
    with pytest.raises(TypeError, match="share one dtype"):
        flash_attention(q, k.float(), v)
    with pytest.raises(TypeError, match="floating-point"):
        flash_attention(q, k, v.long())
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        flash_attention(q, k.tolist(), v)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        flash_attention(q[0, 0, 0], k[0, 0, 0], v[0, 0, 0])
    with pytest.raises(ValueError, match="same leading"):
        flash_attention(q, k[:1], v[:1])
    with pytest.raises(ValueError, match="same head width"):
        flash_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="same number of keys"):
        flash_attention(q, k, v[..., :5, :])
    with pytest.raises(ValueError, match="at least one key"):
        flash_attention(q, k[..., :0, :], v[..., :0, :])
    with pytest.raises(ValueError, match="more queries"):
        flash_attention(q, k[..., :5, :], v[..., :5, :], is_causal=True)
    with pytest.raises(TypeError, match="is_causal must be True or False"):
        flash_attention(q, k, v, is_causal="yes")
    with pytest.raises(TypeError, match="scale must be a finite number"):
        flash_attention(q, k, v, scale=float("nan"))
    with pytest.raises(TypeError, match="scale must be a finite number"):
        flash_attention(q, k, v, scale="0.5")
