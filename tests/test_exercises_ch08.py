"""The chapter 08 exercise checks: a right answer passes, each usual mistake gets its own hint."""

from __future__ import annotations

import pytest
import torch

from attention_book.exercises import ch08


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize(
    "check",
    [
        ch08.check_temperature_probs,
        ch08.check_top_k_filter,
        ch08.check_top_p_filter,
        ch08.check_kv_cache_bytes,
    ],
)
def test_stub_is_not_attempted(check, capsys):
    ok, out = verdict(check, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out


# ------------------------------------------------------------------------------ 1. temperature
def temp_right(logits, temperature):
    return torch.softmax(logits / temperature, dim=-1)


def temp_right_power(logits, temperature):  # p ** (1/T), renormalised: the same distribution
    p = torch.softmax(logits, dim=-1) ** (1 / temperature)
    return p / p.sum(dim=-1, keepdim=True)


def temp_multiplied(logits, temperature):
    return torch.softmax(logits * temperature, dim=-1)


def temp_after_softmax(logits, temperature):
    return torch.softmax(logits, dim=-1) / temperature


def temp_no_softmax(logits, temperature):
    return logits / temperature


def temp_subtracted(logits, temperature):
    return torch.softmax(logits - temperature, dim=-1)


def temp_wrong_dim(logits, temperature):
    return torch.softmax(logits / temperature, dim=0)


def temp_in_place(logits, temperature):
    logits /= temperature
    return torch.softmax(logits, dim=-1)


def temp_manual_exp(logits, temperature):
    e = torch.exp(logits / temperature)
    return e / e.sum(dim=-1, keepdim=True)


def temp_power_unnormalised(logits, temperature):
    return torch.softmax(logits, dim=-1) ** (1 / temperature)


@pytest.mark.parametrize("right", [temp_right, temp_right_power], ids=lambda f: f.__name__)
def test_temperature_right(right, capsys):
    ok, out = verdict(ch08.check_temperature_probs, right, capsys)
    assert ok is True, out
    assert out.startswith("✓ temperature_probs")


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (temp_multiplied, "you multiplied the logits by the temperature; divide them"),
        (temp_after_softmax, "you divided the probabilities by T, after the softmax"),
        (temp_no_softmax, "you returned the scaled logits"),
        (temp_subtracted, "subtracting T shifts every logit equally"),
        (temp_wrong_dim, "your columns sum to 1"),
        (temp_in_place, "changed the logits it was given"),
        (temp_manual_exp, "overflows"),
        (temp_power_unnormalised, "do not sum to 1"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_temperature_mistakes(wrong, message, capsys):
    ok, out = verdict(ch08.check_temperature_probs, wrong, capsys)
    assert ok is False
    assert out.startswith("✗ temperature_probs")
    assert message in out, out


# ------------------------------------------------------------------------------ 2. top-k
def topk_right(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def topk_right_scatter(logits, k):  # keeps exactly k, even on ties
    values, indices = torch.topk(logits, k, dim=-1)
    out = torch.full_like(logits, float("-inf"))
    return out.scatter(-1, indices, values)


def topk_less_equal(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits <= kth, float("-inf"))


def topk_k_plus_one(logits, k):
    kth = torch.topk(logits, k + 1, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def topk_zero(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, 0.0)


def topk_probs(logits, k):
    return torch.softmax(topk_right(logits, k), dim=-1)


def topk_whole_batch(logits, k):
    kth = torch.topk(logits.flatten(), k).values[-1]
    return logits.masked_fill(logits < kth, float("-inf"))


def topk_values_only(logits, k):
    return torch.topk(logits, k, dim=-1).values


def topk_in_place(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill_(logits < kth, float("-inf"))


def topk_minus_1e9(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, -1e9)


@pytest.mark.parametrize("right", [topk_right, topk_right_scatter], ids=lambda f: f.__name__)
def test_top_k_right(right, capsys):
    ok, out = verdict(ch08.check_top_k_filter, right, capsys)
    assert ok is True, out
    assert out.startswith("✓ top_k_filter")


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (topk_less_equal, "you kept k - 1 = 2 tokens per row"),
        (topk_k_plus_one, "you kept k + 1 = 4 tokens per row (off by one)"),
        (topk_zero, "not -inf"),
        (topk_minus_1e9, "not -inf"),
        (topk_probs, "returned probabilities"),
        (topk_whole_batch, "top-k is per row"),
        (topk_values_only, "it should keep the shape of the logits"),
        (topk_in_place, "changed the logits it was given"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_top_k_mistakes(wrong, message, capsys):
    ok, out = verdict(ch08.check_top_k_filter, wrong, capsys)
    assert ok is False
    assert out.startswith("✗ top_k_filter")
    assert message in out, out


# ------------------------------------------------------------------------------ 3. top-p
def topp_right(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(dim=-1) - probs
    drop_sorted = before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def topp_right_hf(logits, p):  # Hugging Face's way: sort ascending, drop the tail below 1 - p
    sorted_logits, order = torch.sort(logits, dim=-1)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop_sorted = cum <= 1 - p
    drop_sorted[..., -1] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def topp_excludes_crossing(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop_sorted = cum > p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def topp_excludes_crossing_keeps_first(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop_sorted = cum > p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def topp_one_too_many(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before2 = probs.cumsum(dim=-1) - probs
    before2 = torch.cat([torch.zeros_like(before2[..., :1]), before2[..., :-1]], dim=-1)
    drop_sorted = before2 >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def topp_unsorted(logits, p):
    probs = torch.softmax(logits, dim=-1)
    before = probs.cumsum(dim=-1) - probs
    return logits.masked_fill(before >= p, float("-inf"))


def topp_ascending(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(dim=-1) - probs
    drop_sorted = before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def topp_not_scattered(logits, p):
    sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(dim=-1) - probs
    return logits.masked_fill(before >= p, float("-inf"))


def topp_returns_sorted(logits, p):
    sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(dim=-1) - probs
    return sorted_logits.masked_fill(before >= p, float("-inf"))


def topp_cumsum_of_logits(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    e = sorted_logits.exp()  # forgets to normalise: fine for log-probabilities only
    before = e.cumsum(dim=-1) - e
    drop_sorted = before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def topp_zero(logits, p):
    return topp_right(logits, p).nan_to_num(neginf=0.0)


def topp_in_place(logits, p):
    out = topp_right(logits, p)
    logits.copy_(out)
    return out


@pytest.mark.parametrize("right", [topp_right, topp_right_hf], ids=lambda f: f.__name__)
def test_top_p_right(right, capsys):
    ok, out = verdict(ch08.check_top_p_filter, right, capsys)
    assert ok is True, out
    assert out.startswith("✓ top_p_filter")


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (topp_excludes_crossing, "row 1 has no token left"),
        (topp_excludes_crossing_keeps_first, "so the token that crosses p (0.3, cumulative 0.8)"),
        (topp_one_too_many, "the nucleus stops at the token that crosses p"),
        (topp_unsorted, "you summed the probabilities in vocabulary order"),
        (topp_ascending, "Did you sort in ascending order?"),
        (topp_not_scattered, "your mask is in sorted order"),
        (topp_returns_sorted, "your mask is in sorted order"),
        (topp_cumsum_of_logits, "compute the probabilities with a softmax"),
        (topp_zero, "not -inf"),
        (topp_in_place, "changed the logits it was given"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_top_p_mistakes(wrong, message, capsys):
    ok, out = verdict(ch08.check_top_p_filter, wrong, capsys)
    assert ok is False
    assert out.startswith("✗ top_p_filter")
    assert message in out, out


# ------------------------------------------------------------------------------ 4. KV cache size
def kv_right(n_layer, d_model, seq_len, batch_size=1, bytes_per_value=4):
    return 2 * n_layer * d_model * seq_len * batch_size * bytes_per_value


def kv_only_keys(n_layer, d_model, seq_len, batch_size=1, bytes_per_value=4):
    return n_layer * d_model * seq_len * batch_size * bytes_per_value


def kv_values_not_bytes(n_layer, d_model, seq_len, batch_size=1, bytes_per_value=4):
    return 2 * n_layer * d_model * seq_len * batch_size


def kv_one_layer(n_layer, d_model, seq_len, batch_size=1, bytes_per_value=4):
    return 2 * d_model * seq_len * batch_size * bytes_per_value


def kv_no_batch(n_layer, d_model, seq_len, batch_size=1, bytes_per_value=4):
    return 2 * n_layer * d_model * seq_len * bytes_per_value


def kv_one_head_width(n_layer, d_model, seq_len, batch_size=1, bytes_per_value=4):
    return 2 * n_layer * seq_len * batch_size * bytes_per_value


def kv_quadratic(n_layer, d_model, seq_len, batch_size=1, bytes_per_value=4):
    return 2 * n_layer * d_model * seq_len**2 * batch_size * bytes_per_value


def kv_wrong_default(n_layer, d_model, seq_len, batch_size=1, bytes_per_value=2):
    return 2 * n_layer * d_model * seq_len * batch_size * bytes_per_value


@pytest.mark.parametrize("right", [kv_right, ch08.kv_cache_bytes], ids=["reader", "package"])
def test_kv_right(right, capsys):
    ok, out = verdict(ch08.check_kv_cache_bytes, right, capsys)
    assert ok is True, out
    assert out.startswith("✓ kv_cache_bytes")


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (kv_only_keys, "the keys *and* the values"),
        (kv_values_not_bytes, "that is the number of values, not bytes"),
        (kv_one_layer, "multiply by n_layer"),
        (kv_no_batch, "multiply by batch_size"),
        (kv_one_head_width, "a whole vector of d_model numbers"),
        (kv_quadratic, "doubling seq_len should double the size"),
        (kv_wrong_default, "with the defaults"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_kv_mistakes(wrong, message, capsys):
    ok, out = verdict(ch08.check_kv_cache_bytes, wrong, capsys)
    assert ok is False
    assert out.startswith("✗ kv_cache_bytes")
    assert message in out, out


# ------------------------------------------------------ hottest_grammatical_temperature (experiment)
def test_hottest_grammatical_temperature_accepts_the_measured_range(capsys):
    for found in (1.2, *ch08.HOTTEST_GRAMMATICAL_TEMPERATURE):
        ok, out = verdict(
            ch08.check_hottest_grammatical_temperature, lambda found=found: found, capsys
        )
        assert ok is True, out
        assert out.startswith("✓ hottest_grammatical_temperature")


@pytest.mark.parametrize(
    ("answer", "message", "hint"),
    [(1.0, "is too low", "keep stepping up"), (1.5, "is too high", "fewer than 95%")],
)
def test_hottest_grammatical_temperature_explains_a_wrong_answer(answer, message, hint, capsys):
    ok, out = verdict(ch08.check_hottest_grammatical_temperature, lambda: answer, capsys)
    assert ok is False
    assert out.startswith("✗ hottest_grammatical_temperature")
    assert message in out and hint in out, out
    assert "1.1 to 1.3" in out


def test_hottest_grammatical_temperature_not_attempted(capsys):
    ok, out = verdict(ch08.check_hottest_grammatical_temperature, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out
