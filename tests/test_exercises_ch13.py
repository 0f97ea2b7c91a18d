"""The chapter 13 exercise checks: a right answer passes, each usual mistake gets its own hint."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attention_book.exercises import ch13
from transformer_core.encoder_only import mask_tokens


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------------------ bert_mask
def mask_right(idx, mask_id, vocab_size, special_ids, generator):
    return mask_tokens(idx, mask_id, vocab_size, special_ids, generator=generator)


def mask_variant(mask_frac=0.8, random_frac=0.1, label="original", specials_ok=False, random_from_all=False,
                 prob=0.15, use_generator=True, in_place=False, only_masked_labelled=False):
    """A hand-written masker with one knob per usual mistake."""

    def f(idx, mask_id, vocab_size, special_ids, generator):
        g = generator if use_generator else None
        special = torch.isin(idx, torch.tensor(list(special_ids)))
        chosen = torch.rand(idx.shape, generator=g) < prob
        if not specials_ok:
            chosen &= ~special
        decide = torch.rand(idx.shape, generator=g)
        pool = torch.arange(vocab_size) if random_from_all else torch.tensor(
            [i for i in range(vocab_size) if i not in special_ids])
        rand = pool[torch.randint(len(pool), idx.shape, generator=g)]
        to_mask = chosen & (decide < mask_frac)
        to_rand = chosen & (decide >= mask_frac) & (decide < mask_frac + random_frac)
        inputs = idx if in_place else idx.clone()
        inputs[to_mask] = mask_id
        inputs[to_rand] = rand[to_rand]
        labelled = to_mask if only_masked_labelled else chosen
        if label == "everywhere":
            labels = idx.clone()
        elif label == "input":
            labels = inputs.masked_fill(~labelled, -100)
        else:
            labels = idx.masked_fill(~labelled, -100)
        return inputs, labels

    return f


def test_bert_mask_right(capsys):
    ok, out = verdict(ch13.check_bert_mask, mask_right, capsys)
    assert ok and out.startswith("✓"), out


def test_bert_mask_by_hand(capsys):
    ok, out = verdict(ch13.check_bert_mask, mask_variant(), capsys)
    assert ok, out


@pytest.mark.parametrize(
    "fn, words",
    [
        (mask_variant(label="everywhere"), "every label is a token id"),
        (mask_variant(specials_ok=True), "special tokens were chosen"),
        (mask_variant(label="input"), "labels hold the [MASK] id"),
        (mask_variant(only_masked_labelled=True), "labelled only the [MASK]ed ones"),
        (mask_variant(prob=0.3), "BERT chooses 15%"),
        (mask_variant(mask_frac=1.0, random_frac=0.0), "every chosen token became [MASK]"),
        (mask_variant(mask_frac=0.6, random_frac=0.2), "80% / 10% / 10%"),
        (mask_variant(random_from_all=True, mask_frac=0.0, random_frac=1.0), "80% / 10% / 10%"),
        (mask_variant(use_generator=False), "draw every random number from `generator`"),
        (mask_variant(in_place=True), "in place"),
        (lambda *a: None, "two tensors"),
        (lambda idx, *a: (idx.float(), idx), "integers"),
        (lambda idx, *a: (idx[:, :5], idx), "shape"),
    ],
)
def test_bert_mask_mistakes(fn, words, capsys):
    ok, out = verdict(ch13.check_bert_mask, fn, capsys)
    assert not ok
    assert out.startswith("✗") and words in out, out


def test_bert_mask_random_specials(capsys):
    # the 80/10/10 split is right, but the random tokens come from the whole vocabulary: with 5 specials in
    # 50 ids, about 1 in 10 random replacements is a special token
    ok, out = verdict(ch13.check_bert_mask, mask_variant(random_from_all=True), capsys)
    assert not ok and "random replacements are special" in out, out


def test_bert_mask_stub(capsys):
    ok, out = verdict(ch13.check_bert_mask, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------------ masked_lm_loss
def loss_right(logits, labels):
    if (labels == -100).all():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def test_masked_lm_loss_right(capsys):
    ok, out = verdict(ch13.check_masked_lm_loss, loss_right, capsys)
    assert ok and out.startswith("✓"), out


def test_masked_lm_loss_by_hand(capsys):
    def by_hand(logits, labels):
        keep = labels != -100
        if not keep.any():
            return logits.new_zeros(())
        logp = logits.log_softmax(-1)[keep]  # (N, V)
        return -logp.gather(1, labels[keep][:, None]).mean()

    ok, out = verdict(ch13.check_masked_lm_loss, by_hand, capsys)
    assert ok, out


def per_token(logits, labels):
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="none")


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda lg, lb: per_token(lg, lb).sum() / lb.numel(), "divided by every position"),
        (lambda lg, lb: per_token(lg, lb).sum(), "that is the sum"),
        (lambda lg, lb: F.cross_entropy(lg.flatten(0, 1), lb.clamp(min=0).flatten()), "turned the -100 labels"),
        (lambda lg, lb: F.cross_entropy(lg.flatten(0, 1), lb.flatten(), ignore_index=-100), "empty mean is NaN"),
        (lambda lg, lb: per_token(lg, lb), "one number"),
        (lambda lg, lb: None, "forget the `return`"),
        (lambda lg, lb: 1.5, "return a tensor"),
        (lambda lg, lb: torch.tensor(0.123), "expected"),
    ],
)
def test_masked_lm_loss_mistakes(fn, words, capsys):
    ok, out = verdict(ch13.check_masked_lm_loss, fn, capsys)
    assert not ok
    assert out.startswith("✗") and words in out, out


def test_masked_lm_loss_probabilities(capsys):
    def probs(logits, labels):
        keep = labels != -100
        return -logits.softmax(-1)[keep].gather(1, labels[keep][:, None]).mean()

    ok, out = verdict(ch13.check_masked_lm_loss, probs, capsys)
    assert not ok and "log" in out, out


# ------------------------------------------------------------------------------------ pseudo-log-likelihood
def pll_variant(mask=True, specials=False, reduce="sum", all_at_once=False, probs=False):
    @torch.no_grad()
    def f(model, ids, mask_id, special_ids):
        t = torch.as_tensor(ids)
        positions = [i for i in range(len(t)) if specials or int(t[i]) not in special_ids]
        if all_at_once:
            m = t.clone()
            m[positions] = mask_id
            logp = model(m[None]).log_softmax(-1)[0]
            return float(logp[positions, t[positions]].sum())
        scores = []
        for i in positions:
            m = t.clone()
            if mask:
                m[i] = mask_id
            lp = float(model(m[None]).log_softmax(-1)[0, i, t[i]])
            scores.append(math.exp(lp) if probs else lp)
        if reduce == "sum":
            return sum(scores)
        if reduce == "mean":
            return sum(scores) / len(scores)
        return math.prod(scores)

    return f


def test_pll_right(capsys):
    ok, out = verdict(ch13.check_pseudo_log_likelihood, pll_variant(), capsys)
    assert ok and out.startswith("✓"), out


def test_pll_reference_returns_a_tensor_too(capsys):
    ok, out = verdict(ch13.check_pseudo_log_likelihood,
                      lambda *a: torch.tensor(ch13.pseudo_log_likelihood(*a)), capsys)
    assert ok, out


@pytest.mark.parametrize(
    "fn, words",
    [
        (pll_variant(mask=False), "without masking"),
        (pll_variant(all_at_once=True), "masked every word at once"),
        (pll_variant(reduce="mean"), "mean over the words"),
        (pll_variant(specials=True), "[CLS] and [SEP]"),
        (pll_variant(probs=True), "added probabilities"),
        (pll_variant(probs=True, reduce="prod"), "multiplied probabilities"),
        (lambda *a: None, "forget the `return`"),
        (lambda *a: "high", "return a number"),
        (lambda *a: torch.zeros(3), "one number"),
        (lambda *a: -1.0, "expected"),
    ],
)
def test_pll_mistakes(fn, words, capsys):
    ok, out = verdict(ch13.check_pseudo_log_likelihood, fn, capsys)
    assert not ok
    assert out.startswith("✗") and words in out, out


def test_checks_leave_the_random_state_alone(capsys):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ch13.check_bert_mask(mask_right)
    ch13.check_pseudo_log_likelihood(pll_variant())
    assert torch.equal(torch.rand(3), expected)
    capsys.readouterr()


# ------------------------------------------------------------------ right_tokens_needed (experiment)
def test_right_tokens_needed_accepts_the_measured_range(capsys):
    for found in (4, *ch13.RIGHT_TOKENS_NEEDED):
        ok, out = verdict(ch13.check_right_tokens_needed, lambda found=found: found, capsys)
        assert ok is True, out
        assert out.startswith("✓ right_tokens_needed")


@pytest.mark.parametrize(
    ("answer", "message", "hint"),
    [(1, "is too low", "toks[hole + 1 :][:k]"), (12, "is too high", "not 100% of it")],
)
def test_right_tokens_needed_explains_a_wrong_answer(answer, message, hint, capsys):
    ok, out = verdict(ch13.check_right_tokens_needed, lambda: answer, capsys)
    assert ok is False
    assert out.startswith("✗ right_tokens_needed")
    assert message in out and hint in out, out
    assert "3 to 5 tokens" in out


def test_right_tokens_needed_not_attempted(capsys):
    ok, out = verdict(ch13.check_right_tokens_needed, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out
