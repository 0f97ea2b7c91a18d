"""The chapter 11 exercise checks: a right answer passes, each usual mistake gets its own hint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attention_book.exercises import ch11


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


# -------------------------------------------------------------------------------------- rms_norm
def rms_right(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rms_centred(x, weight, eps=1e-6):
    c = x - x.mean(-1, keepdim=True)
    return c / torch.sqrt(c.pow(2).mean(-1, keepdim=True) + eps) * weight


def rms_eps_outside(x, weight, eps=1e-6):
    return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * weight


def rms_no_sqrt(x, weight, eps=1e-6):
    return x / (x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rms_sum(x, weight, eps=1e-6):
    return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * weight


def rms_var(x, weight, eps=1e-6):
    return x / torch.sqrt(x.var(-1, keepdim=True) + eps) * weight


def rms_over(dim):
    def f(x, weight, eps=1e-6):
        return x / torch.sqrt(x.pow(2).mean(dim, keepdim=True) + eps) * weight

    return f


def rms_in_place(x, weight, eps=1e-6):
    x *= torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x * weight


def test_rms_norm_right(capsys):
    ok, out = verdict(ch11.check_rms_norm, rms_right, capsys)
    assert ok and out.startswith("✓"), out


def test_rms_norm_torch(capsys):
    ok, out = verdict(ch11.check_rms_norm, lambda x, w, eps=1e-6: F.rms_norm(x, x.shape[-1:], w, eps), capsys)
    assert ok, out


@pytest.mark.parametrize(
    "fn, words",
    [
        (rms_centred, "that's LayerNorm"),
        (lambda x, w, eps=1e-6: F.layer_norm(x, x.shape[-1:], eps=eps) * w, "that's LayerNorm"),
        (rms_var, "torch.var subtracts the mean"),
        (rms_eps_outside, "inside the square root"),
        (rms_no_sqrt, "divided by the mean square"),
        (rms_sum, "summed the squares"),
        (lambda x, w, eps=1e-6: x / torch.sqrt(x.abs().mean(-1, keepdim=True) + eps) * w, "mean(|x|)"),
        (lambda x, w, eps=1e-6: x / torch.sqrt(x.mean(-1, keepdim=True).pow(2) + eps) * w, "squared the mean"),
        (lambda x, w, eps=1e-6: rms_right(x, torch.ones_like(w), eps), "gain is missing"),
        (rms_over(0), "batch axis"),
        (rms_over(1), "sequence axis"),
        (rms_over((1, 2)), "whole sequence"),
        (lambda x, w, eps=1e-6: x.pow(2).mean(-1, keepdim=True).sqrt(), "root mean square itself"),
        (lambda x, w, eps=1e-6: x.pow(2).mean(-1), "expected (2, 3, 8)"),
        (lambda x, w, eps=1e-6: None, "forget `return`"),
        (rms_in_place, "in place"),
        (lambda x, w, eps=1e-6: 2 * x, "differs from transformer_core.RMSNorm"),
    ],
)
def test_rms_norm_mistakes(fn, words, capsys):
    ok, out = verdict(ch11.check_rms_norm, fn, capsys)
    assert not ok
    assert out.startswith("✗") and words in out, out


def test_rms_norm_stub(capsys):
    ok, out = verdict(ch11.check_rms_norm, stub, capsys)
    assert not ok and "not attempted" in out


# ---------------------------------------------------------------------------------------- swiglu
def swiglu_right(x, w_act, w_gate, w_out):
    return (F.silu(x @ w_act.T) * (x @ w_gate.T)) @ w_out.T


def swiglu_with(act_fn, gate_on_gate=False):
    def f(x, w_act, w_gate, w_out):
        a, b = x @ w_act.T, x @ w_gate.T
        return ((a * act_fn(b)) if gate_on_gate else (act_fn(a) * b)) @ w_out.T

    return f


def test_swiglu_right(capsys):
    ok, out = verdict(ch11.check_swiglu, swiglu_right, capsys)
    assert ok and out.startswith("✓"), out


def test_swiglu_linear_modules(capsys):
    def with_functional_linear(x, w_act, w_gate, w_out):
        return F.linear(F.silu(F.linear(x, w_act)) * F.linear(x, w_gate), w_out)

    ok, out = verdict(ch11.check_swiglu, with_functional_linear, capsys)
    assert ok, out


@pytest.mark.parametrize(
    "fn, words",
    [
        (swiglu_with(F.silu, gate_on_gate=True), "gated the wrong branch"),
        (swiglu_with(torch.sigmoid), "you used sigmoid"),
        (swiglu_with(torch.sigmoid, gate_on_gate=True), "two slips"),
        (swiglu_with(F.gelu), "GeGLU"),
        (swiglu_with(F.relu), "ReGLU"),
        (lambda x, a, g, o: F.silu(x @ a.T) @ o.T, "gate is missing"),
        (lambda x, a, g, o: F.silu((x @ a.T) * (x @ g.T)) @ o.T, "before the product"),
        (lambda x, a, g, o: (F.silu(x @ a.T) + x @ g.T) @ o.T, "not added"),
        (lambda x, a, g, o: F.silu(((x @ a.T) * (x @ g.T)) @ o.T), "not on the output"),
        (lambda x, a, g, o: swiglu_right(x, a, g, o) + x, "residual connection"),
        (lambda x, a, g, o: swiglu_right(x, a, g, o).flatten(), "expected (2, 5, 8)"),
        (lambda x, a, g, o: (F.silu(x @ a.T) * (x @ g.T)) @ o.T if x.dim() == 3 else x, "single (D,) vector"),
        (lambda x, a, g, o: 0.5 * swiglu_right(x, a, g, o), "differs from"),
        (lambda x, a, g, o: x @ a, "your code raised"),
    ],
)
def test_swiglu_mistakes(fn, words, capsys):
    ok, out = verdict(ch11.check_swiglu, fn, capsys)
    assert not ok
    assert out.startswith("✗") and words in out, out


def test_swiglu_stub(capsys):
    ok, out = verdict(ch11.check_swiglu, stub, capsys)
    assert not ok and "not attempted" in out


# ---------------------------------------------------------------------------- gqa_kv_cache_bytes
def kv_right(n_layer, n_head, n_kv_head, head_dim, seq_len, batch_size=1, bytes_per_value=2):
    return 2 * n_layer * batch_size * n_kv_head * seq_len * head_dim * bytes_per_value


def kv_times(factor):
    def f(n_layer, n_head, n_kv_head, head_dim, seq_len, batch_size=1, bytes_per_value=2):
        return kv_right(n_layer, n_head, n_kv_head, head_dim, seq_len, batch_size, bytes_per_value) * factor

    return f


def test_kv_right(capsys):
    ok, out = verdict(ch11.check_gqa_kv_cache_bytes, kv_right, capsys)
    assert ok and out.startswith("✓"), out


def test_kv_agrees_with_a_real_cache():
    """The reference formula matches the bytes a GPT's KV cache really holds after generating."""
    from transformer_core import GPT, GPTConfig

    caches = []

    def catch(module, args, kwargs):
        if kwargs.get("cache") is not None and not any(kwargs["cache"] is c for c in caches):
            caches.append(kwargs["cache"])

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, context_length=32, n_layer=3, n_head=4, d_model=16, n_kv_head=2))
    hooks = [b.attn.register_forward_pre_hook(catch, with_kwargs=True) for b in model.blocks]
    model.generate(torch.zeros(2, 5, dtype=torch.long), 7, greedy=True)
    for h in hooks:
        h.remove()
    held = sum(t.numel() * t.element_size() for c in caches for t in (c.k, c.v))
    assert held == ch11.gqa_kv_cache_bytes(3, 4, 2, 4, 5 + 7 - 1, batch_size=2, bytes_per_value=4)


@pytest.mark.parametrize(
    "fn, words",
    [
        (kv_times(0.5), "keys *and* the values"),
        (lambda L, H, Hkv, hd, T, B=1, b=2: kv_right(L, H, H, hd, T, B, b), "n_kv_head"),
        (lambda L, H, Hkv, hd, T, B=1, b=2: kv_right(L, H, H, hd, T, B, b) / 2, "two slips"),
        (lambda L, H, Hkv, hd, T, B=1, b=2: kv_right(L, H, Hkv, hd, T, B, b) * Hkv / H, "divided by the group size"),
        (lambda L, H, Hkv, hd, T, B=1, b=2: kv_right(L, H, Hkv, hd, T, B, 1), "number of values, not bytes"),
        (lambda L, H, Hkv, hd, T, B=1, b=2: kv_right(1, H, Hkv, hd, T, B, b), "multiply by n_layer"),
        (lambda L, H, Hkv, hd, T, B=1, b=2: kv_right(L, H, Hkv, hd, T, 1, b), "multiply by batch_size"),
        (lambda L, H, Hkv, hd, T, B=1, b=2: kv_right(L, H, Hkv, 1, T, B, b), "multiply by head_dim"),
        (lambda L, H, Hkv, hd, T, B=1, b=2: kv_right(L, H, Hkv, hd, 1, B, b), "multiply by seq_len"),
        (lambda L, H, Hkv, hd, T, B=1, b=2: kv_right(L, H, Hkv, hd, T, B, 4), "ignores bytes_per_value"),
        (lambda L, H, Hkv, hd, T, B=1, b=4: kv_right(L, H, Hkv, hd, T, B, b), "its default should be 2"),
        (lambda L, H, Hkv, hd, T, B=1, b=2: kv_right(L, H, Hkv, hd, T, B, b) + 1, "you computed"),
        (lambda L, H, Hkv, hd, T, B=1, b=2: kv_right(L, H, Hkv, hd, T * T, B, b) / 11, "doubling seq_len"),
        (lambda L, H, Hkv, hd, T, B=1, b=2: kv_right(L, H, Hkv, hd, T, B, b) * H / 35, "changes with n_head"),
        (lambda L, H, Hkv, hd, T, B=4, b=2: kv_right(L, H, Hkv, hd, T, B, b), "with the defaults"),
        (lambda L, H, Hkv, hd, T, B=1, b=2: None, "forget the `return`"),
        (lambda L, H, Hkv, hd, T, B=1, b=2: "many", "return a number"),
    ],
)
def test_kv_mistakes(fn, words, capsys):
    def by_keyword(n_layer, n_head, n_kv_head, head_dim, seq_len, **kw):
        return fn(n_layer, n_head, n_kv_head, head_dim, seq_len,
                  *([kw["batch_size"]] if "batch_size" in kw else []),
                  *([kw["bytes_per_value"]] if "bytes_per_value" in kw else []))

    ok, out = verdict(ch11.check_gqa_kv_cache_bytes, by_keyword, capsys)
    assert not ok
    assert out.startswith("✗") and words in out, out


def test_kv_tensor_answer(capsys):
    ok, out = verdict(ch11.check_gqa_kv_cache_bytes, lambda *a, **k: torch.tensor(kv_right(*a, **k)), capsys)
    assert ok, out


def test_kv_stub(capsys):
    ok, out = verdict(ch11.check_gqa_kv_cache_bytes, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------------- expand_kv
def test_expand_kv_right(capsys):
    ok, out = verdict(ch11.check_expand_kv, lambda kv, n: kv.repeat_interleave(n // kv.shape[1], dim=1), capsys)
    assert ok and out.startswith("✓"), out


def test_expand_kv_by_expand(capsys):
    def by_expand(kv, n_head):
        B, n_kv, T, hd = kv.shape
        return kv[:, :, None].expand(B, n_kv, n_head // n_kv, T, hd).reshape(B, n_head, T, hd)

    ok, out = verdict(ch11.check_expand_kv, by_expand, capsys)
    assert ok, out


def _in_place(kv, n):
    kv.mul_(1)
    kv[0, 0, 0, 0] = -1.0
    return kv.repeat_interleave(n // kv.shape[1], dim=1)


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda kv, n: kv.repeat(1, n // kv.shape[1], 1, 1), "you used .repeat"),
        (lambda kv, n: kv, "the input's"),
        (lambda kv, n: kv.repeat_interleave(n // kv.shape[1], dim=2), "sequence axis"),
        (lambda kv, n: kv.repeat_interleave(n, dim=1), "n_head = 6 times"),
        (lambda kv, n: kv.repeat_interleave(n // kv.shape[1], dim=1).flip(1), "query heads 0..5 read"),
        (lambda kv, n: torch.zeros(kv.shape[0], n, *kv.shape[2:]), "not the input's heads"),
        (lambda kv, n: kv.repeat_interleave(2, dim=1), "with n_head == n_kv_head"),
        (lambda kv, n: kv.repeat_interleave(max(n // kv.shape[1], 1), dim=1) if kv.shape[1] > 1 else kv,
         "multi-query"),
        (_in_place, "in place"),
        (lambda kv, n: None, "forget `return`"),
    ],
)
def test_expand_kv_mistakes(fn, words, capsys):
    ok, out = verdict(ch11.check_expand_kv, fn, capsys)
    assert not ok
    assert out.startswith("✗") and words in out, out


def test_expand_kv_stub(capsys):
    ok, out = verdict(ch11.check_expand_kv, stub, capsys)
    assert not ok and "not attempted" in out


def test_checks_leave_the_readers_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    ch11.check_rms_norm(rms_right)
    ch11.check_swiglu(swiglu_right)
    assert torch.equal(before, torch.get_rng_state())


# -------------------------------------------------------------------- steps_to_catch_up (experiment)
def test_steps_to_catch_up_accepts_the_measured_range(capsys):
    for found in (300, ch11.STEPS_TO_CATCH_UP[0], ch11.STEPS_TO_CATCH_UP[1]):
        ok, out = verdict(ch11.check_steps_to_catch_up, lambda found=found: found, capsys)
        assert ok is True, out
        assert out.startswith("✓ steps_to_catch_up")


@pytest.mark.parametrize(
    ("answer", "message", "hint"),
    [
        (150, "is too low", "val_losses['GPT-2 + rotary'][0]"),
        (600, "is too high", "first multiple of 25"),
    ],
)
def test_steps_to_catch_up_explains_a_wrong_answer(answer, message, hint, capsys):
    ok, out = verdict(ch11.check_steps_to_catch_up, lambda: answer, capsys)
    assert ok is False
    assert out.startswith("✗ steps_to_catch_up")
    assert message in out and hint in out, out
    assert "250 to 350 steps" in out


def test_steps_to_catch_up_not_attempted(capsys):
    ok, out = verdict(ch11.check_steps_to_catch_up, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out
