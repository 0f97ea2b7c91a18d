"""Head scores (transformer_core.interpret): each score on hand-made attention patterns, shapes,
agreement with the explorer's entropy, and errors that say what is wrong."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from transformer_core import GPT, GPTConfig
from transformer_core.data import repeated_random_sequences
from transformer_core.interpret import (
    attention_entropy,
    entropy_score,
    head_scores,
    induction_score,
    previous_token_score,
    top_heads,
)


def causal_uniform(T: int) -> torch.Tensor:
    """Each query spreads evenly over itself and the past: row t holds 1 / (t + 1)."""
    allowed = torch.ones(T, T).tril().bool()
    return allowed.double() / allowed.sum(-1, keepdim=True)


def offset_pattern(T: int, offset: int) -> torch.Tensor:
    """Query t puts all its weight on key t - offset (on key 0 where that does not exist)."""
    w = torch.zeros(T, T, dtype=torch.float64)
    for t in range(T):
        w[t, max(t - offset, 0)] = 1.0
    return w


def random_causal(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    T = shape[-1]
    scores = torch.randn(*shape, generator=g, dtype=torch.float64)
    scores = scores.masked_fill(~torch.ones(T, T).tril().bool(), float("-inf"))
    return scores.softmax(-1)


def test_previous_token_head_scores_one():
    assert previous_token_score(offset_pattern(10, 1)).item() == 1.0
    assert previous_token_score(offset_pattern(10, 0)).item() == 0.0  # attends to itself


def test_previous_token_score_of_uniform_attention():
    T = 6
    want = sum(1 / (t + 1) for t in range(1, T)) / (T - 1)
    assert previous_token_score(causal_uniform(T)).item() == pytest.approx(want)


def test_induction_head_scores_one():
    half = 8
    assert induction_score(offset_pattern(2 * half, half - 1), half).item() == 1.0
    # the previous occurrence of the current token itself (a duplicate-token head) is not it
    assert induction_score(offset_pattern(2 * half, half), half).item() == 0.0
    assert induction_score(offset_pattern(2 * half, 1), half).item() == 0.0


def test_induction_score_counts_only_the_repeated_half():
    half, T = 4, 8
    w = torch.zeros(T, T, dtype=torch.float64)
    w[half - 1, 0] = 1.0  # query 3 -> key 0: on the stripe's line, but not in the repeated half
    w[half:, 0] = 1.0
    assert induction_score(w, half).item() == 0.0
    w = offset_pattern(T, half - 1)
    w[half] = 0
    w[half, 0] = 1.0  # one of the four repeated-half queries misses
    assert induction_score(w, half).item() == 0.75


def test_induction_score_works_for_odd_lengths():
    # the model's inputs are often x[:, :-1]: 2 * half - 1 positions
    half = 5
    w = offset_pattern(2 * half - 1, half - 1)
    assert induction_score(w, half).item() == 1.0


def test_entropy_of_sharp_and_uniform_rows():
    T = 7
    assert_close(attention_entropy(offset_pattern(T, 1)), torch.zeros(T, dtype=torch.float64))
    want = torch.tensor([math.log(t + 1) for t in range(T)], dtype=torch.float64)
    assert_close(attention_entropy(causal_uniform(T)), want)
    assert_close(entropy_score(causal_uniform(T)), want.mean())


def test_entropy_has_no_nan_on_masked_zeros():
    w = random_causal(3, 9, 9)
    assert (w == 0).any()
    ent = attention_entropy(w)
    assert torch.isfinite(ent).all()
    assert (ent >= 0).all()


@pytest.mark.parametrize("shape", [(5, 5), (3, 5, 5), (2, 4, 3, 6, 6)])
def test_scores_keep_the_leading_shape(shape):
    w = random_causal(*shape)
    lead = shape[:-2]
    assert previous_token_score(w).shape == lead
    assert induction_score(w, shape[-1] // 2).shape == lead
    assert entropy_score(w).shape == lead
    assert attention_entropy(w).shape == shape[:-1]


def test_scores_of_each_matrix_are_independent():
    w = random_causal(2, 3, 8, 8)
    full = previous_token_score(w)
    for i in range(2):
        for j in range(3):
            assert_close(full[i, j], previous_token_score(w[i, j]))
            assert_close(induction_score(w, 4)[i, j], induction_score(w[i, j], 4))


def test_head_scores_on_a_model_agree_with_the_explorer():
    from transformer_core import viz
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=11, context_length=16)).eval()
    x = repeated_random_sequences(3, 16, 11, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, attn = model(x, return_attention=True)  # (L, B, H, T, T)
    scores = head_scores(attn, half_len=8)
    assert set(scores) == {"previous_token", "entropy", "induction"}
    for v in scores.values():
        assert v.shape == (2, 4)
    assert_close(scores["induction"], induction_score(attn, 8).mean(1))
    explorer = viz.AttentionExplorer(attn[:, :1], [str(i) for i in x[0].tolist()], mode="static",
                                     overview=False)
    assert_close(torch.as_tensor(explorer.entropy), entropy_score(attn[:, 0]).double(), atol=1e-5,
                 rtol=1e-5)
    assert "induction" not in head_scores(attn)


def test_top_heads():
    scores = torch.tensor([[0.1, 0.9, 0.3], [0.95, 0.2, 0.9]])
    assert top_heads(scores) == [(1, 0, pytest.approx(0.95))]
    assert [(layer, head) for layer, head, _ in top_heads(scores, k=3)] == [(1, 0), (0, 1), (1, 2)]


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [
        (lambda: previous_token_score(torch.zeros(3, 4)), ValueError, "equal length"),
        (lambda: previous_token_score(torch.ones(1, 1)), ValueError, "at least 2"),
        (lambda: previous_token_score([[1.0]]), TypeError, "torch.Tensor"),
        (lambda: induction_score(torch.zeros(6, 6), 6), ValueError, "half_len"),
        (lambda: induction_score(torch.zeros(6, 6), 0), ValueError, "half_len"),
        (lambda: induction_score(torch.zeros(6, 6), 2.5), ValueError, "half_len"),
        (lambda: head_scores(torch.zeros(2, 4, 4)), ValueError, "(L, B, H, T, T)"),
        (lambda: top_heads(torch.zeros(4)), ValueError, "(L, H)"),
    ],
)
def test_errors(call, error, text):
    with pytest.raises(error, match=None) as info:
        call()
    assert text in str(info.value)
