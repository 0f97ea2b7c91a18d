"""Bad input, fuzzed: every wrong input gets a ValueError or TypeError that says what was wrong,
never a crash deep inside torch, json or the unpickler."""

from __future__ import annotations

import json
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transformer_core import GPT, GPTConfig
from transformer_core.data import load_text
from transformer_core.tokenizers import ByteBPETokenizer, CharTokenizer, load_tokenizer
from transformer_core.training import TrainConfig

FUZZ = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
BPE = ByteBPETokenizer.train("the cat sat on the mat. ünïcödé ✓ 猫 " * 20, vocab_size=280)


@FUZZ
@given(text=st.text())
def test_any_unicode_text_round_trips_through_the_byte_level_bpe(text):
    ids = BPE.encode(text)
    assert all(isinstance(i, int) and 0 <= i < BPE.vocab_size for i in ids)
    assert BPE.decode(ids) == text


@FUZZ
@given(vocab=st.text(min_size=1, max_size=20), extra=st.characters())
def test_the_character_tokenizer_names_an_unknown_character(vocab, extra):
    tok = CharTokenizer.from_text(vocab)
    if extra in vocab:
        assert tok.decode(tok.encode(extra)) == extra
        return
    with pytest.raises(ValueError) as err:
        tok.encode(vocab + extra)
    assert repr(extra) in str(err.value) or extra in str(err.value), str(err.value)


def invalid_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@FUZZ
@given(raw=st.binary(min_size=1, max_size=200).filter(invalid_utf8))
def test_load_text_on_bytes_that_are_not_utf8_says_so(tmp_path, raw):
    path = tmp_path / "bad.txt"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match="is not valid utf-8 text: the byte 0x"):
        load_text(path)


# ------------------------------------------------------------------ damaged tokenizer files
def damaged_variants(good: dict, seed: int):
    """JSON values a damaged or hand-edited file may hold instead of ``good``."""
    rng = random.Random(seed)
    junk = [None, 0, -1, 1.5, "x", [], {}, [[1]], [["a", "b"]], [[1, 2, 3]], [[300, 1]], [[-1, 2]],
            ["ab"], [1, 2], True, "[(", float("nan")]
    for key in list(good):
        for value in rng.sample(junk, 5):
            yield {**good, key: value}
        yield {k: v for k, v in good.items() if k != key}


@pytest.mark.parametrize("make", [lambda: CharTokenizer.from_text("hello"), lambda: BPE],
                         ids=["char", "bpe"])
def test_damaged_tokenizer_files_give_a_clear_error(tmp_path, make):
    tok = make()
    path = tmp_path / "tok.json"
    tok.save(path)
    good = json.loads(path.read_text(encoding="utf-8"))
    for seed in range(3):
        for data in damaged_variants(good, seed):
            path.write_text(json.dumps(data), encoding="utf-8")
            try:
                loaded = load_tokenizer(path)
            except (ValueError, TypeError) as err:
                assert str(err), data
                continue
            # a variant that loads must be a working tokenizer (or say clearly what it cannot do)
            try:
                loaded.decode(loaded.encode("hello"))
            except ValueError as err:
                assert "not in the vocabulary" in str(err)
    for raw in (b"", b"{", b"\xff\xfe\x00", b"[1, 2]", b'{"type": 1}', b"null"):
        path.write_bytes(raw)
        with pytest.raises(ValueError, match=str(path.name)):
            load_tokenizer(path)


# ------------------------------------------------------------------ generate and Trainer arguments
MODEL = None


def model() -> GPT:
    global MODEL
    if MODEL is None:
        torch.manual_seed(0)
        MODEL = GPT(GPTConfig.tiny(vocab_size=11, context_length=8)).eval()
    return MODEL


anything = st.one_of(st.none(), st.booleans(), st.integers(-5, 20), st.floats(allow_nan=True),
                     st.text(max_size=3), st.lists(st.integers(-2, 12), max_size=3))


@FUZZ
@given(max_new=anything, temperature=anything, top_k=anything, top_p=anything)
def test_generate_rejects_bad_arguments_clearly(max_new, temperature, top_k, top_p):
    idx = torch.tensor([[1, 2, 3]])
    try:
        out = model().generate(idx, max_new, temperature=temperature, top_k=top_k, top_p=top_p)
    except (ValueError, TypeError) as err:
        assert str(err)
        return
    assert out.shape[1] == 3 + max_new and out.dtype == torch.long


@FUZZ
@given(idx=st.one_of(st.lists(st.integers(-3, 14), max_size=4),
                     st.lists(st.lists(st.integers(-3, 14), min_size=1, max_size=12), min_size=1, max_size=2),
                     st.lists(st.floats(0, 5), min_size=1, max_size=3)))
def test_generate_rejects_bad_prompts_clearly(idx):
    try:
        prompt = torch.tensor(idx)
    except (ValueError, TypeError):
        return  # ragged lists: torch itself says so
    try:
        model().generate(prompt, 2)
    except (ValueError, TypeError) as err:
        assert str(err)


@FUZZ
@given(field=st.sampled_from(["max_steps", "batch_size", "lr", "warmup_steps", "grad_clip",
                              "grad_accum_steps", "eval_interval", "eval_steps", "log_interval",
                              "precision", "schedule", "checkpoint_interval", "min_lr", "betas",
                              "weight_decay", "seed"]),
       value=anything)
def test_train_config_rejects_bad_values_clearly(field, value):
    try:
        TrainConfig(**{field: value})
    except (ValueError, TypeError) as err:
        assert field in str(err) or "warmup_steps" in str(err), str(err)
