"""Auto-checks for chapter 08, *Generation*.

One check per exercise. Each runs the reader's function on small logits built so that the usual
mistakes show (a temperature that multiplies, a top-k that keeps one token too many or too few, a
nucleus that leaves out the token that crosses p, a cache that forgets the values), names the
mistake when it recognises one, and otherwise shows where the answer differs from the right one.

==================================================  ===================================
exercise                                            check
==================================================  ===================================
1. ``temperature_probs(logits, temperature)``       :func:`check_temperature_probs`
2. ``top_k_filter(logits, k)``                      :func:`check_top_k_filter`
3. ``top_p_filter(logits, p)``                      :func:`check_top_p_filter`
4. ``kv_cache_bytes(n_layer, d_model, ...)``        :func:`check_kv_cache_bytes`
==================================================  ===================================
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from transformer_core.sampling import filter_top_k, filter_top_p

from ._checker import Feedback, need_number, run_check
from ._measured import check_measured

__all__ = [
    "check_temperature_probs",
    "check_top_k_filter",
    "check_top_p_filter",
    "check_kv_cache_bytes",
    "check_hottest_grammatical_temperature",
    "kv_cache_bytes",
]


def _fmt(values: Tensor) -> str:
    """A short, rounded rendering of a small tensor for a feedback message."""
    flat = [f"{float(v):.3g}" for v in values.flatten()[:8]]
    more = ", ..." if values.numel() > 8 else ""
    return "[" + ", ".join(flat) + more + "]"


def _call(fn: Callable, logits: Tensor, *args, what: str) -> Tensor:
    given = logits.clone()
    out = fn(logits, *args)
    if not torch.equal(logits, given):
        raise Feedback(
            f"{what} changed the logits it was given (an in-place operation such as /= or "
            "masked_fill_); compute a new tensor instead, the caller may still need the logits"
        )
    if out is None:
        raise Feedback(f"{what} returned None: did you forget the `return`?")
    if not isinstance(out, Tensor):
        raise Feedback(f"{what} should return a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(logits.shape):
        raise Feedback(
            f"{what} returned shape {tuple(out.shape)}; it should keep the shape of the logits, "
            f"{tuple(logits.shape)}"
        )
    return out


def _sums_to_one(out: Tensor) -> bool:
    finite = torch.nan_to_num(out.double(), nan=0.0, posinf=0.0, neginf=0.0)
    return bool(((finite.sum(dim=-1) - 1).abs() < 1e-4).all()) and bool((out >= 0).all())


# --------------------------------------------------------------------------------------------------
# Exercise 1: temperature
# --------------------------------------------------------------------------------------------------


def check_temperature_probs(temperature_probs: Callable) -> bool:
    """Exercise 1: ``temperature_probs(logits, T)`` is ``softmax(logits / T)`` over the last axis."""

    def body() -> None:
        logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.5, 0.5, 3.0, 1.0], [0.0, -2.0, 1.0, 4.0]])
        for T in (2.0, 0.5, 1.0):
            expected = torch.softmax(logits.double() / T, dim=-1)
            out = _call(temperature_probs, logits, T, what="temperature_probs")
            if not torch.isfinite(out).all():
                raise Feedback(f"at temperature {T} your result holds NaN or inf: {_fmt(out[0])}")
            if torch.allclose(out.double(), expected, atol=1e-5):
                continue
            scaled_up = torch.softmax(logits.double() * T, dim=-1)
            plain = torch.softmax(logits.double(), dim=-1)
            if torch.allclose(out.double(), scaled_up, atol=1e-5):
                raise Feedback(
                    f"you multiplied the logits by the temperature; divide them. At T = {T} the "
                    f"distribution should get {'flatter' if T > 1 else 'sharper'}, and yours got "
                    f"{'sharper' if T > 1 else 'flatter'}"
                )
            if torch.allclose(out.double(), plain / T, atol=1e-5):
                raise Feedback(
                    "you divided the probabilities by T, after the softmax: the rows no longer "
                    "sum to 1. Divide the logits, before the softmax"
                )
            if torch.allclose(out.double(), logits.double() / T, atol=1e-5):
                raise Feedback(
                    "you returned the scaled logits; return probabilities: the softmax of "
                    "logits / T (each row sums to 1)"
                )
            if torch.allclose(out.double(), plain, atol=1e-5):
                raise Feedback(
                    f"at T = {T} you returned softmax(logits), as if T were 1. Adding or "
                    "subtracting T shifts every logit equally and changes nothing: divide by it"
                )
            if torch.allclose(out.double(), torch.softmax(logits.double() / T, dim=0), atol=1e-5):
                raise Feedback(
                    "your columns sum to 1, not your rows: take the softmax over the last axis "
                    "(dim=-1), the vocabulary"
                )
            if not _sums_to_one(out):
                raise Feedback(
                    f"the rows of your result do not sum to 1 (row 0 sums to "
                    f"{float(out[0].double().sum()):.4g}): return softmax(logits / T, dim=-1)"
                )
            raise Feedback(
                f"at T = {T}, row 0 should be {_fmt(expected[0])}, got {_fmt(out[0])}: "
                "softmax(logits / T)"
            )
        # large logits: a hand-made exp overflows
        big = torch.tensor([[1000.0, 999.0, 990.0]])
        out = _call(temperature_probs, big, 0.5, what="temperature_probs")
        if not torch.isfinite(out).all():
            raise Feedback(
                "for large logits ([1000, 999, 990] at T = 0.5) your result overflows: use "
                "torch.softmax, which subtracts the maximum first"
            )

    return run_check("temperature_probs", body)


# --------------------------------------------------------------------------------------------------
# Exercise 2: top-k
# --------------------------------------------------------------------------------------------------


def _kept(out: Tensor) -> Tensor:
    return ~torch.isneginf(out)


def _check_dropped_are_neg_inf(out: Tensor, logits: Tensor, expected_keep: Tensor, what: str) -> None:
    """Common diagnosis: probabilities returned, 0 instead of -inf, values changed."""
    if _sums_to_one(out) and torch.isfinite(out).all() and not _sums_to_one(logits):
        raise Feedback(
            f"{what} returned probabilities; return logits: the kept ones unchanged, the others "
            "-inf (sampling applies the softmax afterwards)"
        )
    if torch.isnan(out).any():
        raise Feedback(f"{what} returned NaN: {_fmt(out[0])}")
    dropped = ~expected_keep
    # removed (changed) but not to -inf; a token left as it was is a different mistake
    if dropped.any() and torch.isfinite(out[dropped]).all() and not torch.equal(out[dropped], logits[dropped]):
        values = sorted({float(v) for v in out[dropped].flatten()})[:3]
        raise Feedback(
            f"the tokens you removed have the logit {values[0]:g}, not -inf: a finite logit still "
            f"has a probability (exp({values[0]:g}) is not 0), so they can still be sampled. Set "
            "them to float('-inf')"
        )


def check_top_k_filter(top_k_filter: Callable) -> bool:
    """Exercise 2: ``top_k_filter(logits, k)`` keeps the k largest logits of each row, the others
    become -inf."""

    def body() -> None:
        logits = torch.tensor(
            [[1.0, 3.0, 0.5, 2.0, -1.0, 2.5], [0.1, -0.2, 0.3, 0.0, 0.25, -1.0]]
        )  # the two rows' values never meet, so a top-k over the whole batch shows
        k = 3
        expected = filter_top_k(logits, k)
        expected_keep = _kept(expected)
        out = _call(top_k_filter, logits, k, what="top_k_filter")
        _check_dropped_are_neg_inf(out, logits, expected_keep, "top_k_filter")
        n_kept = _kept(out).sum(dim=-1)
        if bool((n_kept == 0).any()) and bool((n_kept > 0).any()):
            raise Feedback(
                f"row 1 kept {int(n_kept[1])} token(s) and row 0 {int(n_kept[0])}: top-k is per "
                "row (dim=-1), each row keeps its own k largest logits. Did you pick the k largest "
                "of the whole batch?"
            )
        if bool((n_kept == k - 1).all()):
            raise Feedback(
                f"you kept k - 1 = {k - 1} tokens per row, not k = {k}: the k-th largest logit "
                "itself must stay. Did you drop the logits <= the k-th largest? Drop only those "
                "strictly below it (<)"
            )
        if bool((n_kept == k + 1).all()):
            raise Feedback(
                f"you kept k + 1 = {k + 1} tokens per row (off by one): the threshold is the k-th "
                "largest logit, torch.topk(logits, k).values[..., -1:], not the (k + 1)-th"
            )
        if not torch.equal(_kept(out), expected_keep):
            row = int((_kept(out) != expected_keep).any(dim=-1).nonzero()[0, 0])
            raise Feedback(
                f"row {row} ({_fmt(logits[row])}) should keep the {k} largest, "
                f"{_fmt(logits[row][expected_keep[row]])}; you kept {_fmt(logits[row][_kept(out)[row]])}"
            )
        if not torch.equal(out[expected_keep], logits[expected_keep]):
            raise Feedback(
                "the kept logits changed: leave them as they are and only set the others to -inf"
            )
        # k = 1 is greedy; k = V keeps everything
        for kk in (1, logits.shape[-1]):
            got = _kept(_call(top_k_filter, logits, kk, what="top_k_filter"))
            if not torch.equal(got, _kept(filter_top_k(logits, kk))):
                raise Feedback(
                    f"with k = {kk} each row should keep {kk} token(s), you kept "
                    f"{got.sum(dim=-1).tolist()}"
                )
        # ties at the border: keep every tied token (as transformer_core does) or exactly k
        tied = torch.tensor([[2.0, 1.0, 1.0, 0.0]])
        got = _kept(_call(top_k_filter, tied, 2, what="top_k_filter"))[0].tolist()
        if got not in ([True, True, True, False], [True, True, False, False], [True, False, True, False]):
            raise Feedback(
                f"for the logits [2, 1, 1, 0] and k = 2 you kept {got}: the 2 must stay, the 0 "
                "must go, and of the two tied 1s at least one stays"
            )

    return run_check("top_k_filter", body)


# --------------------------------------------------------------------------------------------------
# Exercise 3: top-p
# --------------------------------------------------------------------------------------------------


def _logits_of(probs: list[list[float]]) -> Tensor:
    return torch.tensor(probs).log()


def check_top_p_filter(top_p_filter: Callable) -> bool:
    """Exercise 3: ``top_p_filter(logits, p)`` keeps the smallest set of most likely tokens whose
    probabilities add up to at least p; the others become -inf."""

    def body() -> None:
        # row 0: sorted 0.5, 0.3, 0.15, 0.05 (cumulative 0.5, 0.8, 0.95, 1.0), not in sorted order;
        # in vocabulary order the cumulative sums are 0.15, 0.65, 0.7, 1.0: an unsorted sum shows
        # row 1: one token holds 0.9 > p on its own
        probs = [[0.15, 0.5, 0.05, 0.3], [0.05, 0.02, 0.9, 0.03]]
        logits = _logits_of(probs)
        p = 0.6
        expected = filter_top_p(logits, p)
        expected_keep = _kept(expected)
        out = _call(top_p_filter, logits, p, what="top_p_filter")
        _check_dropped_are_neg_inf(out, logits, expected_keep, "top_p_filter")
        got_keep = _kept(out)
        if not torch.equal(got_keep, expected_keep):
            sorted_order = torch.tensor([[1, 3, 0, 2], [2, 3, 0, 1]])
            # what a sorted-but-not-scattered answer looks like
            if not got_keep[1].any():
                raise Feedback(
                    "row 1 has no token left: its most likely token (probability 0.9) is more "
                    f"than p = {p} on its own. The nucleus is the smallest set whose total reaches "
                    "p, so it always holds the token that crosses p: keep a token when the mass "
                    "*before* it is still below p (cumsum - probs < p)"
                )
            if got_keep[0].tolist() == [False, True, False, False]:
                raise Feedback(
                    "row 0 (probabilities 0.15, 0.5, 0.05, 0.3) kept only the 0.5; with p = 0.6 "
                    "the nucleus is {0.5, 0.3}: 0.5 alone is less than p, so the token that "
                    "crosses p (0.3, cumulative 0.8) belongs to it. Keep a token when the mass "
                    "before it is below p, not when the mass up to and including it is"
                )
            if got_keep[0].tolist() == [True, True, False, True]:
                raise Feedback(
                    "row 0 (probabilities 0.15, 0.5, 0.05, 0.3) kept 0.5, 0.3 and 0.15; with "
                    "p = 0.6 the nucleus stops at the token that crosses p: {0.5, 0.3} already "
                    "holds 0.8"
                )
            unsorted_cum = torch.tensor(probs).cumsum(-1) - torch.tensor(probs)
            if torch.equal(got_keep, unsorted_cum < p):
                raise Feedback(
                    "you summed the probabilities in vocabulary order; sort them first, most "
                    "likely first (torch.sort(..., descending=True)), so that the nucleus holds "
                    "the most likely tokens"
                )
            if got_keep.all():
                raise Feedback(
                    f"you kept every token of both rows; with p = {p}, row 0 (probabilities 0.15, "
                    "0.5, 0.05, 0.3) should keep only 0.5 and 0.3. Did you sort in ascending "
                    "order? Sort most likely first (descending=True)"
                )
            if torch.equal(got_keep, torch.gather(expected_keep, 1, sorted_order)):
                raise Feedback(
                    "your mask is in sorted order: after deciding which sorted positions to keep, "
                    "put the decision back in vocabulary order (scatter it with the indices the "
                    "sort returned)"
                )
            row = int((got_keep != expected_keep).any(dim=-1).nonzero()[0, 0])
            raise Feedback(
                f"row {row} has the probabilities {probs[row]}; with p = {p} keep "
                f"{[q for q, k in zip(probs[row], expected_keep[row].tolist(), strict=True) if k]}, "
                f"you kept {[q for q, k in zip(probs[row], got_keep[row].tolist(), strict=True) if k]}"
            )
        if not torch.allclose(out[expected_keep], logits[expected_keep]):
            if torch.allclose(out[expected_keep].sort().values,
                              logits[expected_keep].sort().values):
                raise Feedback(
                    "the kept logits are right but in the wrong places: return them in vocabulary "
                    "order (scatter back with the sort indices)"
                )
            raise Feedback("the kept logits changed: leave them as they are, set the others to -inf")
        # logits that are not log-probabilities: the nucleus is decided on softmax(logits)
        shifted = logits + torch.tensor([[3.0], [-2.0]])
        got = _kept(_call(top_p_filter, shifted, p, what="top_p_filter"))
        if not torch.equal(got, expected_keep):
            raise Feedback(
                "adding a constant to a row of logits changes nothing in its softmax, but it changed "
                "your nucleus: compute the probabilities with a softmax before the cumulative sum, "
                "do not sum the logits"
            )
        # p = 1 keeps everything; a tiny p keeps only the most likely token
        all_kept = _kept(_call(top_p_filter, logits, 1.0, what="top_p_filter"))
        if not all_kept.all():
            raise Feedback(f"with p = 1.0 every token should be kept, you kept {all_kept.tolist()}")
        one = _kept(_call(top_p_filter, logits, 0.01, what="top_p_filter"))
        if not torch.equal(one.sum(dim=-1), torch.tensor([1, 1])):
            raise Feedback(
                f"with p = 0.01 only the most likely token of each row should stay (it alone "
                f"reaches p), you kept {one.sum(dim=-1).tolist()} per row"
            )

    return run_check("top_p_filter", body)


# --------------------------------------------------------------------------------------------------
# Exercise 4: the size of a KV cache
# --------------------------------------------------------------------------------------------------


def kv_cache_bytes(
    n_layer: int, d_model: int, seq_len: int, batch_size: int = 1, bytes_per_value: int = 4
) -> int:
    """Bytes a KV cache holds: keys and values, every layer, every position, the full width."""
    return 2 * n_layer * batch_size * seq_len * d_model * bytes_per_value


def check_kv_cache_bytes(reader_kv_cache_bytes: Callable) -> bool:
    """Exercise 4: ``kv_cache_bytes(n_layer, d_model, seq_len, batch_size=1, bytes_per_value=4)``."""

    def value(**kwargs) -> float:
        return need_number(reader_kv_cache_bytes(**kwargs), "kv_cache_bytes")

    def body() -> None:
        # every factor different, so that each missing factor gives a different answer
        base = {"n_layer": 3, "d_model": 8, "seq_len": 7, "batch_size": 5, "bytes_per_value": 4}
        got = value(**base)
        want = kv_cache_bytes(**base)
        if got == want:
            pass
        elif got == want / 2:
            raise Feedback(
                "half the right size: the cache holds the keys *and* the values, two tensors of "
                "(batch, seq_len, d_model) per layer"
            )
        elif got == want / base["bytes_per_value"]:
            raise Feedback(
                "that is the number of values, not bytes: multiply by bytes_per_value (4 for "
                "float32, 2 for float16)"
            )
        elif got == want / base["n_layer"]:
            raise Feedback("every layer keeps its own keys and values: multiply by n_layer")
        elif got == want / base["batch_size"]:
            raise Feedback("every sequence of the batch has its own cache: multiply by batch_size")
        elif got == want / base["d_model"]:
            raise Feedback(
                "each position keeps a whole vector of d_model numbers (all heads together) for "
                "its key, and another for its value"
            )
        # probe one argument at a time
        for name in ("n_layer", "d_model", "seq_len", "batch_size", "bytes_per_value"):
            doubled = dict(base, **{name: base[name] * 2})
            ratio = value(**doubled) / got if got else math.nan
            if not math.isclose(ratio, 2.0, rel_tol=1e-9):
                raise Feedback(
                    f"doubling {name} should double the size, but it multiplied it by {ratio:.3g}"
                )
        if got != want:
            raise Feedback(
                f"for {base} the cache holds {want:,} bytes, you computed {got:,.0f}: "
                "2 (keys and values) x n_layer x batch_size x seq_len x d_model x bytes_per_value"
            )
        # the defaults: one sequence in float32
        small = value(n_layer=1, d_model=4, seq_len=2)
        if small != kv_cache_bytes(1, 4, 2):
            raise Feedback(
                f"with the defaults (batch_size=1, bytes_per_value=4) expected "
                f"{kv_cache_bytes(1, 4, 2)} bytes, got {small:g}"
            )

    return run_check("kv_cache_bytes", body)


# --------------------------------------------------------------------------------------------------
# Exercise 5 (an experiment): how hot may the sampler run?
# --------------------------------------------------------------------------------------------------

# Measured with `python scripts/experiment_ranges.py ch08`: the story model in float64, the
# chapter's 128 texts (begun after a blank line, filling the context, 4 batches of 32), the
# temperatures 1.00, 1.05, 1.10, ...; the last one before the grammatical share first falls below
# 95%. Sampling seeds 0, 1, 2 gave 1.25, 1.20 and 1.15 (seed 0, the chapter's: 95.0% at 1.25,
# 93.7% at 1.30). Accepted: that range widened by the grid step, 0.05, on each side.
HOTTEST_GRAMMATICAL_TEMPERATURE = (1.10, 1.30)


def check_hottest_grammatical_temperature(
    hottest_grammatical_temperature: Callable[[], object],
) -> bool:
    """The reader's ``hottest_grammatical_temperature()`` returns the temperature they found."""
    low, high = HOTTEST_GRAMMATICAL_TEMPERATURE
    return check_measured(
        "hottest_grammatical_temperature",
        hottest_grammatical_temperature,
        low,
        high,
        too_low=(
            "At that temperature the texts are still well above 95% grammatical: keep stepping up by "
            "0.05 until the share falls below 95%, and return the temperature before that one. Is "
            "your share grammatical_share(texts).value (a fraction, 0.95, not 95)?"
        ),
        too_high=(
            "At that temperature fewer than 95% of the sentences are grammatical. Did you return the "
            "first temperature below 95% instead of the one before it, or sample with top-k or top-p "
            "as well (a cut tail keeps the grammar at higher temperatures)?"
        ),
    )
