"""Top-p (nucleus) filtering, property-tested over large vocabularies and random distributions.

For any logits: the kept tokens are the most likely ones (no dropped token beats a kept one), they
hold at least p of the probability, dropping the least likely of them would fall below p, the
argmax is always kept, and top_p=1 is exactly no filtering.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_core.sampling import filter_top_p, next_token_probs

TOL = 1e-5  # float32 softmax and cumsum against a float64 reference


@st.composite
def logit_rows(draw, max_vocab=50_000):
    """(B, V) logits: flat to very peaked, with ties, from a drawn seed."""
    vocab = draw(st.one_of(st.integers(1, 64), st.integers(65, max_vocab)))
    rows = draw(st.integers(1, 3))
    scale = draw(st.sampled_from([0.0, 0.01, 0.3, 1.0, 3.0, 10.0, 50.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=g) * scale
    if draw(st.booleans()):  # ties: logits on a coarse grid
        logits = logits.round()
    if draw(st.booleans()):  # a few tokens already ruled out (e.g. by top-k)
        logits[torch.rand(rows, vocab, generator=g) < 0.1] = float("-inf")
        logits[:, 0] = logits[:, 0].nan_to_num(neginf=0.0)
    return logits


@settings(deadline=None, max_examples=60)
@given(logits=logit_rows())
def test_top_p_one_is_exactly_no_filtering(logits):
    assert torch.equal(filter_top_p(logits, 1.0), logits)
    assert torch.equal(next_token_probs(logits, top_p=1.0), next_token_probs(logits))


@settings(deadline=None, max_examples=80)
@given(logits=logit_rows(), p=st.floats(0.001, 0.999))
def test_top_p_keeps_the_smallest_most_likely_set_holding_p(logits, p):
    out = filter_top_p(logits, p)
    assert out.shape == logits.shape
    kept = torch.isfinite(out)
    assert torch.equal(out[kept], logits[kept])  # kept logits are untouched
    probs = torch.softmax(logits.double(), dim=-1)
    for row in range(logits.shape[0]):
        k, lg, pr = kept[row], logits[row], probs[row]
        assert k.any() and lg[k].max() == lg.max(), "the most likely token was dropped"
        dropped = ~k & torch.isfinite(lg)
        if dropped.any():
            assert lg[k].min() >= lg[dropped].max(), "a dropped token is more likely than a kept one"
        mass = pr[k].sum()
        assert mass >= p - TOL, f"the kept tokens hold {mass:.6f} < p={p}"
        assert mass - pr[k].min() < p + TOL, "a smaller set of the most likely tokens holds p already"


@settings(deadline=None, max_examples=40)
@given(logits=logit_rows(max_vocab=5000), p=st.floats(0.001, 1.0),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
def test_nucleus_probabilities_are_a_distribution_over_the_kept_tokens(logits, p, dtype):
    logits = logits.clamp(-60_000, 60_000).to(dtype)  # within float16's range
    probs = next_token_probs(logits, top_p=p)
    assert probs.dtype == torch.float32 and torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(logits.shape[0]), atol=1e-5, rtol=0)
    kept = torch.isfinite(filter_top_p(logits, p))
    assert (probs[~kept] == 0).all()
