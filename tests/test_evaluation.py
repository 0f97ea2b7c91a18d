"""The evaluation helpers: Wilson intervals, grammatical shares, the sliding-window text loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attention_book.grammar import generate_corpus, grammatical_share
from transformer_core import GPT, GPTConfig
from transformer_core.evaluation import (
    nats_per_char,
    sample_stories,
    text_loss,
    wilson_interval,
)
from transformer_core.tokenizers import CharTokenizer


def test_wilson_interval_known_values():
    # 98 of 100: the textbook Wilson interval is about [0.930, 0.994]
    low, high = wilson_interval(98, 100)
    assert low == pytest.approx(0.9300, abs=5e-4) and high == pytest.approx(0.9945, abs=5e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    low, high = wilson_interval(500, 1000)
    assert low < 0.5 < high and high - low == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 1000), rel=0.01)


@pytest.mark.parametrize("k, n", [(-1, 10), (11, 10), (1, 0), (1.0, 10), (True, 10)])
def test_wilson_interval_bad_input(k, n):
    with pytest.raises(ValueError, match="must be"):
        wilson_interval(k, n)


def test_grammatical_share_counts_complete_sentences():
    text = "she found a ball. she found an ball. the dog was happy. she went ho"
    share = grammatical_share([text, "tom went home."])
    assert (share.k, share.n) == (3, 4)  # the fragment after the last "." is not counted
    assert share.low < 0.75 < share.high and "75.0% of 4 sentences" in str(share)
    assert grammatical_share(generate_corpus(3, 20)).value == 1.0  # every corpus sentence passes
    with pytest.raises(ValueError, match="no complete sentence"):
        grammatical_share("no period here")
    with pytest.raises(TypeError, match="list of str"):
        grammatical_share([1, 2])


def _tiny_model(vocab_size, context_length=8):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab_size, context_length=context_length, n_layer=1, n_head=2, d_model=16))


def test_text_loss_scores_every_token_once_with_enough_context():
    model = _tiny_model(11, context_length=8)
    ids = torch.randint(0, 11, (37,), generator=torch.Generator().manual_seed(0))
    # the reference: each token t >= 1 predicted from the last <= 8 tokens, with the window that the
    # function uses (first window: the context it has; later: at least 4 tokens of context)
    T, stride = 8, 4
    nll, scored = [], set()
    start = 0
    with torch.no_grad():
        while True:
            w = ids[start : start + T + 1]
            logp = F.log_softmax(model(w[None, :-1])[0], -1)
            for j in range(len(w) - 1):
                pos = start + j + 1
                if pos not in scored and (start == 0 or j >= T - stride):
                    scored.add(pos)
                    nll.append(-float(logp[j, w[j + 1]]))
            if start + T + 1 >= len(ids):
                break
            start += stride
    assert scored == set(range(1, len(ids)))  # every prediction exactly once
    assert text_loss(model, ids) == pytest.approx(sum(nll) / len(nll), rel=1e-6)
    assert model.training  # restored


def test_text_loss_short_input_and_nats_per_char():
    model = _tiny_model(11)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        text_loss(model, [3])
    tok = CharTokenizer("abc")
    ids = tok.encode("abcabc")
    assert nats_per_char(2.0, ids, tok) == pytest.approx(2.0)  # one character per token


def test_sample_stories_is_seeded():
    tok = CharTokenizer.from_text(generate_corpus(0, 30))
    model = _tiny_model(tok.vocab_size, context_length=16)
    a = sample_stories(model, tok, n=3, max_new_tokens=10, seed=5, batch_size=2)
    b = sample_stories(model, tok, n=3, max_new_tokens=10, seed=5, batch_size=2)
    assert a == b and len(a) == 3 and all(len(s) == 10 for s in a)
    with pytest.raises(ValueError, match="positive int"):
        sample_stories(model, tok, n=0)
