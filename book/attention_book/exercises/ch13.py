"""Auto-checks for chapter 13, *Encoder-only models*.

Each check runs the reader's function on small inputs and compares it with the package's answer
(:mod:`transformer_core.encoder_only`). Masking is random, so its check measures statistics over many
tokens (with seeded generators) and names the usual slips: labels everywhere instead of -100, the
``[MASK]`` id as a label, special tokens chosen, every chosen token turned into ``[MASK]``, random
replacements drawn from the special tokens, randomness that ignores the generator. The loss check
recognises a mean over every position, a sum, and a loss that forgets to skip -100; the
pseudo-log-likelihood check recognises a score computed without masking, a mean, probabilities
instead of log-probabilities, and scored special tokens. The checks use their own random numbers
(``torch.random.fork_rng``): running one does not change the reader's random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from transformer_core.encoder_only import BERT, IGNORE_INDEX, BERTConfig, mlm_loss

from ._checker import Feedback
from ._checker import run_seeded_check as _check
from ._measured import check_measured

__all__ = [
    "check_bert_mask",
    "check_masked_lm_loss",
    "check_pseudo_log_likelihood",
    "pseudo_log_likelihood",
    "check_right_tokens_needed",
]


def _pair(out: object, what: str, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise Feedback(f"{what} should return two tensors, (inputs, labels); got {type(out).__name__}. "
                       "Did you forget `return inputs, labels`?")
    for name, t in zip(("inputs", "labels"), out, strict=True):
        if not isinstance(t, Tensor):
            raise Feedback(f"{name} should be a torch.Tensor, got {type(t).__name__}.")
        if tuple(t.shape) != shape:
            raise Feedback(f"{name} has shape {tuple(t.shape)}, expected the input's {shape}.")
        if t.is_floating_point() or t.dtype == torch.bool:
            raise Feedback(f"{name} holds {t.dtype} values; token ids and labels are integers (torch.long).")
    return out[0], out[1]


# ------------------------------------------------------------------------------------------ masking
V, MASK = 50, 4
SPECIALS = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]


def _mask_input() -> Tensor:
    """(200, 60) ids: [CLS] words [SEP], then padding in every fourth row; 12,000 positions."""
    g = torch.Generator().manual_seed(21)
    x = torch.randint(5, V, (200, 60), generator=g)
    x[:, 0] = 2
    x[:, -1] = 3
    x[::4, 40:] = 0
    return x


def check_bert_mask(bert_mask: Callable[..., tuple[Tensor, Tensor]]) -> bool:
    """Check ``bert_mask(idx, mask_id, vocab_size, special_ids, generator)``: BERT's 15% with 80/10/10."""

    def body() -> None:
        x = _mask_input()
        before = x.clone()
        out = bert_mask(x, MASK, V, SPECIALS, torch.Generator().manual_seed(0))
        inputs, labels = _pair(out, "bert_mask", tuple(x.shape))
        if not torch.equal(x, before):
            raise Feedback("bert_mask changed idx in place; work on a copy (idx.clone()) and return new tensors.")
        special = torch.isin(x, torch.tensor(SPECIALS))
        if (labels != IGNORE_INDEX).all():
            raise Feedback(
                "every label is a token id. Only the chosen positions get a label (their original token); all "
                f"the others must be {IGNORE_INDEX}, which the loss skips."
            )
        chosen = labels != IGNORE_INDEX
        if (chosen & special).any():
            raise Feedback(
                "special tokens were chosen ([CLS], [SEP], [PAD], ...). Choose among the ordinary tokens only: "
                "torch.isin(idx, torch.tensor(special_ids)) marks the ones to leave alone."
            )
        if (labels[chosen] == MASK).mean(dtype=torch.float32) > 0.5:
            raise Feedback(
                "your labels hold the [MASK] id. A label is the token the model must recover: the original "
                "idx at that position, not what the input shows now."
            )
        if not torch.equal(labels[chosen], x[chosen]):
            raise Feedback("at a chosen position the label must be the original token, idx[b, t].")
        share = float(chosen.sum() / (~special).sum())
        if abs(share - 0.15 * 0.8) < 0.012:
            raise Feedback(
                f"{share:.1%} of the tokens are labelled: you labelled only the [MASK]ed ones. The 10% replaced "
                "by a random token and the 10% left unchanged are chosen too, and the model must predict them."
            )
        if abs(share - 0.15) > 0.012:
            raise Feedback(f"{share:.1%} of the ordinary tokens were chosen; BERT chooses 15% of them.")
        if not torch.equal(inputs[~chosen], x[~chosen]):
            raise Feedback("positions that were not chosen must keep their token in the inputs.")
        n = int(chosen.sum())
        masked = chosen & (inputs == MASK)
        kept = chosen & (inputs == x)
        replaced = chosen & ~masked & ~kept
        f_mask, f_rand, f_kept = (float(m.sum()) / n for m in (masked, replaced, kept))
        if f_mask > 0.97:
            raise Feedback(
                "every chosen token became [MASK]. BERT's recipe: 80% [MASK], 10% a random token, 10% left as "
                "it is, so that the model also learns good vectors for tokens that are not [MASK]."
            )
        if abs(f_mask - 0.8) > 0.03 or abs(f_rand - 0.1) > 0.025 or abs(f_kept - 0.1) > 0.025:
            raise Feedback(
                f"of the chosen tokens {f_mask:.0%} became [MASK], {f_rand:.0%} a random token and {f_kept:.0%} "
                "stayed unchanged; BERT's split is 80% / 10% / 10%. One uniform number per position, compared "
                "with 0.8 and 0.9, decides which of the three happens."
            )
        if torch.isin(inputs[replaced], torch.tensor(SPECIALS)).any():
            raise Feedback(
                "some random replacements are special tokens ([PAD], [CLS], [MASK], ...). Draw them from the "
                "ordinary tokens only."
            )
        again = _pair(bert_mask(x, MASK, V, SPECIALS, torch.Generator().manual_seed(0)), "bert_mask", tuple(x.shape))
        if not (torch.equal(again[0], inputs) and torch.equal(again[1], labels)):
            raise Feedback(
                "two calls with generators seeded alike gave different results: draw every random number from "
                "`generator` (torch.rand(..., generator=generator), torch.randint(..., generator=generator))."
            )
        other = _pair(bert_mask(x, MASK, V, SPECIALS, torch.Generator().manual_seed(1)), "bert_mask", tuple(x.shape))
        if torch.equal(other[1], labels):
            raise Feedback("a differently seeded generator chose the same positions: use `generator` for the draws.")

    return _check("bert_mask", body)


# ------------------------------------------------------------------------------------------ the loss
def check_masked_lm_loss(masked_lm_loss: Callable[[Tensor, Tensor], Tensor]) -> bool:
    """Check ``masked_lm_loss(logits, labels)`` against :func:`transformer_core.encoder_only.mlm_loss`."""

    def body() -> None:
        g = torch.Generator().manual_seed(31)
        B, T, Vl = 3, 7, 11
        logits = 2 * torch.randn(B, T, Vl, generator=g)
        labels = torch.full((B, T), IGNORE_INDEX)
        pick = torch.rand(B, T, generator=g) < 0.3
        pick[0, 0] = True
        labels[pick] = torch.randint(Vl, (int(pick.sum()),), generator=g)
        out = masked_lm_loss(logits, labels)
        if out is None:
            raise Feedback("masked_lm_loss returned None: did you forget the `return`?")
        if not isinstance(out, Tensor):
            raise Feedback(f"return a tensor (a 0-d loss that can be back-propagated), got {type(out).__name__}.")
        if out.numel() != 1:
            raise Feedback(f"return one number, the mean over the labelled positions; got shape {tuple(out.shape)}.")
        got = float(out)
        want = float(mlm_loss(logits, labels))
        if math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6):
            empty = masked_lm_loss(logits, torch.full((B, T), IGNORE_INDEX))
            if not isinstance(empty, Tensor) or not torch.isfinite(empty).all() or float(empty) != 0.0:
                raise Feedback(
                    "right on a normal batch, but a batch where no position is labelled gave "
                    f"{float(empty) if isinstance(empty, Tensor) else empty}: an empty mean is NaN. Return 0 "
                    "then (e.g. logits.sum() * 0.0, which keeps the graph), so one unlucky batch does not "
                    "poison training."
                )
            return
        per_token = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                                    reduction="none")
        n = int(pick.sum())
        diagnoses = [
            (float(per_token.sum()) / (B * T),
             "you divided by every position. The mean runs over the labelled positions only: ignore_index=-100 "
             "in F.cross_entropy does both (skips them in the sum and in the count)."),
            (float(per_token.sum()),
             "that is the sum over the labelled positions; take their mean (divide by how many there are)."),
            (float(F.cross_entropy(logits.flatten(0, 1), labels.clamp(min=0).flatten())),
             "you turned the -100 labels into real ids (token 0) and scored them; positions labelled -100 must "
             "not count at all: ignore_index=-100."),
            (-float((logits.softmax(-1).flatten(0, 1)[pick.flatten()]
                     .gather(1, labels[pick][:, None])).mean()),
             "you averaged probabilities; cross-entropy averages minus the *log* probabilities (log_softmax)."),
        ]
        for candidate, message in diagnoses:
            if math.isclose(got, candidate, rel_tol=1e-4):
                raise Feedback(message)
        raise Feedback(
            f"expected {want:.4f} (the mean cross-entropy over the {n} labelled positions), got {got:.4f}. "
            "Flatten logits to (B*T, V) and labels to (B*T,), then F.cross_entropy(..., ignore_index=-100)."
        )

    return _check("masked_lm_loss", body)


# ------------------------------------------------------------------------------------------ pseudo-log-likelihood
@torch.no_grad()
def pseudo_log_likelihood(model: torch.nn.Module, ids: list[int] | Tensor, mask_id: int, special_ids) -> float:
    """Σ over the non-special positions i of log p(ids[i] | ids with position i masked): one masked copy each."""
    ids = torch.as_tensor(ids, dtype=torch.long)  # (T,)
    positions = [i for i in range(len(ids)) if int(ids[i]) not in set(special_ids)]
    batch = ids.repeat(len(positions), 1)  # (P, T): one copy per scored position
    rows = torch.arange(len(positions))
    batch[rows, positions] = mask_id
    was_training = model.training
    model.eval()
    try:
        logp = model(batch).log_softmax(-1)  # (P, T, V)
    finally:
        model.train(was_training)
    return float(logp[rows, positions, ids[positions]].sum())


def check_pseudo_log_likelihood(pll: Callable[..., float]) -> bool:
    """Check ``pseudo_log_likelihood(model, ids, mask_id, special_ids)`` on a small seeded BERT."""

    def body() -> None:
        torch.manual_seed(5)
        model = BERT(BERTConfig(vocab_size=V, context_length=16, n_layer=1, n_head=2, d_model=16, pad_id=0))
        with torch.no_grad():  # larger weights than BERT's init, so that the model's guesses differ by position
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0.0, 0.3)
        model.eval()
        ids = [2, 17, 8, 33, 8, 41, 3]  # [CLS] five words [SEP]
        got = pll(model, ids, MASK, SPECIALS)
        if got is None:
            raise Feedback("pseudo_log_likelihood returned None: did you forget the `return`?")
        if isinstance(got, Tensor):
            if got.numel() != 1:
                raise Feedback(f"return one number (the sum over positions), got a tensor of shape {tuple(got.shape)}.")
            got = float(got)
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            raise Feedback(f"return a number, got {type(got).__name__}.")
        want = pseudo_log_likelihood(model, ids, MASK, SPECIALS)
        if math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-5):
            return
        t = torch.tensor(ids)
        words = [i for i in range(len(ids)) if ids[i] not in SPECIALS]
        with torch.no_grad():
            unmasked = model(t[None]).log_softmax(-1)[0]  # (T, V)
            all_masked = t.clone()
            all_masked[words] = MASK
            joint = model(all_masked[None]).log_softmax(-1)[0]
            every = []
            for i in range(len(ids)):
                m = t.clone()
                m[i] = MASK
                every.append(float(model(m[None]).log_softmax(-1)[0, i, ids[i]]))
        per_word = []
        for i in words:
            m = t.clone()
            m[i] = MASK
            with torch.no_grad():
                per_word.append(float(model(m[None]).log_softmax(-1)[0, i, ids[i]]))
        diagnoses = [
            (float(unmasked[words, t[words]].sum()),
             "you scored each word without masking it: the model then sees the word it is asked for. Mask "
             "position i (and only it) in a copy of ids, then read log p(ids[i]) at position i."),
            (float(joint[words, t[words]].sum()),
             "you masked every word at once. The pseudo-log-likelihood masks one position per copy, so each word "
             "is predicted from all the others."),
            (want / len(words), "that is the mean over the words; the pseudo-log-likelihood is their sum."),
            (sum(every), "you also scored [CLS] and [SEP]; skip the special tokens, score only the words."),
            (sum(math.exp(v) for v in per_word),
             "you added probabilities. Add log-probabilities (log_softmax), so that the sum is the log of a "
             "product."),
            (math.prod(math.exp(v) for v in per_word),
             "you multiplied probabilities; return the sum of their logs (it does not underflow)."),
        ]
        for candidate, message in diagnoses:
            if math.isclose(got, candidate, rel_tol=1e-4, abs_tol=1e-6):
                raise Feedback(message)
        raise Feedback(
            f"expected {want:.4f}, got {got:.4f}. For each word position i: a copy of ids with position i set to "
            "mask_id, the model's log_softmax at position i, the entry of the original token; add them up."
        )

    return _check("pseudo_log_likelihood", body)


# --------------------------------------------------------------------------------------------------
# Exercise 4 (an experiment): how much of the right side does BERT need?
# --------------------------------------------------------------------------------------------------

# Measured with `python scripts/experiment_ranges.py ch13`: the chapter's trained BERT (section 5:
# float64, 600 steps, seed 0) on section 6's held-out holes (one hidden word per sentence of the
# last 300 stories, 1,340 holes), the story up to the hole, [MASK], then k tokens. The seed draws
# which word of each sentence is hidden (seed 0: the chapter's cases). The fewest k reaching 90% of
# the both-sides top-1 share was 4, 4 and 4 for seeds 0, 1, 2 (both sides 34.0%, 33.9%, 35.8%;
# at k = 3 the seeds reached 86-89% of it, and 100% of it no k up to 8 reaches). Accepted: that
# widened by 1 on each side, the step of the reader's scan.
RIGHT_TOKENS_NEEDED = (3, 5)


def check_right_tokens_needed(right_tokens_needed: Callable[[], object]) -> bool:
    """The reader's ``right_tokens_needed()`` returns the number of tokens they found."""
    low, high = RIGHT_TOKENS_NEEDED
    return check_measured(
        "right_tokens_needed",
        right_tokens_needed,
        low,
        high,
        unit=" tokens",
        too_low=(
            "With that few tokens after the hole the top-1 share is still short of 90% of the "
            "both-sides share. Do your inputs stop k tokens after the [MASK] (toks[hole + 1 :][:k]), "
            "and is the hole's position in the logits shifted by one for [CLS]?"
        ),
        too_high=(
            "Fewer tokens after the hole already reach 90% of the both-sides top-1 share: try the "
            "smaller k in turn. Is the target 0.9 times results['BERT, both sides'][0] (the top-1 "
            "share, not top-5 or grammatical, and not 100% of it)?"
        ),
    )
