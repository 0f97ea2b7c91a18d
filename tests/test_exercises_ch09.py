"""The chapter 09 exercise checks: a right answer passes, each usual mistake gets its own hint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attention_book.exercises import ch09


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------- cross_attention_mask
def mask_right(src_lengths, T, S):
    keys = torch.arange(S)[None, None, :] < src_lengths[:, None, None]  # (B, 1, S)
    return keys.expand(len(src_lengths), T, S)


def mask_queries(src_lengths, T, S):
    rows = torch.arange(T)[None, :, None] < src_lengths[:, None, None]  # (B, T, 1)
    return rows.expand(len(src_lengths), T, S)


def mask_both(src_lengths, T, S):
    return mask_right(src_lengths, T, S) & mask_queries(src_lengths, T, S)


def mask_off_by_one(src_lengths, T, S):
    return (torch.arange(S)[None, None, :] <= src_lengths[:, None, None]).expand(len(src_lengths), T, S)


def mask_in_place(src_lengths, T, S):
    src_lengths -= 0  # harmless, but in place
    src_lengths += 1
    src_lengths -= 1
    out = mask_right(src_lengths.clone(), T, S)
    src_lengths[0] = 99
    return out


def test_cross_attention_mask_right(capsys):
    ok, out = verdict(ch09.check_cross_attention_mask, mask_right, capsys)
    assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (mask_queries, "masked queries, not keys"),
        (mask_both, "but also the queries"),
        (lambda lengths, T, S: ~mask_right(lengths, T, S), "inverted"),
        (mask_off_by_one, "off by one"),
        (lambda lengths, T, S: torch.ones(len(lengths), T, S, dtype=torch.bool), "nothing is masked"),
        (lambda lengths, T, S: torch.arange(S)[None, :] < lengths[:, None], "no query axis"),
        (lambda lengths, T, S: torch.arange(S)[None, None, :] < lengths[:, None, None], "full (B, T, S)"),
        (lambda lengths, T, S: mask_right(lengths, T, S).transpose(1, 2), "swapped"),
        (lambda lengths, T, S: mask_right(lengths, T, S).float(), "return a bool tensor"),
        (lambda lengths, T, S: torch.zeros(len(lengths), T, S).masked_fill(~mask_right(lengths, T, S), float("-inf")),
         "additive float mask"),
        (lambda lengths, T, S: mask_right(lengths, T, S).tolist(), "should return a torch.Tensor"),
        (mask_in_place, "in place"),
        (lambda lengths, T, S: torch.zeros(len(lengths), T, 3, dtype=torch.bool), "expected (B, T, S)"),
        (lambda lengths, T, S: torch.arange(S)[None, None, :].expand(len(lengths), T, S) < 2, "differs"),
    ],
)
def test_cross_attention_mask_mistakes(fn, words, capsys):
    ok, out = verdict(ch09.check_cross_attention_mask, fn, capsys)
    assert not ok
    assert out.startswith("✗") and words in out, out


def test_cross_attention_mask_stub(capsys):
    ok, out = verdict(ch09.check_cross_attention_mask, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------ smoothed_targets
def smooth_right(target, vocab_size, eps):
    return (1 - eps) * F.one_hot(target, vocab_size).float() + eps / vocab_size


def smooth_scatter(target, vocab_size, eps):
    q = torch.full((len(target), vocab_size), eps / vocab_size, dtype=torch.float64)
    q[torch.arange(len(target)), target] += 1 - eps
    return q


def smooth_excluding_true(target, vocab_size, eps):
    q = torch.full((len(target), vocab_size), eps / (vocab_size - 1))
    q[torch.arange(len(target)), target] = 1 - eps
    return q


def smooth_others_only(target, vocab_size, eps):
    q = torch.full((len(target), vocab_size), eps / vocab_size)
    q[torch.arange(len(target)), target] = 1 - eps
    return q


def test_smoothed_targets_right(capsys):
    for fn in (smooth_right, smooth_scatter):
        ok, out = verdict(ch09.check_smoothed_targets, fn, capsys)
        assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (smooth_excluding_true, "left the true class out"),
        (smooth_others_only, "You gave it 1 - eps only"),
        (lambda t, V, eps: F.one_hot(t, V).float() + eps / V, "keeps 1 - eps, not 1"),
        (lambda t, V, eps: (1 - eps) * F.one_hot(t, V).float() + eps, "V shares add up to eps"),
        (lambda t, V, eps: (1 - eps) * F.one_hot(t, V).float(), "must be spread"),
        (lambda t, V, eps: eps * F.one_hot(t, V).float() + (1 - eps) / V, "swapped"),
        (lambda t, V, eps: F.one_hot(t, V).float(), "no smoothing"),
        (lambda t, V, eps: smooth_right(t, V, 0.1), "ignores the `eps`"),
        (lambda t, V, eps: smooth_right(t, V, eps).T, "transposed"),
        (lambda t, V, eps: F.one_hot(t, V), "float tensor"),
        (lambda t, V, eps: smooth_right(t, V, eps)[:, :-1], "expected (N, V)"),
        (lambda t, V, eps: smooth_right(t, V, eps).numpy(), "should return a torch.Tensor"),
        (lambda t, V, eps: smooth_right(t, V, eps) * 1.5, "not 1"),
        (lambda t, V, eps: smooth_right(t.roll(1), V, eps), "differ from the expected distribution"),
    ],
)
def test_smoothed_targets_mistakes(fn, words, capsys):
    ok, out = verdict(ch09.check_smoothed_targets, fn, capsys)
    assert not ok
    assert out.startswith("✗") and words in out, out


def test_smoothed_targets_stub(capsys):
    ok, out = verdict(ch09.check_smoothed_targets, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------------ beam_score
def score_right(log_prob, length, alpha=0.6):
    return log_prob / ((5 + length) / 6) ** alpha


def test_beam_score_right(capsys):
    ok, out = verdict(ch09.check_beam_score, score_right, capsys)
    assert ok and out.startswith("✓"), out
    # a 0-d tensor is a number too
    ok, out = verdict(ch09.check_beam_score, lambda lp, n, a=0.6: torch.tensor(score_right(lp, n, a)), capsys)
    assert ok, out


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda lp, n, a=0.6: lp * ((5 + n) / 6) ** a, "multiplied by the length penalty"),
        (lambda lp, n, a=0.6: ((5 + n) / 6) ** a, "returned the length penalty itself"),
        (lambda lp, n, a=0.6: lp / (5 + n) ** a, "Divide by 6 inside the power"),
        (lambda lp, n, a=0.6: lp / n**a, "adds 5 first"),
        (lambda lp, n, a=0.6: lp / n, "average log-probability per token"),
        (lambda lp, n, a=0.6: lp / ((5 + n) / 6), "ignores alpha"),
        (lambda lp, n, a=0.6: lp / (a * (5 + n) / 6), "divided by zero"),
        (lambda lp, n, a=0.6: lp / ((5 + n) / 6) ** (1 / a), "not 1/α"),
        (lambda lp, n, a=0.6: lp / ((5 + n) / 6) ** 0.6, "expected"),
        (lambda lp, n, a=0.6: None, "forget a `return`"),
        (lambda lp, n, a=0.6: [lp], "should return a number"),
    ],
)
def test_beam_score_mistakes(fn, words, capsys):
    ok, out = verdict(ch09.check_beam_score, fn, capsys)
    assert not ok
    assert out.startswith("✗") and words in out, out


def test_beam_score_stub(capsys):
    ok, out = verdict(ch09.check_beam_score, stub, capsys)
    assert not ok and "not attempted" in out


# ----------------------------------------------------------------------------------- exact_match
def cut_at_eos(row, eos_id):
    row = row.tolist()
    return row[: row.index(eos_id) + 1] if eos_id in row else row


def em_right(pred, target, eos_id=2, pad_id=0):
    right = [cut_at_eos(p, eos_id) == cut_at_eos(t, eos_id) for p, t in zip(pred, target, strict=True)]
    return sum(right) / len(right)


def em_tensor(pred, target, eos_id=2, pad_id=0):
    """A vectorised answer: pad to one width, blank everything after the first EOS, compare rows."""
    W = max(pred.shape[1], target.shape[1])
    pred = F.pad(pred, (0, W - pred.shape[1]), value=pad_id)
    target = F.pad(target, (0, W - target.shape[1]), value=pad_id)

    def after_eos(x):  # True strictly after the first EOS
        return (x == eos_id).long().cumsum(dim=1) - (x == eos_id).long() > 0

    pred = pred.masked_fill(after_eos(pred), pad_id)
    target = target.masked_fill(after_eos(target), pad_id)
    return (pred == target).all(dim=1).float().mean()


def pad_both(pred, target, pad_id=0):
    W = max(pred.shape[1], target.shape[1])
    return F.pad(pred, (0, W - pred.shape[1]), value=pad_id), F.pad(target, (0, W - target.shape[1]), value=pad_id)


def em_whole_rows(pred, target, eos_id=2, pad_id=0):
    pred, target = pad_both(pred, target, pad_id)
    return (pred == target).all(dim=1).float().mean().item()


def em_raw_rows(pred, target, eos_id=2, pad_id=0):
    return (pred == target).all(dim=1).float().mean().item()


def em_tokens(pred, target, eos_id=2, pad_id=0):
    pred, target = pad_both(pred, target, pad_id)
    keep = target != pad_id
    return ((pred == target) & keep).sum().item() / keep.sum().item()


def em_no_eos(pred, target, eos_id=2, pad_id=0):
    """Compares the digits of the target only, ignoring the EOS."""
    right = []
    for p, t in zip(pred.tolist(), target.tolist(), strict=True):
        digits = [x for x in t if x not in (eos_id, pad_id)]
        right.append(p[: len(digits)] == digits)
    return sum(right) / len(right)


def em_prefix(pred, target, eos_id=2, pad_id=0):
    """Compares up to the prediction's EOS only."""
    right = []
    for p, t in zip(pred, target, strict=True):
        p = cut_at_eos(p, eos_id)[:-1]
        right.append(p == t.tolist()[: len(p)])
    return sum(right) / len(right)


def em_skips_first_row(pred, target, eos_id=2, pad_id=0):
    return em_right(pred[1:], target[1:]) if len(pred) > 1 else em_right(pred, target)


def em_wrong_digit_ok(pred, target, eos_id=2, pad_id=0):
    """Right, except that it only compares the first and the last token before EOS."""
    right = []
    for p, t in zip(pred, target, strict=True):
        p, t = cut_at_eos(p, eos_id), cut_at_eos(t, eos_id)
        right.append(len(p) == len(t) and p[1] == t[1] and p[-2:] == t[-2:])
    return sum(right) / len(right)


def em_count(pred, target, eos_id=2, pad_id=0):
    return em_right(pred, target, eos_id, pad_id) * len(pred)


def test_exact_match_right(capsys):
    for fn in (em_right, em_tensor):
        ok, out = verdict(ch09.check_exact_match, fn, capsys)
        assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (em_whole_rows, "other tokens after it"),
        (em_raw_rows, "different widths"),
        (em_tokens, "token accuracy"),
        (em_no_eos, "goes on after the target's last token"),
        (em_prefix, "stops early"),
        (em_count, "a count"),
        (em_wrong_digit_ok, "wrong digit"),
        (lambda pred, target, eos_id=2, pad_id=0: 1.0, "goes on after"),
        (lambda pred, target, eos_id=2, pad_id=0: 0.0, "identical to its target"),
        (em_skips_first_row, "so the answer is"),
        (lambda pred, target, eos_id=2, pad_id=0: "all right", "should return a number"),
    ],
)
def test_exact_match_mistakes(fn, words, capsys):
    ok, out = verdict(ch09.check_exact_match, fn, capsys)
    assert not ok
    assert out.startswith("✗") and words in out, out


def test_exact_match_stub(capsys):
    ok, out = verdict(ch09.check_exact_match, stub, capsys)
    assert not ok and "not attempted" in out


def test_checks_leave_the_readers_random_state_alone(capsys):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ch09.check_smoothed_targets(smooth_right)
    ch09.check_cross_attention_mask(mask_right)
    capsys.readouterr()
    assert torch.equal(torch.rand(3), expected)


# -------------------------------------------------------------------- half_exact_length (experiment)
def test_half_exact_length_accepts_the_measured_range(capsys):
    for found in (13, *ch09.HALF_EXACT_LENGTH):
        ok, out = verdict(ch09.check_half_exact_length, lambda found=found: found, capsys)
        assert ok is True, out
        assert out.startswith("✓ half_exact_length")


@pytest.mark.parametrize(
    ("answer", "message", "hint"),
    [(12, "is too low", "still translates most"), (17, "is too high", "step through the lengths")],
)
def test_half_exact_length_explains_a_wrong_answer(answer, message, hint, capsys):
    ok, out = verdict(ch09.check_half_exact_length, lambda: answer, capsys)
    assert ok is False
    assert out.startswith("✗ half_exact_length")
    assert message in out and hint in out, out
    assert "give 13 tokens" in out


def test_half_exact_length_not_attempted(capsys):
    ok, out = verdict(ch09.check_half_exact_length, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out
