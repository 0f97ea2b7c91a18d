"""GPT.from_hf_gpt2 against Hugging Face's GPT2LMHeadModel (randomly initialised: nothing downloaded)."""

from __future__ import annotations

import pytest
import torch
from _hf_parity import assert_greedy_matches_hf
from _optional import require_module

from transformer_core import GPT, GPTConfig

transformers = require_module("transformers", "the GPT-2 parity tests need Hugging Face transformers")

VOCAB, N_POS, D, N_LAYER, N_HEAD = 100, 64, 64, 2, 4


def hf_config(**overrides):
    return transformers.GPT2Config(**{
        "vocab_size": VOCAB, "n_positions": N_POS, "n_embd": D, "n_layer": N_LAYER, "n_head": N_HEAD,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        # GPT-2's ids 50256 do not exist in this small vocabulary; no EOS so that generate never stops early
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        "attn_implementation": "eager", **overrides,
    })


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(hf_config()).eval()
    with torch.no_grad():  # HF starts LayerNorms at 1/0 and biases at 0: make every weight count
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def prompt():
    return torch.randint(0, VOCAB, (3, 17), generator=torch.Generator().manual_seed(1))


def test_config_is_read_off_the_hf_model(hf_model):
    ours = GPT.from_hf_gpt2(hf_model)
    c = ours.config
    assert (c.vocab_size, c.context_length, c.n_layer, c.n_head, c.d_model, c.d_ff) == (
        VOCAB, N_POS, N_LAYER, N_HEAD, D, 4 * D,
    )
    assert (c.activation, c.norm_first, c.positional, c.tie_weights) == ("gelu_tanh", True, "learned", True)
    assert c.layer_norm_eps == hf_model.config.layer_norm_epsilon
    assert ours.num_parameters() == sum(p.numel() for p in hf_model.parameters())


def test_logits_match_in_float64(hf_model, prompt):
    hf64 = transformers.GPT2LMHeadModel(hf_config()).eval().double()
    hf64.load_state_dict(hf_model.state_dict())
    ours = GPT.from_hf_gpt2(hf64).eval()
    assert ours.lm_head.weight.dtype == torch.float64
    with torch.no_grad():
        expected = hf64(prompt).logits
    torch.testing.assert_close(ours(prompt), expected, atol=1e-10, rtol=1e-10)


def test_logits_and_attention_match_in_float32(hf_model, prompt):
    ours = GPT.from_hf_gpt2(hf_model).eval()
    with torch.no_grad():
        expected = hf_model(prompt, output_attentions=True)
        logits, attn = ours(prompt, return_attention=True)
    torch.testing.assert_close(logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn, torch.stack(expected.attentions), atol=1e-6, rtol=1e-5)


def test_greedy_tokens_match_hf_generate(hf_model, prompt):
    assert prompt.shape == (3, 17)
    assert_greedy_matches_hf(GPT.from_hf_gpt2(hf_model).eval(), hf_model, prompt)


def test_from_state_dict_with_n_head(hf_model, prompt):
    sd = hf_model.state_dict()
    from_sd = GPT.from_hf_gpt2(sd, n_head=N_HEAD).eval()
    from_model = GPT.from_hf_gpt2(hf_model).eval()
    assert from_sd.config == from_model.config
    torch.testing.assert_close(from_sd(prompt), from_model(prompt), atol=0, rtol=0)
    # without the "transformer." prefix (GPT2Model's own state dict) too
    bare = GPT.from_hf_gpt2(hf_model.transformer.state_dict(), n_head=N_HEAD).eval()
    torch.testing.assert_close(bare(prompt), from_model(prompt), atol=0, rtol=0)


def test_copied_weights_are_independent_of_the_hf_model(hf_model, prompt):
    ours = GPT.from_hf_gpt2(hf_model).eval()
    before = ours(prompt)
    with torch.no_grad():
        for p in ours.parameters():
            p.zero_()
    assert hf_model.transformer.wte.weight.abs().sum() > 0
    assert not torch.equal(GPT.from_hf_gpt2(hf_model).eval()(prompt), ours(prompt))
    torch.testing.assert_close(GPT.from_hf_gpt2(hf_model).eval()(prompt), before)


def test_state_dict_errors(hf_model):
    sd = hf_model.state_dict()
    with pytest.raises(ValueError, match="cannot infer n_head for width 64; pass n_head"):
        GPT.from_hf_gpt2(sd)
    with pytest.raises(ValueError, match="not a GPT-2 state dict: key 'transformer.wte.weight' is missing"):
        GPT.from_hf_gpt2(GPT(GPTConfig.tiny()).state_dict(), n_head=4)
    with pytest.raises(ValueError, match="not a GPT-2 state dict"):
        GPT.from_hf_gpt2({"weight": torch.zeros(3, 3)})
    with pytest.raises(TypeError, match="GPT2LMHeadModel or its state_dict"):
        GPT.from_hf_gpt2(torch.nn.Linear(3, 3))
    untied = dict(sd)
    untied["lm_head.weight"] = sd["lm_head.weight"] + 1
    with pytest.raises(ValueError, match="lm_head.weight differs from wte.weight"):
        GPT.from_hf_gpt2(untied, n_head=N_HEAD)


def test_unsupported_hf_options_are_refused():
    model = transformers.GPT2LMHeadModel(hf_config(activation_function="silu"))
    with pytest.raises(ValueError, match="unsupported GPT-2 activation_function 'silu'"):
        GPT.from_hf_gpt2(model)
    model = transformers.GPT2LMHeadModel(hf_config(scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        GPT.from_hf_gpt2(model)


def test_gpt2_small_matches_hf_parameter_count():
    with torch.device("meta"):
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config())
        ours = GPT(GPTConfig.gpt2_small())
    hf_count = sum(p.numel() for p in hf.parameters())  # tied head counted once
    assert hf_count == ours.num_parameters() == 124_439_808
    c = hf.config
    assert (c.vocab_size, c.n_positions, c.n_layer, c.n_head, c.n_embd) == (50257, 1024, 12, 12, 768)
