"""The GPT model: shapes, parameter counts, tying, generation, sampling and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from transformer_core import GPT, GPTConfig
from transformer_core.sampling import (
    filter_top_k,
    filter_top_p,
    next_token_probs,
    sample_next_token,
)

VOCAB, CTX = 50, 16


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(**{"vocab_size": VOCAB, "context_length": CTX, "n_layer": 2, "n_head": 4,
                       "d_model": 32, **overrides})
    return GPT(cfg).eval()


def ids(B=2, T=10, seed=0):
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- shapes and options


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"positional": "sinusoidal"},
        {"positional": "rotary", "norm": "rmsnorm", "activation": "swiglu", "bias": False},
        {"norm_first": False},
        {"n_kv_head": 2},
        {"tie_weights": False, "dropout": 0.1},
    ],
    ids=["learned", "sinusoidal", "llama-like", "post-norm", "gqa", "untied"],
)
def test_forward_and_attention_shapes(overrides):
    model = tiny(**overrides)
    x = ids(3, 9)
    logits = model(x)
    assert logits.shape == (3, 9, VOCAB) and logits.dtype == torch.float32
    logits2, attn = model(x, return_attention=True)
    torch.testing.assert_close(logits2, logits)
    assert attn.shape == (2, 3, 4, 9, 9)
    # a full context is fine, one token more is not
    assert model(ids(1, CTX)).shape == (1, CTX, VOCAB)


def test_gpt2_small_parameter_count():
    cfg = GPTConfig.gpt2_small()
    V, P, D, L, F_ = cfg.vocab_size, cfg.context_length, cfg.d_model, cfg.n_layer, cfg.d_ff
    per_layer = (
        2 * D  # ln_1
        + 4 * (D * D + D)  # q, k, v, out projections with biases
        + 2 * D  # ln_2
        + (D * F_ + F_) + (F_ * D + D)  # the MLP
    )
    formula = V * D + P * D + L * per_layer + 2 * D  # token + position embeddings, blocks, ln_f (head tied)
    assert formula == 124_439_808
    with torch.device("meta"):
        model = GPT(cfg)
    assert model.num_parameters() == formula
    assert model.num_parameters(non_embedding=True) == formula - V * D - P * D


def test_weights_are_tied_and_untied_on_request():
    model = tiny()
    assert model.lm_head.weight is model.tok_emb.weight
    untied = tiny(tie_weights=False)
    assert untied.lm_head.weight is not untied.tok_emb.weight
    assert untied.num_parameters() == model.num_parameters() + VOCAB * 32


def test_gpt2_initialisation_gives_a_uniform_first_guess():
    """N(0, 0.02) init: initial loss is close to ln(vocab), not the huge value of an N(0, 1) init."""
    model = tiny()
    x = ids(4, CTX)
    loss = model.loss(x, x.roll(-1, dims=1))
    assert abs(loss.item() - math.log(VOCAB)) < 0.05
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.2)
    residual_std = model.blocks[0].attn.out_proj.weight.std().item()
    assert residual_std == pytest.approx(0.02 / math.sqrt(2 * 2), rel=0.2)


def test_loss_is_cross_entropy_of_the_logits():
    model = tiny()
    x, y = ids(2, 8), ids(2, 8, seed=1)
    expected = F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
    torch.testing.assert_close(model.loss(x, y), expected)


def test_a_few_steps_of_training_lower_the_loss():
    model = tiny().train()
    x = torch.arange(CTX)[None].repeat(4, 1) % 7  # a periodic sequence
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model.loss(x[:, :-1], x[:, 1:]).item()
    for _ in range(40):
        loss = model.loss(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 3


def test_config_round_trip_and_presets():
    cfg = GPTConfig(vocab_size=10, context_length=8, d_model=16, n_head=2, d_ff=None)
    assert cfg.d_ff == 64 and cfg.head_dim == 8
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown GPTConfig fields"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_heads": 3})
    t = GPTConfig.tiny()
    assert (t.n_layer, t.n_head, t.d_model) == (2, 4, 64)
    g = GPTConfig.gpt2_small(context_length=256)
    assert (g.context_length, g.activation, g.norm_first, g.tie_weights) == (256, "gelu_tanh", True, True)


# ----------------------------------------------------------------------------- generation


def test_generate_shapes_and_greedy_determinism():
    model = tiny()
    prompt = ids(2, 5)
    out = model.generate(prompt, max_new_tokens=7, greedy=True)
    assert out.shape == (2, 12) and out.dtype == torch.long
    assert torch.equal(out[:, :5], prompt)
    assert torch.equal(out, model.generate(prompt, max_new_tokens=7, greedy=True))
    assert torch.equal(model.generate(prompt, max_new_tokens=0), prompt)


def test_greedy_generation_picks_the_argmax():
    model = tiny()
    prompt = ids(2, 5)
    out = model.generate(prompt, max_new_tokens=1, greedy=True)
    assert torch.equal(out[:, -1], model(prompt)[:, -1].argmax(-1))


def test_seeded_sampling_is_reproducible():
    model = tiny()
    prompt = ids(2, 3)

    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        return model.generate(prompt, 20, temperature=1.5, top_k=20, top_p=0.9, generator=g)

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))


@pytest.mark.parametrize("was_training", [True, False])
def test_generate_restores_training_mode(was_training):
    model = tiny(dropout=0.2)
    model.train(was_training)
    model.generate(ids(1, 4), max_new_tokens=3)
    assert model.training is was_training
    assert all(m.training is was_training for m in model.modules())


def test_generate_restores_training_mode_after_an_error():
    model = tiny().train()
    with pytest.raises(ValueError):
        model.generate(ids(1, 4), max_new_tokens=3, temperature=0)
    assert model.training


def test_generation_runs_past_the_context_length():
    model = tiny()
    out = model.generate(ids(1, CTX - 2), max_new_tokens=10, greedy=True)
    assert out.shape == (1, CTX + 8)
    # the last token is predicted from the last CTX tokens only
    assert out[0, -1].item() == model(out[:, -CTX - 1 : -1])[0, -1].argmax().item()


# ----------------------------------------------------------------------------- sampling helpers


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = filter_top_k(logits, 2)
    assert torch.isfinite(kept).tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.3, 0.15]])
    logits = probs.log()
    assert torch.isfinite(filter_top_p(logits, 0.5)).tolist() == [[False, True, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.8)).tolist() == [[False, True, True, False]]
    assert torch.isfinite(filter_top_p(logits, 0.81)).tolist() == [[False, True, True, True]]
    assert torch.isfinite(filter_top_p(logits, 1.0)).all()
    p = next_token_probs(logits, top_p=0.8)
    torch.testing.assert_close(p, torch.tensor([[0.0, 0.625, 0.375, 0.0]]))


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    base = next_token_probs(logits)
    cold = next_token_probs(logits, temperature=0.5)
    hot = next_token_probs(logits, temperature=4.0)
    assert cold[0, 0] > base[0, 0] > hot[0, 0]
    torch.testing.assert_close(cold, torch.softmax(logits / 0.5, -1))


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = torch.randn(64, 30, generator=torch.Generator().manual_seed(0))
    greedy = sample_next_token(logits, greedy=True)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next_token(logits, top_k=1, generator=g), greedy)
    assert torch.equal(sample_next_token(logits, top_p=1e-6, generator=g), greedy)


def test_sampling_follows_the_distribution():
    logits = torch.tensor([[0.0, math.log(3.0)]]).expand(4000, 2)
    draws = sample_next_token(logits, generator=torch.Generator().manual_seed(0))
    assert draws.float().mean().item() == pytest.approx(0.75, abs=0.03)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "idx, error, match",
    [
        (torch.tensor([[1, 2, VOCAB]]), ValueError, f"token id {VOCAB}, outside the vocabulary"),
        (torch.tensor([[1, -1, 2]]), ValueError, "token id -1, outside the vocabulary"),
        (torch.zeros(1, CTX + 1, dtype=torch.long), ValueError, f"context_length is {CTX}"),
        (torch.tensor([[1.0, 2.0]]), TypeError, "token ids must be integers"),
        (torch.tensor([[True, False]]), TypeError, "token ids must be integers"),
        (torch.tensor([1, 2, 3]), ValueError, r"shape \(B, T\).*idx\[None\]"),
        (torch.zeros(0, 4, dtype=torch.long), ValueError, "empty"),
        (torch.zeros(2, 0, dtype=torch.long), ValueError, "empty"),
        ([[1, 2, 3]], TypeError, "must be a torch.Tensor"),
    ],
    ids=["too-large", "negative", "too-long", "float", "bool", "1-D", "B=0", "T=0", "list"],
)
def test_bad_token_ids(idx, error, match):
    model = tiny()
    with pytest.raises(error, match=match):
        model(idx)
    if "context_length" not in match:  # generate crops long prompts; everything else it refuses too
        with pytest.raises(error, match=match):
            model.generate(idx, max_new_tokens=2)


def test_bad_targets():
    model = tiny()
    with pytest.raises(ValueError, match="targets shape"):
        model.loss(ids(2, 5), ids(2, 4))
    with pytest.raises(ValueError, match="targets contains token id 99"):
        model.loss(ids(1, 2), torch.tensor([[1, 99]]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0}, "temperature must be a number > 0"),
        ({"temperature": -1.0}, "temperature must be a number > 0"),
        ({"top_k": 0}, "top_k must be a positive int"),
        ({"top_k": VOCAB + 1}, "top_k=51 exceeds the vocabulary size 50"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"max_new_tokens": -1}, "max_new_tokens must be an int >= 0"),
        ({"max_new_tokens": 2.0}, "max_new_tokens must be an int >= 0"),
    ],
)
def test_bad_sampling_args(kwargs, match):
    model = tiny()
    args = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        model.generate(ids(1, 3), **args)


def test_greedy_ignores_sampling_args():
    model = tiny()
    out = model.generate(ids(1, 3), 4, temperature=0, greedy=True)
    assert out.shape == (1, 7)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"d_model": 30, "n_head": 4}, "d_model=30 is not divisible by n_head=4"),
        ({"vocab_size": 0}, "vocab_size must be a positive int"),
        ({"n_layer": 2.0}, "n_layer must be a positive int"),
        ({"n_kv_head": 3}, "multiple of n_kv_head=3"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"activation": "tanh"}, "activation must be one of"),
        ({"norm": "batchnorm"}, "norm must be one of"),
        ({"positional": "alibi"}, "positional must be one of"),
        ({"positional": "rotary", "d_model": 12, "n_head": 4}, "even head width"),
    ],
)
def test_bad_config(kwargs, match):
    args = {"vocab_size": 10, "context_length": 8, "d_model": 16, "n_head": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        GPTConfig(**args)


def test_gpt_needs_a_config():
    with pytest.raises(TypeError, match="GPT needs a GPTConfig"):
        GPT({"vocab_size": 10, "context_length": 8})
