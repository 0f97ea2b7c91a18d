"""The checks of chapter 10's exercises: ✓ for a right answer, a specific hint for each typical
wrong one, "not attempted" for the untouched stub, and never an exception."""

from __future__ import annotations

import math

import pytest
import torch

from attention_book.exercises import ch10


def verdict(capsys, ok: bool, *expected: str) -> None:
    out = capsys.readouterr().out
    assert ok is (out.startswith("✓")), out
    for text in expected:
        assert text in out, f"expected {text!r} in the feedback, got: {out}"


def stub(*args, **kwargs):
    raise NotImplementedError


# --- exercise 1: the previous-token score ----------------------------------------------------------


def prev_right(attn):
    return attn.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=-1)


def test_previous_token_score_right(capsys):
    assert ch10.check_previous_token_score(prev_right) is True
    verdict(capsys, True, "✓")


def test_previous_token_score_with_a_loop_is_right_too(capsys):
    def loop(attn):
        T = attn.shape[-1]
        return torch.stack([attn[..., t, t - 1] for t in range(1, T)], dim=-1).mean(-1)

    assert ch10.check_previous_token_score(loop) is True


@pytest.mark.parametrize(
    ("fn", "hint"),
    [
        (lambda a: a.diagonal(dim1=-2, dim2=-1).mean(-1), "attends to *itself*"),
        (lambda a: a.diagonal(offset=1, dim1=-2, dim2=-1).mean(-1), "offset=+1"),
        (lambda a: a.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1), "take its mean"),
        (lambda a: a.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1) / a.shape[-1], "only T - 1 queries"),
        (lambda a: a.diagonal(offset=-1, dim1=-2, dim2=-1).mean(), "one number"),
        (lambda a: a.diagonal(offset=-2, dim1=-2, dim2=-1).mean(-1), "differ from the mean weight"),
        (lambda a: None, "forget a `return`"),
        (lambda a: "0.5", "should return a torch.Tensor"),
        (lambda a: a.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1) * float("nan"), "NaN"),
    ],
)
def test_previous_token_score_mistakes(capsys, fn, hint):
    assert ch10.check_previous_token_score(fn) is False
    verdict(capsys, False, hint)


def test_previous_token_score_stub(capsys):
    assert ch10.check_previous_token_score(stub) is False
    verdict(capsys, False, "not attempted")


# --- exercise 2: the induction score ---------------------------------------------------------------


def ind_right(attn, half_len):
    return attn.diagonal(offset=-(half_len - 1), dim1=-2, dim2=-1)[..., 1:].mean(dim=-1)


def test_induction_score_right(capsys):
    assert ch10.check_induction_score(ind_right) is True
    verdict(capsys, True, "✓")


def test_induction_score_with_indices_is_right_too(capsys):
    def by_index(attn, half_len):
        T = attn.shape[-1]
        t = torch.arange(half_len, T)
        return attn[..., t, t - half_len + 1].mean(-1)

    assert ch10.check_induction_score(by_index) is True


@pytest.mark.parametrize(
    ("fn", "hint"),
    [
        (lambda a, h: a.diagonal(offset=-h, dim1=-2, dim2=-1).mean(-1), "duplicate-token"),
        (lambda a, h: a.diagonal(offset=-(h - 2), dim1=-2, dim2=-1)[..., 2:].mean(-1),
         "one position too far"),
        (lambda a, h: a.diagonal(offset=-(h - 1), dim1=-2, dim2=-1).mean(-1), "drop the stripe's first"),
        (lambda a, h: a.diagonal(offset=-(h - 1), dim1=-2, dim2=-1)[..., 1:].sum(-1), "summed the stripe"),
        (lambda a, h: a.diagonal(offset=-(h - 1), dim1=-2, dim2=-1)[..., 1:].mean(), "one number"),
        (lambda a, h: a.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1), "differ from the mean weight"),
        (lambda a, h: None, "forget a `return`"),
    ],
)
def test_induction_score_mistakes(capsys, fn, hint):
    assert ch10.check_induction_score(fn) is False
    verdict(capsys, False, hint)


def test_induction_score_stub(capsys):
    assert ch10.check_induction_score(stub) is False
    verdict(capsys, False, "not attempted")


# --- exercise 3: the entropy of each row -----------------------------------------------------------


def test_attention_entropy_right(capsys):
    assert ch10.check_attention_entropy(lambda w: -torch.xlogy(w, w).sum(-1)) is True
    verdict(capsys, True, "✓")


def test_attention_entropy_masked_log_is_right_too(capsys):
    def masked(w):
        logs = torch.where(w > 0, w.log(), torch.zeros_like(w))
        return -(w * logs).sum(-1)

    assert ch10.check_attention_entropy(masked) is True


def test_attention_entropy_with_a_tiny_epsilon_is_accepted(capsys):
    assert ch10.check_attention_entropy(lambda w: -(w * (w + 1e-12).log()).sum(-1)) is True


@pytest.mark.parametrize(
    ("fn", "hint"),
    [
        (lambda w: -(w * w.log()).sum(-1), "use torch.xlogy(w, w)"),
        (lambda w: -(w * w.log()).sum(-1), "Masked weights are 0"),
        (lambda w: -torch.xlogy(w, w).sum(-1) / math.log(2), "bits"),
        (lambda w: torch.xlogy(w, w).sum(-1), "negative"),
        (lambda w: -torch.xlogy(w, w).sum(-1).mean(-1), "every row"),
        (lambda w: -torch.xlogy(w, w).sum(-2), "differ from"),
        (lambda w: None, "forget a `return`"),
    ],
)
def test_attention_entropy_mistakes(capsys, fn, hint):
    assert ch10.check_attention_entropy(fn) is False
    verdict(capsys, False, hint)


def test_attention_entropy_stub(capsys):
    assert ch10.check_attention_entropy(stub) is False
    verdict(capsys, False, "not attempted")


# --- exercise 4: the top head ----------------------------------------------------------------------


def top_right(scores):
    return divmod(int(scores.argmax()), scores.shape[1])


def test_top_head_right(capsys):
    assert ch10.check_top_head(top_right) is True
    verdict(capsys, True, "✓")


def test_top_head_with_tensors_is_right_too(capsys):
    def with_unravel(scores):
        return torch.unravel_index(scores.argmax(), scores.shape)

    assert ch10.check_top_head(with_unravel) is True


@pytest.mark.parametrize(
    ("fn", "hint"),
    [
        (lambda s: int(s.argmax()), "flattened table"),
        (lambda s: divmod(int(s.argmax()), s.shape[1])[::-1], "(head, layer)"),
        (lambda s: divmod(int(s.argmin()), s.shape[1]), "argmin"),
        (lambda s: (int(s[:, 0].argmax()), 0), "only at head 0"),
        (lambda s: "layer 1", "pair of ints"),
        (lambda s: None, "forget a `return`"),
    ],
)
def test_top_head_mistakes(capsys, fn, hint):
    assert ch10.check_top_head(fn) is False
    verdict(capsys, False, hint)


def test_top_head_stub(capsys):
    assert ch10.check_top_head(stub) is False
    verdict(capsys, False, "not attempted")


def test_checks_leave_the_readers_random_state_alone():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    ch10.check_previous_token_score(prev_right)
    ch10.check_induction_score(ind_right)
    assert torch.equal(torch.rand(3), before)


# --- exercise 6: an experiment, how many heads can go at once ----------------------------------------


def test_heads_that_can_go_accepts_the_measured_range(capsys):
    for found in (7, *ch10.HEADS_THAT_CAN_GO):
        assert ch10.check_heads_that_can_go(lambda found=found: found) is True
        verdict(capsys, True, "✓ heads_that_can_go")


@pytest.mark.parametrize(
    ("answer", "message", "hint"),
    [(0, "is too low", "cheapest first"), (12, "is too high", "ablate applied to its own result")],
)
def test_heads_that_can_go_explains_a_wrong_answer(capsys, answer, message, hint):
    assert ch10.check_heads_that_can_go(lambda: answer) is False
    verdict(capsys, False, "✗ heads_that_can_go", message, hint, "6 to 8 heads")


def test_heads_that_can_go_not_attempted(capsys):
    assert ch10.check_heads_that_can_go(stub) is False
    verdict(capsys, False, "not attempted yet")
