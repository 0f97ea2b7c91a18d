"""The chapter 05 exercise checks: a right answer passes, each usual mistake gets its own hint."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attention_book.exercises import ch05
from transformer_core import GPT, GPTConfig


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------------ parameter count
def count(tied=True, positions=True, attn=4, mlp_mats=2, d_ff_mult=4, biases=True, block_norms=2,
          norm_bias=True, final_norm=True):
    def f(V, T, L, D):
        d_ff = d_ff_mult * D
        n = V * D * (1 if tied else 2) + (T * D if positions else 0)
        block = attn * D * D + mlp_mats * D * d_ff
        if biases:
            block += attn * D + d_ff + D
        block += block_norms * D * (2 if norm_bias else 1)
        n += L * block
        if final_norm:
            n += D * (2 if norm_bias else 1)
        return n

    return f


def test_reference_count_is_gpt2_small():
    assert ch05.gpt_parameter_count(50257, 1024, 12, 768) == 124_439_808
    assert count()(50257, 1024, 12, 768) == 124_439_808


def test_parameter_count_right(capsys):
    ok, out = verdict(ch05.check_gpt_parameter_count, count(), capsys)
    assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (count(tied=False), "tied to the token embedding"),
        (count(positions=False), "position embedding"),
        (count(attn=3), "you counted three"),
        (count(d_ff_mult=1), "You used d_ff = d_model"),
        (count(mlp_mats=3), "SwiGLU"),
        (count(biases=False), "biases are missing"),
        (count(block_norms=0), "two LayerNorms of each block are missing"),
        (count(norm_bias=False, final_norm=False), "weight *and* a bias"),
        (count(final_norm=False), "final LayerNorm"),
        (lambda V, T, L, D: count()(V, T, L, D) + 5, "what remains is"),
        (lambda V, T, L, D: V * T * L * D, "embeddings"),
        (lambda V, T, L, D: None, "returned None"),
    ],
)
def test_parameter_count_mistakes(fn, words, capsys):
    ok, out = verdict(ch05.check_gpt_parameter_count, fn, capsys)
    assert not ok and words in out, out


def test_parameter_count_stub(capsys):
    ok, out = verdict(ch05.check_gpt_parameter_count, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------ uniform loss
def test_uniform_loss_right(capsys):
    ok, out = verdict(ch05.check_uniform_loss, lambda V: math.log(V), capsys)
    assert ok and out.startswith("✓")
    ok, out = verdict(ch05.check_uniform_loss, lambda V: torch.tensor(float(V)).log(), capsys)
    assert ok


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda V: math.log2(V), "bits"),
        (lambda V: math.log10(V), "base 10"),
        (lambda V: 1 / V, "probability"),
        (lambda V: -math.log(V), "sign"),
        (lambda V: V, "vocabulary size"),
        (lambda V: math.sqrt(V), "cross-entropy of"),
        (lambda V: "ln V", "should return a number"),
    ],
)
def test_uniform_loss_mistakes(fn, words, capsys):
    ok, out = verdict(ch05.check_uniform_loss, fn, capsys)
    assert not ok and words in out, out


def test_uniform_loss_stub(capsys):
    ok, out = verdict(ch05.check_uniform_loss, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------ tie weights
def tie_right(model):
    model.lm_head.weight = model.tok_emb.weight
    return model


def tie_other_way(model):
    model.tok_emb.weight = model.lm_head.weight
    return model


def tie_copy(model):
    with torch.no_grad():
        model.lm_head.weight.copy_(model.tok_emb.weight)
    return model


def tie_data(model):
    model.lm_head.weight.data = model.tok_emb.weight.data
    return model


def tie_new_parameter(model):
    model.lm_head.weight = nn.Parameter(model.tok_emb.weight)
    return model


def tie_no_return(model):
    model.lm_head.weight = model.tok_emb.weight


@pytest.mark.parametrize("fn", [tie_right, tie_other_way])
def test_tie_weights_right(fn, capsys):
    ok, out = verdict(ch05.check_tie_weights, fn, capsys)
    assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (tie_copy, "same *values*"),
        (tie_data, "share memory"),
        (tie_new_parameter, "share memory"),
        (tie_no_return, "returned None"),
        (lambda model: model, "still two different matrices"),
        (lambda model: GPT(GPTConfig.tiny(vocab_size=50, context_length=16)), "return that model"),
    ],
)
def test_tie_weights_mistakes(fn, words, capsys):
    ok, out = verdict(ch05.check_tie_weights, fn, capsys)
    assert not ok and words in out, out


def test_tie_weights_stub(capsys):
    ok, out = verdict(ch05.check_tie_weights, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------ causal logits
def changed(idx, t, vocab):
    idx2 = idx.clone()
    idx2[:, t] = (idx2[:, t] + 1) % vocab
    return idx2


def mcb_right(model, idx, t):
    with torch.no_grad():
        a = model(idx)
        b = model(changed(idx, t, model.config.vocab_size))
    return (a[:, :t] - b[:, :t]).abs().max().item()


def mcb_including_t(model, idx, t):
    with torch.no_grad():
        a, b = model(idx), model(changed(idx, t, model.config.vocab_size))
    return (a[:, : t + 1] - b[:, : t + 1]).abs().max().item()


def mcb_no_change(model, idx, t):
    with torch.no_grad():
        a, b = model(idx), model(idx.clone())
    return (a[:, :t] - b[:, :t]).abs().max().item()


def mcb_in_place(model, idx, t):
    with torch.no_grad():
        a = model(idx)
        idx[:, t] = (idx[:, t] + 1) % model.config.vocab_size
        b = model(idx)
    return (a[:, :t] - b[:, :t]).abs().max().item()


def mcb_signed(model, idx, t):
    with torch.no_grad():
        a, b = model(idx), model(changed(idx, t, model.config.vocab_size))
    return -(a[:, :t] - b[:, :t]).abs().max().item() - 1.0


def test_causal_logits_right(capsys):
    ok, out = verdict(ch05.check_causal_logits, mcb_right, capsys)
    assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (mcb_including_t, "Compare only positions 0 .. t-1"),
        (mcb_no_change, "really see a different token"),
        (mcb_in_place, "in place"),
        (mcb_signed, "absolute"),
    ],
)
def test_causal_logits_mistakes(fn, words, capsys):
    ok, out = verdict(ch05.check_causal_logits, fn, capsys)
    assert not ok and words in out, out


def test_causal_logits_stub(capsys):
    ok, out = verdict(ch05.check_causal_logits, stub, capsys)
    assert not ok and "not attempted" in out


def test_checks_leave_the_readers_random_state_alone(capsys):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ch05.check_tie_weights(tie_right)
    ch05.check_causal_logits(mcb_right)
    capsys.readouterr()
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------ embedding_std (experiment)
def test_embedding_std_accepts_the_measured_range(capsys):
    for found in (0.07, ch05.EMBEDDING_STD[0], ch05.EMBEDDING_STD[1]):
        ok, out = verdict(ch05.check_embedding_std, lambda found=found: found, capsys)
        assert ok is True, out
        assert out.startswith("✓ embedding_std")


@pytest.mark.parametrize(
    ("answer", "message", "hint"),
    [(0.02, "is too low", "only the embedding redrawn"), (1.0, "is too high", "bisect between")],
)
def test_embedding_std_explains_a_wrong_answer(answer, message, hint, capsys):
    ok, out = verdict(ch05.check_embedding_std, lambda: answer, capsys)
    assert ok is False
    assert out.startswith("✗ embedding_std")
    assert message in out and hint in out, out
    assert "0.064 to 0.076" in out


def test_embedding_std_not_attempted(capsys):
    ok, out = verdict(ch05.check_embedding_std, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out
