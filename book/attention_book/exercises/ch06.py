"""Auto-checks for chapter 06, *Tokens and data*.

One check per exercise. Each runs the reader's function on small inputs built so that the usual
mistakes show (pairs counted across two pieces, a merge that overlaps, targets that are not shifted,
a merged token glued in the wrong order), names the mistake when it recognises one, and otherwise
shows where the answer differs from the right one.

=============================================  ===================================
exercise                                       check
=============================================  ===================================
1. ``get_pair_counts(pieces)``                 :func:`check_get_pair_counts`
2. ``merge_pair(ids, pair, new_id)``           :func:`check_merge_pair`
3. ``make_batch(data, starts, context_length)``  :func:`check_make_batch`
4. ``token_bytes(token_id, merges)``           :func:`check_token_bytes`
5. ``saturation_vocabulary()`` (an experiment)   :func:`check_saturation_vocabulary`
=============================================  ===================================
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Mapping
from itertools import pairwise

import torch
from torch import Tensor

from transformer_core.tokenizers import ByteBPETokenizer, _merge

from ._checker import Feedback, run_check
from ._measured import check_measured

__all__ = [
    "check_get_pair_counts",
    "check_merge_pair",
    "check_make_batch",
    "check_token_bytes",
    "check_saturation_vocabulary",
]


# --------------------------------------------------------------------------------------------------
# Exercise 1: count the pairs
# --------------------------------------------------------------------------------------------------


def _reference_pair_counts(pieces: list[list[int]]) -> Counter:
    return Counter(pair for piece in pieces for pair in pairwise(piece))


def _as_counts(out: object) -> dict[tuple[int, int], int]:
    """The reader's answer as {(a, b): count} with the zero counts left out, or Feedback."""
    if out is None:
        raise Feedback("get_pair_counts returned None: did you forget the `return`?")
    if not isinstance(out, Mapping):
        raise Feedback(
            f"return a dict (or a Counter) that maps each pair (a, b) to its count, not a "
            f"{type(out).__name__}"
        )
    counts: dict[tuple[int, int], int] = {}
    for key, value in out.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise Feedback(
                f"the keys should be pairs of ids, tuples (a, b); found the key {key!r}. "
                "zip(ids, ids[1:]) gives such tuples"
            )
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise Feedback(f"the count of {key} should be a number, got {value!r}") from None
        if n:
            counts[(int(key[0]), int(key[1]))] = n
    return counts


def _describe_pair_difference(got: dict, expected: Counter) -> str:
    for pair in sorted(set(got) | set(expected)):
        if got.get(pair, 0) != expected.get(pair, 0):
            return f"the pair {pair} should be counted {expected.get(pair, 0)} time(s), you counted {got.get(pair, 0)}"
    return "the counts differ"  # pragma: no cover - only called when they differ


def check_get_pair_counts(get_pair_counts: Callable) -> bool:
    """Exercise 1: ``get_pair_counts(pieces)`` counts the neighbouring pairs inside each piece."""

    def call(pieces: list[list[int]]) -> dict[tuple[int, int], int]:
        given = copy.deepcopy(pieces)
        try:
            out = get_pair_counts(pieces)
        except IndexError as err:
            raise Feedback(
                f"your code raised IndexError ({err}). The last token of a piece has no right "
                "neighbour: a piece of n tokens has n - 1 pairs, so loop i over range(len(ids) - 1) "
                "(or use zip(ids, ids[1:]))"
            ) from None
        if pieces != given:
            raise Feedback("your function changed the pieces it was given; only read them")
        return _as_counts(out)

    def body() -> None:
        # 1. Three pieces; concatenating them would create the pairs (3, 2) and (3, 3).
        pieces = [[1, 2, 3], [2, 3], [3, 1, 2]]
        expected = _reference_pair_counts(pieces)
        got = call(pieces)
        if got != expected:
            flat = [t for piece in pieces for t in piece]
            if got == Counter(pairwise(flat)):
                raise Feedback(
                    "you counted pairs across piece boundaries: (3, 2) is the last token of "
                    "[1, 2, 3] followed by the first of [2, 3], which are never neighbours. Count "
                    "the pairs of each piece separately"
                )
            extra = sorted(set(got) - set(expected))
            if extra:
                raise Feedback(
                    f"you counted {extra[0]}, which is not a pair of neighbours inside any of "
                    f"the pieces {pieces}. Did a pair span two pieces?"
                )
            no_last = Counter(pair for p in pieces for pair in pairwise(p[:-1]))
            no_first = Counter(pair for p in pieces for pair in pairwise(p[1:]))
            if got == no_last:
                raise Feedback(
                    "the last pair of each piece is missing (off by one): in [1, 2, 3] the pairs "
                    "are (1, 2) and (2, 3). A piece of n tokens has n - 1 pairs: range(len(ids) - 1)"
                )
            if got == no_first:
                raise Feedback(
                    "the first pair of each piece is missing (off by one): in [1, 2, 3] the "
                    "pairs are (1, 2) and (2, 3); start at position 0"
                )
            raise Feedback(f"for the pieces {pieces}, {_describe_pair_difference(got, expected)}")

        # 2. A pair that occurs twice in one piece.
        pieces = [[1, 2, 1, 2]]
        expected = _reference_pair_counts(pieces)
        got = call(pieces)
        if got != expected:
            if got == Counter(pair for p in pieces for pair in set(pairwise(p))):
                raise Feedback(
                    "you counted each pair once per piece: [1, 2, 1, 2] holds (1, 2) twice, and "
                    "both count. (Did you use a set?)"
                )
            raise Feedback(f"for the pieces {pieces}, {_describe_pair_difference(got, expected)}")

        # 3. A piece listed twice counts twice.
        pieces = [[1, 2], [3, 4], [1, 2]]
        expected = _reference_pair_counts(pieces)
        got = call(pieces)
        if got != expected:
            if got == Counter(pair for p in {tuple(p) for p in pieces} for pair in pairwise(p)):
                raise Feedback(
                    "a piece listed twice counts twice: [1, 2] appears two times in the list, "
                    "so its pair (1, 2) adds 2 to the count"
                )
            raise Feedback(f"for the pieces {pieces}, {_describe_pair_difference(got, expected)}")

        # 4. Overlapping occurrences: [7, 7, 7] holds (7, 7) at positions 0 and 1.
        pieces = [[7, 7, 7], [7, 7, 7, 7]]
        expected = _reference_pair_counts(pieces)
        got = call(pieces)
        if got != expected:
            if got.get((7, 7)) == 3:
                raise Feedback(
                    "[7, 7, 7] holds the pair (7, 7) twice, at positions 0-1 and 1-2: when "
                    "counting, overlapping occurrences both count (only a merge must skip "
                    f"overlaps). Expected {{(7, 7): 5}} for {pieces}, you counted {got}"
                )
            raise Feedback(f"for the pieces {pieces}, {_describe_pair_difference(got, expected)}")

        # 5. Short pieces: one token has no pair, an empty piece neither.
        pieces = [[4], [], [4, 4], [5]]
        expected = _reference_pair_counts(pieces)
        got = call(pieces)
        if got != expected:
            raise Feedback(
                f"for the pieces {pieces} (a piece of one token has no pair, an empty one "
                f"neither), {_describe_pair_difference(got, expected)}"
            )

    return run_check("get_pair_counts", body)


# --------------------------------------------------------------------------------------------------
# Exercise 2: one merge
# --------------------------------------------------------------------------------------------------


def check_merge_pair(merge_pair: Callable) -> bool:
    """Exercise 2: ``merge_pair(ids, pair, new_id)`` replaces every occurrence of ``pair`` left to
    right, without overlaps, and returns a new list."""

    def call(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
        given = list(ids)
        out = merge_pair(ids, pair, new_id)
        if ids != given:
            raise Feedback(
                f"your function changed the list it was given (it was {given}, now {ids}); "
                "build a new list and return it"
            )
        if out is None:
            raise Feedback("merge_pair returned None: did you forget to `return` the new list?")
        if isinstance(out, Tensor):
            out = out.tolist()
        if not isinstance(out, (list, tuple)):
            raise Feedback(f"return a list of ids, not a {type(out).__name__}")
        return [int(t) for t in out]

    def body() -> None:
        cases = [
            ([1, 2, 3, 1, 2], (1, 2), 9),
            ([5, 5, 5], (5, 5), 9),
            ([5, 5, 5, 5], (5, 5), 9),
            ([3, 1, 2], (1, 2), 9),
            ([1, 2, 3], (1, 2), 9),
            ([1, 3, 2, 4], (1, 2), 9),
            ([2, 1], (1, 2), 9),
            ([2, 1, 2, 1], (1, 2), 9),
            ([7], (7, 7), 9),
            ([], (7, 7), 9),
            ([256, 101, 256, 101, 32], (256, 101), 300),
        ]
        for ids, pair, new_id in cases:
            expected = _merge(ids, pair, new_id)
            got = call(ids, pair, new_id)
            if got == expected:
                continue
            where = f"merge_pair({ids}, {pair}, {new_id}) should be {expected}, got {got}"
            if ids == [5, 5, 5]:
                if got == [9, 9]:
                    raise Feedback(
                        f"{where}. The middle 5 was used twice: after merging positions 0-1, skip "
                        "both tokens (i += 2), so a token is never part of two merges"
                    )
                if got == [5, 9]:
                    raise Feedback(
                        f"{where}. The scan goes left to right: the first occurrence, positions "
                        "0-1, is merged, and the last 5 is left alone"
                    )
            if len(got) == len(expected) - 1 and got == expected[:-1]:
                raise Feedback(
                    f"{where}: the last token is missing. When the loop stops one token before "
                    "the end (to look at pairs), that last token still has to be appended"
                )
            if ids == [1, 2, 3, 1, 2] and got == [9, 3, 1, 2]:
                raise Feedback(f"{where}: replace every occurrence, not only the first")
            if new_id in got and pair not in set(pairwise(ids)):
                raise Feedback(
                    f"{where}: the pair {pair} does not occur in {ids} (a pair is ordered: "
                    f"{pair[1]} followed by {pair[0]} is another pair), so nothing should change"
                )
            raise Feedback(where)

    return run_check("merge_pair", body)


# --------------------------------------------------------------------------------------------------
# Exercise 3: a batch from given windows
# --------------------------------------------------------------------------------------------------


def _check_batch(make_batch: Callable, data: Tensor, starts: Tensor, T: int) -> None:
    given = data.clone()
    out = make_batch(data, starts, T)
    if not torch.equal(data, given):
        raise Feedback("your function changed `data`; only read from it")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Feedback("return a pair (x, y) of tensors")
    x, y = out
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise Feedback("x and y should both be torch tensors")
    B = len(starts)
    x_exp = torch.stack([data[s : s + T] for s in starts.tolist()])
    y_exp = torch.stack([data[s + 1 : s + T + 1] for s in starts.tolist()])
    for name, t in (("x", x), ("y", y)):
        if t.shape == (T, B) and B != T:
            raise Feedback(
                f"{name} has shape {tuple(t.shape)} = (T, B); a batch is one window per row: "
                f"(B, T) = {(B, T)}"
            )
        if t.shape == (B, T + 1):
            raise Feedback(
                f"{name} has T + 1 = {T + 1} columns. A window of T + 1 tokens gives both: x is "
                "its first T tokens and y its last T"
            )
        if t.shape != (B, T):
            raise Feedback(f"{name} should have shape (B, T) = {(B, T)}, got {tuple(t.shape)}")
    if x.dtype != torch.int64 or y.dtype != torch.int64:
        raise Feedback(f"x and y should hold int64 token ids, got {x.dtype} and {y.dtype}")
    if torch.equal(x, y_exp) and torch.equal(y, x_exp):
        raise Feedback("x and y are swapped: x is the window, y the window one token later")
    if not torch.equal(x, x_exp):
        if torch.equal(x, x_exp + 1):
            raise Feedback("x starts one token late: row b of x is data[starts[b] : starts[b] + T]")
        raise Feedback(
            f"with starts = {starts.tolist()}, row 1 of x should be the window at "
            f"{int(starts[1])}: {x_exp[1].tolist()}, got {x[1].tolist()}"
        )
    if torch.equal(y, x):
        raise Feedback(
            "y is the same as x: the target at position t is the *next* token, so y is x "
            "shifted by one, data[s + 1 : s + T + 1]. With y = x the model would learn to "
            "copy its input"
        )
    if torch.equal(y[:, 1:], x[:, :-1]):
        raise Feedback(
            "y is shifted the wrong way: y[t] is the token *after* x[t] (data[s + t + 1]), "
            "not the one before it"
        )
    if torch.equal(y, x_exp + 2):
        raise Feedback("y is shifted by two tokens; the next token is one step ahead")
    if not torch.equal(y, y_exp):
        raise Feedback(
            f"with starts = {starts.tolist()}, row 1 of y should be {y_exp[1].tolist()} (x "
            f"shifted by one), got {y[1].tolist()}"
        )


def check_make_batch(make_batch: Callable) -> bool:
    """Exercise 3: ``make_batch(data, starts, T)`` -> ``(x, y)``, ``x[b] = data[s:s+T]`` and
    ``y[b] = data[s+1:s+T+1]`` for ``s = starts[b]``."""

    def body() -> None:
        data = torch.arange(100, 150)  # distinct values, so every shift is visible
        T = 5
        # windows well inside the data first (so that a shifted window still fits and shows its
        # shift), then the last possible window, which ends at the last token
        for starts in (torch.tensor([0, 7, 30]), torch.tensor([12, len(data) - T - 1])):
            _check_batch(make_batch, data, starts, T)

    return run_check("make_batch", body)


# --------------------------------------------------------------------------------------------------
# Exercise 4: the bytes of a token, from the merges alone
# --------------------------------------------------------------------------------------------------


def check_token_bytes(token_bytes: Callable) -> bool:
    """Exercise 4: ``token_bytes(token_id, merges)`` expands a token into its bytes."""

    def body() -> None:
        a, b, sp = ord("a"), ord("b"), ord(" ")
        merges = [
            (a, a),  # 256 = b"aa"
            (256, b),  # 257 = b"aab"
            (sp, 257),  # 258 = b" aab"
            (0xC3, 0xA9),  # 259 = "é" in UTF-8
            (258, 259),  # 260 = b" aab\xc3\xa9"
            (b, a),  # 261 = b"ba"
        ]
        vocab = ByteBPETokenizer(merges).vocab
        given = list(merges)

        def call(token_id: int) -> bytes:
            out = token_bytes(token_id, merges)
            if merges != given:
                raise Feedback("your function changed the list of merges; only read it")
            if isinstance(out, str):
                raise Feedback(
                    f"token_bytes({token_id}, merges) returned the text {out!r}; return the bytes "
                    f"({vocab[token_id]!r}): a token can end in the middle of a character, which "
                    "no str can hold"
                )
            if isinstance(out, bytearray):
                out = bytes(out)
            if isinstance(out, (list, tuple)):
                raise Feedback(
                    f"token_bytes({token_id}, merges) returned a {type(out).__name__}; return a "
                    "bytes object, e.g. bytes([104, 105]) == b'hi'"
                )
            if not isinstance(out, bytes):
                raise Feedback(f"return bytes, not {type(out).__name__}")
            return out

        for token_id in (a, 0xC3, 0, 255):
            got = call(token_id)
            if got != vocab[token_id]:
                raise Feedback(
                    f"token {token_id} is below 256, a single byte: expected {vocab[token_id]!r} "
                    f"(bytes([{token_id}])), got {got!r}"
                )
        try:
            got = call(256)
        except IndexError:
            raise Feedback(
                "token 256 raised IndexError: merge k made token 256 + k, so token 256 is "
                "merges[0] and token t is merges[t - 256]"
            ) from None
        if got != vocab[256]:
            raise Feedback(f"token 256 = merges[0] = (97, 97) should be b'aa', got {got!r}")
        got_261 = call(261)
        if got_261 == b"ab":
            raise Feedback(
                "token 261 = (98, 97) should be b'ba', got b'ab': glue the parts in order, the "
                "bytes of a followed by the bytes of b"
            )
        for token_id in (257, 258, 259, 260, 261):
            try:
                got = call(token_id)
            except (ValueError, TypeError) as err:
                if token_id == 259:
                    raise
                raise Feedback(
                    f"token {token_id} = {merges[token_id - 256]} raised {type(err).__name__} "
                    f"({err}). A part of a merge can be a merged token itself (an id of 256 or "
                    "more): expand the parts with token_bytes too, recursively"
                ) from None
            if got != vocab[token_id]:
                if token_id - 256 < len(merges) and got == vocab[token_id - 1]:
                    raise Feedback(
                        f"token {token_id} gave the bytes of token {token_id - 1}: token t is "
                        "merges[t - 256], no other offset"
                    )
                raise Feedback(
                    f"token {token_id} = {merges[token_id - 256]} should be {vocab[token_id]!r}, "
                    f"got {got!r}"
                )

    return run_check("token_bytes", body)


# --------------------------------------------------------------------------------------------------
# Exercise 5 (an experiment): where BPE's compression saturates
# --------------------------------------------------------------------------------------------------

# Measured with `python scripts/experiment_ranges.py ch06`: BPE trained on half of the stories
# (shuffled by seeds 0, 1, 2), compression measured on the other half; the smallest vocabulary
# reaching 90% of the saturated tokenizer's bytes per token was 620, 618 and 623. Accepted: that
# range widened by 16 on each side, the step of a coarse search.
SATURATION_VOCABULARY = (602, 639)


def check_saturation_vocabulary(saturation_vocabulary: Callable[[], object]) -> bool:
    """The reader's ``saturation_vocabulary()`` returns the vocabulary size they found."""
    low, high = SATURATION_VOCABULARY
    return check_measured(
        "saturation_vocabulary",
        saturation_vocabulary,
        low,
        high,
        unit=" tokens",
        too_low=(
            "At that size the held-out stories are not yet at 90% of the saturated compression. "
            "Compare with the ratio of *all* the merges on the held-out half (not on the training "
            "half), and remember that a vocabulary of V tokens is the first V - 256 merges."
        ),
        too_high=(
            "A smaller vocabulary already reaches 90% of the saturated compression: search below "
            "your answer with a finer step (the ratio grows with every merge, so a bisection works), "
            "and check that you compare with 0.9 times the saturated ratio, not 0.95."
        ),
    )
