"""GPT.from_hf_llama against Hugging Face's LlamaForCausalLM (randomly initialised: nothing downloaded)."""

from __future__ import annotations

import pytest
import torch
from _hf_parity import assert_greedy_matches_hf
from _optional import require_module

from transformer_core import GPT, GPTConfig, hf_llama

transformers = require_module("transformers", "the Llama parity tests need Hugging Face transformers")

VOCAB, N_POS, D, N_LAYER, N_HEAD, N_KV, D_FF = 101, 64, 64, 2, 4, 2, 96


def hf_config(**overrides):
    return transformers.LlamaConfig(**{
        "vocab_size": VOCAB, "max_position_embeddings": N_POS, "hidden_size": D, "intermediate_size": D_FF,
        "num_hidden_layers": N_LAYER, "num_attention_heads": N_HEAD, "num_key_value_heads": N_KV,
        "rms_norm_eps": 1e-5, "rope_theta": 500.0,  # not the default 10000: θ must be carried over
        # no BOS/EOS/padding in this small vocabulary, so that generate never stops early
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        "attn_implementation": "eager", **overrides,
    })


def make_hf(seed=0, embed_std=1.0, **overrides):
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(hf_config(**overrides)).eval()
    with torch.no_grad():
        # HF starts with weights of std 0.02 and norms at 1: the attention would then be almost uniform
        # and RoPE would hardly matter. Give every weight a size at which a wrong mapping shows.
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.1)
            elif "embed_tokens" in name:
                p.normal_(std=embed_std)
            else:
                p.normal_(std=p.shape[1] ** -0.5 * (2.0 if "q_proj" in name or "k_proj" in name else 1.0))
    return model


@pytest.fixture(scope="module")
def hf_model():
    return make_hf()


@pytest.fixture(scope="module")
def prompt():
    return torch.randint(0, VOCAB, (3, 17), generator=torch.Generator().manual_seed(1))


def test_config_is_read_off_the_hf_model(hf_model):
    ours = GPT.from_hf_llama(hf_model)
    c = ours.config
    assert (c.vocab_size, c.context_length, c.n_layer, c.n_head, c.n_kv_head, c.d_model, c.d_ff) == (
        VOCAB, N_POS, N_LAYER, N_HEAD, N_KV, D, D_FF,
    )
    assert (c.norm, c.activation, c.positional, c.bias, c.tie_weights) == ("rmsnorm", "swiglu", "rotary", False, False)
    assert (c.layer_norm_eps, c.rope_base) == (1e-5, 500.0)
    assert ours.num_parameters() == sum(p.numel() for p in hf_model.parameters())


def test_logits_and_attention_match_in_float32(hf_model, prompt):
    ours = GPT.from_hf_llama(hf_model).eval()
    with torch.no_grad():
        expected = hf_model(prompt, output_attentions=True)
        logits, attn = ours(prompt, return_attention=True)
    assert expected.logits.abs().max() > 1  # logits of a size where a difference would show
    torch.testing.assert_close(logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn, torch.stack(expected.attentions), atol=1e-6, rtol=1e-5)


def test_logits_match_in_float64(hf_model, prompt):
    """Both in float64. HF still computes its norm and its RoPE angles in float32 (and the book keeps its
    angles as float32), so the agreement is float32's, not float64's."""
    hf64 = make_hf().double()
    ours = GPT.from_hf_llama(hf64).eval()
    assert ours.lm_head.weight.dtype == torch.float64
    with torch.no_grad():
        expected = hf64(prompt).logits
    torch.testing.assert_close(ours(prompt), expected, atol=1e-5, rtol=1e-5)


def test_the_rope_permutation_is_needed(hf_model, prompt, monkeypatch):
    """Load the q/k rows in Hugging Face's order (no permutation): the logits are then wrong."""
    monkeypatch.setattr(hf_llama, "halves_to_pairs", lambda w, n_heads, head_dim: w)
    wrong = GPT.from_hf_llama(hf_model).eval()
    with torch.no_grad():
        diff = (wrong(prompt) - hf_model(prompt).logits).abs().max()
    assert diff > 1e-2


def test_greedy_tokens_match_hf_generate(hf_model, prompt):
    assert prompt.shape == (3, 17)
    assert_greedy_matches_hf(GPT.from_hf_llama(hf_model).eval(), hf_model, prompt)


def test_from_state_dict_with_config(hf_model, prompt):
    from_model = GPT.from_hf_llama(hf_model).eval()
    for config in (hf_model.config, hf_model.config.to_dict()):
        from_sd = GPT.from_hf_llama(hf_model.state_dict(), config=config).eval()
        assert from_sd.config == from_model.config
        torch.testing.assert_close(from_sd(prompt), from_model(prompt), atol=0, rtol=0)
    # LlamaModel's own state dict (no "model." prefix) plus the head
    bare = {**hf_model.model.state_dict(), "lm_head.weight": hf_model.lm_head.weight}
    torch.testing.assert_close(
        GPT.from_hf_llama(bare, config=hf_model.config).eval()(prompt), from_model(prompt), atol=0, rtol=0
    )


def test_multi_head_and_tied_embeddings(prompt):
    """n_kv_head == n_head (no GQA) and a head tied to the embedding also map exactly."""
    # a tied head reads the embedding: std 1/√D keeps its logits of order 1, like an untied head's
    hf = make_hf(seed=3, embed_std=D**-0.5, num_key_value_heads=N_HEAD, tie_word_embeddings=True)
    assert hf.lm_head.weight is hf.model.embed_tokens.weight
    ours = GPT.from_hf_llama(hf).eval()
    assert ours.config.n_kv_head is None and ours.config.tie_weights
    assert ours.lm_head.weight is ours.tok_emb.weight
    with torch.no_grad():
        torch.testing.assert_close(ours(prompt), hf(prompt).logits, atol=1e-5, rtol=1e-5)


def test_copied_weights_are_independent_of_the_hf_model(hf_model, prompt):
    ours = GPT.from_hf_llama(hf_model).eval()
    before = ours(prompt)
    with torch.no_grad():
        for p in ours.parameters():
            p.zero_()
    torch.testing.assert_close(GPT.from_hf_llama(hf_model).eval()(prompt), before)


@pytest.mark.parametrize(("overrides", "match"), [
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling=.*rope_type 'linear'"),
    ({"attention_bias": True}, "attention_bias=True"),
    ({"mlp_bias": True}, "mlp_bias=True"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"head_dim": 32}, "head_dim=32"),
])
def test_unsupported_hf_options_are_refused(overrides, match):
    model = transformers.LlamaForCausalLM(hf_config(**overrides))
    with pytest.raises(ValueError, match=match):
        GPT.from_hf_llama(model)
    with pytest.raises(ValueError, match=match):  # the same from a state dict and a config dict
        GPT.from_hf_llama(model.state_dict(), config=model.config.to_dict())


def test_state_dict_errors(hf_model):
    sd = hf_model.state_dict()
    with pytest.raises(ValueError, match="pass config=model.config"):
        GPT.from_hf_llama(sd)
    with pytest.raises(ValueError, match="only for a bare state dict"):
        GPT.from_hf_llama(hf_model, config=hf_model.config)
    with pytest.raises(TypeError, match="LlamaForCausalLM or its state_dict"):
        GPT.from_hf_llama(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="key 'model.embed_tokens.weight' is missing"):
        GPT.from_hf_llama(GPT(GPTConfig.tiny()).state_dict(), config=hf_model.config)
    extra = {**sd, "model.layers.0.self_attn.q_proj.bias": torch.zeros(D)}
    with pytest.raises(ValueError, match="no place for.*q_proj.bias"):
        GPT.from_hf_llama(extra, config=hf_model.config)
    tied = hf_model.config.to_dict() | {"tie_word_embeddings": True}
    with pytest.raises(ValueError, match="lm_head.weight differs from embed_tokens.weight"):
        GPT.from_hf_llama(sd, config=tied)
