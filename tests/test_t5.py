"""The T5-style encoder-decoder against Hugging Face's T5ForConditionalGeneration (random init, nothing downloaded)."""

from __future__ import annotations

import pytest
import torch
from _optional import require_module

from transformer_core import T5, T5Config, Transformer
from transformer_core.t5 import relative_position_bucket

transformers = require_module("transformers", "the T5 parity tests need Hugging Face transformers")

VOCAB = 61


def make_hf(seed=0, **overrides):
    config = transformers.T5Config(
        **{
            "vocab_size": VOCAB,
            "d_model": 32,
            "d_kv": 8,
            "d_ff": 64,
            "num_layers": 2,
            "num_decoder_layers": 2,
            "num_heads": 4,
            "relative_attention_num_buckets": 8,
            "relative_attention_max_distance": 16,
            "dropout_rate": 0.0,
            "decoder_start_token_id": 0,
            **overrides,
        }
    )
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():  # weights of a size at which a wrong mapping shows (HF's init is tiny)
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
            elif "relative_attention_bias" in name:
                p.normal_(std=1.0)
            elif (
                "shared" in name
            ):  # small: else the residual stream keeps the input token, which wins
                p.normal_(std=0.3)
            elif p.dim() == 2:
                p.normal_(std=p.shape[1] ** -0.5)
    return model


@pytest.fixture(scope="module")
def hf_model():
    return make_hf()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    src = torch.randint(
        2, VOCAB, (3, 20), generator=g
    )  # 20 > max_distance: the far buckets are used
    src[0, 13:] = 0  # padding (T5's pad id 0)
    src[2, 17:] = 0
    tgt = torch.randint(2, VOCAB, (3, 18), generator=g)
    tgt[:, 0] = 0  # the decoder starts with the pad token
    return src, tgt


def hf_greedy(hf, src):
    with torch.no_grad():
        return hf.generate(
            input_ids=src,
            attention_mask=(src != 0).long(),
            do_sample=False,
            num_beams=1,
            max_new_tokens=15,
        )


def hf_logits(hf, src, tgt):
    with torch.no_grad():
        return hf(input_ids=src, attention_mask=(src != 0).long(), decoder_input_ids=tgt).logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_match_hf(batch, dtype):
    hf = make_hf().to(dtype)
    ours = Transformer.from_hf_t5(hf).eval()
    assert isinstance(ours, T5) and ours.lm_head.weight.dtype == dtype
    src, tgt = batch
    expected = hf_logits(hf, src, tgt)
    with torch.no_grad():
        logits = ours(src, tgt)
    assert expected.abs().max() > 1
    assert (logits - expected).abs().max() < 1e-5


def test_untied_head_and_state_dict(hf_model, batch):
    hf = make_hf(seed=3, tie_word_embeddings=False)
    src, tgt = batch
    ours = T5.from_hf_t5(hf.state_dict(), config=hf.config).eval()
    with torch.no_grad():
        assert (ours(src, tgt) - hf_logits(hf, src, tgt)).abs().max() < 1e-5
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in hf.parameters())
    with pytest.raises(ValueError, match="needs config"):
        T5.from_hf_t5(hf.state_dict())


def test_greedy_generation_matches_hf(hf_model, batch):
    src, _ = batch
    ours = T5.from_hf_t5(hf_model)
    expected = hf_greedy(hf_model, src)
    assert len(set(expected[:, 1:].flatten().tolist())) > 3  # not one token over and over
    for use_cache in (True, False):
        assert torch.equal(ours.generate(src, max_new_tokens=15, use_cache=use_cache), expected)


def test_relative_bias_is_bidirectional_in_the_encoder_and_causal_in_the_decoder(hf_model):
    ours = T5.from_hf_t5(hf_model)
    rel = torch.arange(-20, 21)
    both = relative_position_bucket(rel, True, 8, 16)
    causal = relative_position_bucket(rel, False, 8, 16)
    assert torch.equal(both[20 + 3] != both[20 - 3], torch.tensor(True))  # left and right differ
    assert (both[21:] >= 4).all() and (both[:20] < 4).all() and both[20] == 0
    assert (causal[20:] == 0).all() and (causal[:20] > 0).all()  # the future shares bucket 0
    assert both.max() < 8 and causal.max() < 8
    enc, dec = ours.encoder_bias.buckets(6, 6), ours.decoder_bias.buckets(6, 6)
    assert torch.equal(enc, enc.T) is False and torch.equal(dec.triu(1), torch.zeros_like(dec))
    assert torch.equal(
        ours.decoder_bias.buckets(1, 6), dec[-1:]
    )  # a cached step: the last query row
    # the decoder never attends to the future
    src = torch.randint(2, VOCAB, (1, 5))
    memory, pad = ours.encode(src)
    h = ours.decoder[0].ln_1(ours.shared(torch.randint(2, VOCAB, (1, 6))))
    _, w = ours.decoder[0].attn(
        h, attn_mask=ours.decoder_bias(6, 6), is_causal=True, need_weights=True
    )
    assert torch.equal(w.triu(1), torch.zeros_like(w))


def test_bad_input_gets_a_clear_error(hf_model):
    ours = T5.from_hf_t5(hf_model)
    good = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours(torch.full((2, 4), VOCAB), good)
    with pytest.raises(ValueError, match="shape"):
        ours(torch.ones(4, dtype=torch.long), good)
    with pytest.raises(TypeError, match="integers"):
        ours(good.float(), good)
    with pytest.raises(ValueError, match="batch sizes differ"):
        ours(good, good[:1])
    with pytest.raises(ValueError, match="max_new_tokens"):
        ours.generate(good, max_new_tokens=0)
    with pytest.raises(ValueError, match="feed_forward_proj"):
        T5.from_hf_t5(make_hf(feed_forward_proj="gated-gelu"))


def test_greedy_generation_stops_at_eos_like_hf(hf_model, batch):
    """Rows that reach EOS are padded after it; generation stops when every row has ended."""
    src, _ = batch
    free = T5.from_hf_t5(hf_model).generate(src, max_new_tokens=15)
    eos = int(free[0, -1])  # a token the greedy rows end with: make it the end of sequence
    hf = make_hf(eos_token_id=eos)
    expected = hf_greedy(hf, src)
    assert (expected == eos).any() and expected.shape[1] < free.shape[1]  # stopped early
    assert torch.equal(T5.from_hf_t5(hf).generate(src, max_new_tokens=15), expected)


# ------------------------------------------------------------ span corruption
def test_span_corruption_hides_the_density_in_spans_and_the_target_restores_them():
    from transformer_core.t5 import span_corruption

    g = torch.Generator().manual_seed(0)
    sentinels = list(range(1000, 1020))
    hidden = total = n_spans = 0
    for n in range(10, 80):
        ids = torch.arange(n) + 10
        inputs, targets = span_corruption(ids, sentinels, generator=g)
        used = [t for t in inputs.tolist() if t >= 1000]
        assert used == sentinels[: len(used)] and targets[-1] == sentinels[len(used)]
        # put the spans back where their sentinels are: the original sequence
        spans, current = {}, None
        for t in targets.tolist()[:-1]:
            if t >= 1000:
                current = spans.setdefault(t, [])
            else:
                current.append(t)
        rebuilt = [x for t in inputs.tolist() for x in (spans[t] if t >= 1000 else [t])]
        assert rebuilt == ids.tolist()
        assert all(spans[s] for s in used) and inputs[0] < 1000  # no empty span; starts with a kept token
        hidden += n - (len(inputs) - len(used))
        total += n
        n_spans += len(used)
    assert abs(hidden / total - 0.15) < 0.01 and 2.5 < hidden / n_spans < 3.5


def test_span_corruption_bad_input():
    from transformer_core.t5 import span_corruption

    with pytest.raises(ValueError, match="one sequence"):
        span_corruption(torch.zeros(2, 5, dtype=torch.long), [1, 2])
    with pytest.raises(ValueError, match="noise_density"):
        span_corruption(torch.arange(10), [1, 2], noise_density=1.0)
    with pytest.raises(ValueError, match="mean_span_length"):
        span_corruption(torch.arange(10), [1, 2], mean_span_length=0.5)
    with pytest.raises(ValueError, match="sentinels"):
        span_corruption(torch.arange(100), [1, 2])


def test_t5_initialisation_folds_the_score_scale_into_the_queries():
    """No 1/sqrt(head size) in the attention, so the query projection is drawn that much smaller."""
    torch.manual_seed(0)
    d, heads, ff = 256, 8, 1024
    model = T5(T5Config(vocab_size=50, d_model=d, n_head=heads, d_ff=ff, n_encoder_layers=1, n_decoder_layers=1))
    attn, mlp = model.encoder[0].attn, model.encoder[0].mlp
    head = d // heads
    assert attn.q_proj.weight.std().item() == pytest.approx((d * head) ** -0.5, rel=0.05)
    assert attn.k_proj.weight.std().item() == pytest.approx(d**-0.5, rel=0.05)
    assert mlp.fc2.weight.std().item() == pytest.approx(ff**-0.5, rel=0.05)
    assert model.shared.weight.std().item() == pytest.approx(1.0, rel=0.05)
    # the scores of unit-size inputs come out of order 1, as scaled attention's would
    x = torch.randn(4, 32, d)
    q = attn.q_proj(x).view(4, 32, heads, head)
    k = attn.k_proj(x).view(4, 32, heads, head)
    assert 0.5 < torch.einsum("bqhd,bkhd->bhqk", q, k).std().item() < 2.0
