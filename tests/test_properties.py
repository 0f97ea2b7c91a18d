"""Properties that must hold for any input (hypothesis): causality, cache equivalence, attention rows
that sum to one, padding that changes nothing, and fully masked rows that give zeros, never NaN."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_core import (
    GPT,
    GPTConfig,
    MultiHeadAttention,
    Transformer,
    TransformerConfig,
    scaled_dot_product_attention,
)

SETTINGS = settings(max_examples=25, deadline=None)

VOCAB, CTX = 23, 12
PAD, BOS, EOS = 0, 1, 2

positionals = st.sampled_from(["learned", "sinusoidal", "rotary"])
norm_firsts = st.booleans()


@functools.cache
def gpt(positional: str, norm_first: bool) -> GPT:
    """Float64 models: cached and uncached runs then agree far below any sampling decision."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=VOCAB, context_length=CTX, n_layer=2, n_head=2, d_model=16,
                    positional=positional, norm_first=norm_first)
    model = GPT(cfg).double().eval()
    with torch.no_grad():  # larger weights than GPT-2's init: predictions that depend on the context
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model


@functools.cache
def transformer() -> Transformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(VOCAB, VOCAB, d_model=16, n_head=2, n_encoder_layers=2, n_decoder_layers=2,
                            d_ff=32, dropout=0.0, context_length=16)
    return Transformer(cfg).double().eval()


@st.composite
def token_ids(draw, min_len=1, max_len=CTX, batch=(1, 3), low=0):
    B = draw(st.integers(*batch))
    T = draw(st.integers(min_len, max_len))
    seed = draw(st.integers(0, 2**31 - 1))
    return torch.randint(low, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- causality


@SETTINGS
@given(positionals, norm_firsts, token_ids(min_len=2), st.data(), st.booleans())
def test_gpt_output_does_not_depend_on_future_tokens(positional, norm_first, idx, data, return_attention):
    model = gpt(positional, norm_first)
    T = idx.shape[1]
    t = data.draw(st.integers(0, T - 2), label="t")
    changed = idx.clone()
    changed[:, t + 1 :] = (idx[:, t + 1 :] + data.draw(st.integers(1, VOCAB - 1), label="shift")) % VOCAB

    def run(x):
        out = model(x, return_attention=return_attention)
        return out[0] if return_attention else out

    a, b = run(idx), run(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], atol=1e-12, rtol=1e-12)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])  # the future does change later outputs


# ----------------------------------------------------------------------------- KV cache


sampling = st.one_of(
    st.fixed_dictionaries({"greedy": st.just(True)}),
    st.fixed_dictionaries({
        "temperature": st.floats(0.3, 3.0),
        "top_k": st.one_of(st.none(), st.integers(1, VOCAB)),
        "top_p": st.one_of(st.none(), st.floats(0.05, 1.0)),
    }),
)


@SETTINGS
@given(positionals, norm_firsts, token_ids(max_len=CTX, batch=(1, 2)), st.integers(1, CTX + 6), sampling,
       st.integers(0, 2**31 - 1))
def test_cached_and_uncached_generation_agree(positional, norm_first, prompt, new, kwargs, seed):
    """Also past context_length (prompt + new tokens up to 2 * CTX + 6)."""
    model = gpt(positional, norm_first)

    def generate(use_cache):
        g = torch.Generator().manual_seed(seed)
        return model.generate(prompt, new, use_cache=use_cache, generator=g, **kwargs)

    cached, uncached = generate(True), generate(False)
    assert cached.shape == (prompt.shape[0], prompt.shape[1] + new)
    assert torch.equal(cached, uncached)


def test_generation_past_the_context_is_covered():
    """The property above does run past context_length, and the model is not degenerate."""
    model = gpt("learned", True)
    prompt = torch.arange(CTX - 1)[None] % VOCAB
    g = torch.Generator().manual_seed(0)
    out = model.generate(prompt, CTX, use_cache=True, generator=g)
    assert out.shape[1] == 2 * CTX - 1 > CTX
    assert torch.equal(out, model.generate(prompt, CTX, use_cache=False, generator=torch.Generator().manual_seed(0)))
    assert len(set(out[0, CTX - 1 :].tolist())) > 1


# ----------------------------------------------------------------------------- attention weights


@SETTINGS
@given(positionals, norm_firsts, token_ids())
def test_gpt_attention_rows_sum_to_one_and_never_look_ahead(positional, norm_first, idx):
    _, attn = gpt(positional, norm_first)(idx, return_attention=True)
    B, T = idx.shape
    assert attn.shape == (2, B, 2, T, T)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, B, 2, T, dtype=attn.dtype))
    assert (attn.triu(diagonal=1) == 0).all()
    assert (attn >= 0).all()


@st.composite
def padded_pair(draw, max_src=10, max_tgt=8):
    """src with trailing padding (at least one real token per row) and a tgt starting with BOS."""
    B = draw(st.integers(1, 3))
    S, T = draw(st.integers(1, max_src)), draw(st.integers(1, max_tgt))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, VOCAB, (B, S), generator=g)
    lengths = torch.tensor([draw(st.integers(1, S)) for _ in range(B)])
    src[torch.arange(S)[None] >= lengths[:, None]] = PAD
    tgt = torch.randint(3, VOCAB, (B, T), generator=g)
    tgt[:, 0] = BOS
    return src, tgt


@SETTINGS
@given(padded_pair())
def test_transformer_attention_rows_sum_to_one_and_respect_masks(pair):
    src, tgt = pair
    _, attn = transformer()(src, tgt, return_attention=True)
    pad = (src == PAD)[None, :, None, None, :]  # (1, B, 1, 1, S)
    for weights in attn:
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1], dtype=weights.dtype))
        assert (weights >= 0).all()
    assert (attn.encoder.masked_select(pad.expand_as(attn.encoder)) == 0).all()
    assert (attn.cross.masked_select(pad.expand_as(attn.cross)) == 0).all()
    assert (attn.decoder.triu(diagonal=1) == 0).all()


# ----------------------------------------------------------------------------- padding


@SETTINGS
@given(st.integers(1, 8), st.integers(1, 5), st.booleans(), st.booleans(), st.integers(0, 2**31 - 1))
def test_mha_padding_does_not_change_real_positions(T, n_pad, is_causal, need_weights, seed):
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4).double().eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, T, 16, generator=g, dtype=torch.float64)
    padded = torch.cat([x, torch.randn(1, n_pad, 16, generator=g, dtype=torch.float64) * 5], dim=1)
    pad = torch.zeros(1, T + n_pad, dtype=torch.bool)
    pad[:, T:] = True
    out_padded, w = attn(padded, key_padding_mask=pad, is_causal=is_causal, need_weights=need_weights)
    out, _ = attn(x, is_causal=is_causal)
    torch.testing.assert_close(out_padded[:, :T], out, atol=1e-12, rtol=1e-12)
    if need_weights:
        assert (w[..., T:] == 0).all()


@SETTINGS
@given(st.integers(1, 8), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_transformer_src_padding_does_not_change_the_logits(S, n_pad, T, seed):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, VOCAB, (1, S), generator=g)
    tgt = torch.randint(3, VOCAB, (1, T), generator=g)
    tgt[:, 0] = BOS
    padded = torch.cat([src, torch.full((1, n_pad), PAD)], dim=1)
    model = transformer()
    torch.testing.assert_close(model(padded, tgt), model(src, tgt), atol=1e-12, rtol=1e-12)
    assert torch.equal(model.greedy_decode(padded, 8), model.greedy_decode(src, 8))


@SETTINGS
@given(padded_pair(max_src=8))
def test_batching_padded_sources_equals_decoding_one_by_one(pair):
    """A batch row's logits do not depend on the other rows or on how far the batch is padded."""
    src, tgt = pair
    model = transformer()
    batched = model(src, tgt)
    for i in range(src.shape[0]):
        n = int((src[i] != PAD).sum())
        torch.testing.assert_close(batched[i : i + 1], model(src[i : i + 1, :n], tgt[i : i + 1]),
                                   atol=1e-12, rtol=1e-12)


# ----------------------------------------------------------------------------- fully masked rows

dtypes = st.sampled_from([torch.float32, torch.float16, torch.bfloat16])


@SETTINGS
@given(dtypes, st.booleans(), st.booleans(), st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_any_mask_gives_finite_outputs_and_zero_dead_rows(dtype, need_weights, float_mask, T_q, T_k, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 2, n, 8, generator=g).to(dtype) for n in (T_q, T_k, T_k))
    allowed = torch.rand(2, 2, T_q, T_k, generator=g) < 0.4  # often whole rows are masked
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, float("-inf")) if float_mask else allowed
    out, w = scaled_dot_product_attention(q, k, v, attn_mask=mask, need_weights=need_weights)
    assert out.dtype == dtype and torch.isfinite(out).all()
    dead = ~allowed.any(-1)
    assert (out[dead] == 0).all()
    if dead.all():
        return
    live = ~dead
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=allowed | dead[..., None])
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 6e-2}[dtype]
    torch.testing.assert_close(out[live].double(), ref[live], atol=tol, rtol=tol)
    if need_weights:
        assert torch.isfinite(w).all() and (w[dead] == 0).all() and (w[~allowed] == 0).all()
        torch.testing.assert_close(w[live].sum(-1).double(), torch.ones(int(live.sum()), dtype=torch.float64),
                                   atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_all_padding_source_gives_finite_logits(dtype):
    """A source that is nothing but padding: every cross-attention row is dead, nothing is NaN."""
    model = copy.deepcopy(transformer()).to(dtype)
    logits = model(torch.full((2, 5), PAD), torch.tensor([[BOS, 4], [BOS, 5]]))
    assert logits.dtype == dtype and torch.isfinite(logits).all()
