"""The chapter 06 exercise checks: a right answer passes, each usual mistake gets its own hint."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import torch

from attention_book.exercises import ch06


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize(
    "check",
    [ch06.check_get_pair_counts, ch06.check_merge_pair, ch06.check_make_batch, ch06.check_token_bytes],
)
def test_stub_is_not_attempted(check, capsys):
    ok, out = verdict(check, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out


# ------------------------------------------------------------------------------ 1. pair counts
def pairs_right(pieces):
    counts = Counter()
    for ids in pieces:
        for pair in zip(ids, ids[1:], strict=False):
            counts[pair] += 1
    return counts


def pairs_right_dict(pieces):
    counts = defaultdict(int)
    for ids in pieces:
        for i in range(len(ids) - 1):
            counts[(ids[i], ids[i + 1])] += 1
    return dict(counts)


def pairs_across_boundaries(pieces):
    flat = [t for ids in pieces for t in ids]
    return Counter(zip(flat, flat[1:], strict=False))


def pairs_missing_last(pieces):
    counts = Counter()
    for ids in pieces:
        for i in range(len(ids) - 2):
            counts[(ids[i], ids[i + 1])] += 1
    return counts


def pairs_missing_first(pieces):
    counts = Counter()
    for ids in pieces:
        for i in range(1, len(ids) - 1):
            counts[(ids[i], ids[i + 1])] += 1
    return counts


def pairs_index_error(pieces):
    counts = Counter()
    for ids in pieces:
        for i in range(len(ids)):
            counts[(ids[i], ids[i + 1])] += 1
    return counts


def pairs_set_per_piece(pieces):
    counts = Counter()
    for ids in pieces:
        counts.update(set(zip(ids, ids[1:], strict=False)))
    return counts


def pairs_distinct_pieces(pieces):
    counts = Counter()
    for ids in {tuple(p) for p in pieces}:
        counts.update(zip(ids, ids[1:], strict=False))
    return counts


def pairs_non_overlapping(pieces):
    counts = Counter()
    for ids in pieces:
        i = 0
        while i < len(ids) - 1:
            counts[(ids[i], ids[i + 1])] += 1
            i += 2 if ids[i] == ids[i + 1] else 1
    return counts


def pairs_list(pieces):
    return [pair for ids in pieces for pair in zip(ids, ids[1:], strict=False)]


def pairs_string_keys(pieces):
    return {f"{a},{b}": n for (a, b), n in pairs_right(pieces).items()}


def pairs_mutates(pieces):
    out = pairs_right(pieces)
    pieces.clear()
    return out


def pairs_no_return(pieces):
    pairs_right(pieces)


@pytest.mark.parametrize("right", [pairs_right, pairs_right_dict], ids=lambda f: f.__name__)
def test_pair_counts_right(right, capsys):
    ok, out = verdict(ch06.check_get_pair_counts, right, capsys)
    assert ok is True, out
    assert out.startswith("✓ get_pair_counts")


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (pairs_across_boundaries, "you counted pairs across piece boundaries"),
        (pairs_missing_last, "the last pair of each piece is missing (off by one)"),
        (pairs_missing_first, "the first pair of each piece is missing (off by one)"),
        (pairs_index_error, "The last token of a piece has no right neighbour"),
        (pairs_set_per_piece, "you counted each pair once per piece"),
        (pairs_distinct_pieces, "a piece listed twice counts twice"),
        (pairs_non_overlapping, "overlapping occurrences both count"),
        (pairs_list, "return a dict (or a Counter)"),
        (pairs_string_keys, "the keys should be pairs of ids"),
        (pairs_mutates, "changed the pieces"),
        (pairs_no_return, "forget the `return`"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_pair_counts_mistakes(wrong, message, capsys):
    ok, out = verdict(ch06.check_get_pair_counts, wrong, capsys)
    assert ok is False
    assert out.startswith("✗ get_pair_counts")
    assert message in out, out


# ------------------------------------------------------------------------------ 2. one merge
def merge_right(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_overlapping(ids, pair, new_id):  # replaces at every position, reusing tokens
    if len(ids) < 2:
        return list(ids)
    out = []
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
        elif i == 0 or (ids[i - 1], ids[i]) != tuple(pair):
            out.append(ids[i])
    if (ids[-2], ids[-1]) != tuple(pair):
        out.append(ids[-1])
    return out


def merge_right_to_left(ids, pair, new_id):
    return merge_right(ids[::-1], tuple(pair)[::-1], new_id)[::-1]


def merge_drops_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return ids[:i] + [new_id] + ids[i + 2 :]
    return list(ids)


def merge_unordered(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and {ids[i], ids[i + 1]} == set(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_in_place(ids, pair, new_id):
    result = merge_right(ids, pair, new_id)
    ids[:] = result
    return ids


def merge_no_return(ids, pair, new_id):
    merge_right(ids, pair, new_id)


@pytest.mark.parametrize(
    "right",
    [merge_right, lambda ids, pair, new_id: tuple(merge_right(ids, pair, new_id))],
    ids=["list", "tuple"],
)
def test_merge_right(right, capsys):
    ok, out = verdict(ch06.check_merge_pair, right, capsys)
    assert ok is True, out
    assert out.startswith("✓ merge_pair")


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (merge_overlapping, "The middle 5 was used twice"),
        (merge_right_to_left, "The scan goes left to right"),
        (merge_drops_last, "the last token is missing"),
        (merge_first_only, "replace every occurrence, not only the first"),
        (merge_unordered, "a pair is ordered"),
        (merge_in_place, "changed the list it was given"),
        (merge_no_return, "forget to `return`"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_merge_mistakes(wrong, message, capsys):
    ok, out = verdict(ch06.check_merge_pair, wrong, capsys)
    assert ok is False
    assert out.startswith("✗ merge_pair")
    assert message in out, out


# ------------------------------------------------------------------------------ 3. batches
def batch_right(data, starts, context_length):
    x = torch.stack([data[s : s + context_length] for s in starts.tolist()])
    y = torch.stack([data[s + 1 : s + context_length + 1] for s in starts.tolist()])
    return x, y


def batch_right_gather(data, starts, context_length):
    offsets = starts[:, None] + torch.arange(context_length + 1)
    windows = data[offsets]
    return windows[:, :-1], windows[:, 1:]


def batch_not_shifted(data, starts, context_length):
    x, _ = batch_right(data, starts, context_length)
    return x, x.clone()


def batch_wrong_direction(data, starts, context_length):
    x, _ = batch_right(data, starts, context_length)
    y = torch.stack([data[s - 1 : s + context_length - 1] if s > 0 else
                     torch.cat([data[:1], data[: context_length - 1]]) for s in starts.tolist()])
    return x, y


def batch_shift_two(data, starts, context_length):
    x, _ = batch_right(data, starts, context_length)
    return x, torch.stack([data[s + 2 : s + context_length + 2] for s in starts.tolist()])


def batch_swapped(data, starts, context_length):
    x, y = batch_right(data, starts, context_length)
    return y, x


def batch_window_too_long(data, starts, context_length):
    x = torch.stack([data[s : s + context_length + 1] for s in starts.tolist()])
    return x, x


def batch_transposed(data, starts, context_length):
    x, y = batch_right(data, starts, context_length)
    return x.T, y.T


def batch_float(data, starts, context_length):
    x, y = batch_right(data, starts, context_length)
    return x.float(), y.float()


def batch_late_start(data, starts, context_length):
    return batch_right(data, starts + 1, context_length)


@pytest.mark.parametrize("right", [batch_right, batch_right_gather], ids=lambda f: f.__name__)
def test_batch_right(right, capsys):
    ok, out = verdict(ch06.check_make_batch, right, capsys)
    assert ok is True, out
    assert out.startswith("✓ make_batch")


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (batch_not_shifted, "y is the same as x"),
        (batch_wrong_direction, "y is shifted the wrong way"),
        (batch_shift_two, "shifted by two tokens"),
        (batch_swapped, "x and y are swapped"),
        (batch_window_too_long, "T + 1 = 6 columns"),
        (batch_transposed, "(T, B)"),
        (batch_float, "int64"),
        (batch_late_start, "x starts one token late"),
        (lambda data, starts, T: batch_right(data, starts, T)[0], "return a pair (x, y)"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_batch_mistakes(wrong, message, capsys):
    ok, out = verdict(ch06.check_make_batch, wrong, capsys)
    assert ok is False
    assert out.startswith("✗ make_batch")
    assert message in out, out


# ------------------------------------------------------------------------------ 4. token bytes
def bytes_right(token_id, merges):
    if token_id < 256:
        return bytes([token_id])
    a, b = merges[token_id - 256]
    return bytes_right(a, merges) + bytes_right(b, merges)


def bytes_right_table(token_id, merges):
    vocab = [bytes([i]) for i in range(256)]
    for a, b in merges:
        vocab.append(vocab[a] + vocab[b])
    return vocab[token_id]


def bytes_reversed(token_id, merges):
    if token_id < 256:
        return bytes([token_id])
    a, b = merges[token_id - 256]
    return bytes_reversed(b, merges) + bytes_reversed(a, merges)


def bytes_not_recursive(token_id, merges):
    if token_id < 256:
        return bytes([token_id])
    return bytes(merges[token_id - 256])


def bytes_no_offset(token_id, merges):
    if token_id < 256:
        return bytes([token_id])
    a, b = merges[token_id]
    return bytes_no_offset(a, merges) + bytes_no_offset(b, merges)


def bytes_as_text(token_id, merges):
    return bytes_right(token_id, merges).decode("utf-8", errors="replace")


def bytes_as_list(token_id, merges):
    return list(bytes_right(token_id, merges))


def bytes_off_by_one(token_id, merges):
    if token_id < 256:
        return bytes([token_id])
    a, b = merges[token_id - 257]
    return bytes_right(a, merges) + bytes_right(b, merges)


@pytest.mark.parametrize("right", [bytes_right, bytes_right_table], ids=lambda f: f.__name__)
def test_token_bytes_right(right, capsys):
    ok, out = verdict(ch06.check_token_bytes, right, capsys)
    assert ok is True, out
    assert out.startswith("✓ token_bytes")


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (bytes_reversed, "glue the parts in order"),
        (bytes_not_recursive, "expand the parts with token_bytes too, recursively"),
        (bytes_no_offset, "token t is merges[t - 256]"),
        (bytes_as_text, "return the bytes"),
        (bytes_as_list, "return a bytes object"),
        (bytes_off_by_one, "should be b'aa'"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_token_bytes_mistakes(wrong, message, capsys):
    ok, out = verdict(ch06.check_token_bytes, wrong, capsys)
    assert ok is False
    assert out.startswith("✗ token_bytes")
    assert message in out, out


# ------------------------------------------------------------------- saturation_vocabulary (experiment)
def test_saturation_vocabulary_accepts_the_measured_range(capsys):
    for found in (620, ch06.SATURATION_VOCABULARY[0], ch06.SATURATION_VOCABULARY[1]):
        ok, out = verdict(ch06.check_saturation_vocabulary, lambda found=found: found, capsys)
        assert ok is True, out
        assert out.startswith("✓ saturation_vocabulary")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (512, "is too low"),
        (803, "is too high"),
        (None, "forget a `return`"),
        ("620", "should return a number"),
    ],
)
def test_saturation_vocabulary_explains_a_wrong_answer(answer, message, capsys):
    ok, out = verdict(ch06.check_saturation_vocabulary, lambda: answer, capsys)
    assert ok is False
    assert out.startswith("✗ saturation_vocabulary")
    assert message in out, out
    if answer == 512:
        assert "held-out half" in out and "602 to 639 tokens" in out
    if answer == 803:
        assert "finer step" in out


def test_saturation_vocabulary_not_attempted(capsys):
    ok, out = verdict(ch06.check_saturation_vocabulary, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out
