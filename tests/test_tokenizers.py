"""Tests for transformer_core.tokenizers: character and byte-level BPE tokenizers."""

from __future__ import annotations

import json
import time
from collections import Counter
from functools import lru_cache
from itertools import pairwise

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_core.data import load_corpus
from transformer_core.tokenizers import (
    GPT2_SPLIT_PATTERN,
    SYNTHETIC_VOCAB,
    TOKENIZER_KINDS,
    ByteBPETokenizer,
    CharTokenizer,
    SyntheticVocab,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
)


@lru_cache(maxsize=1)
def corpus_bpe() -> ByteBPETokenizer:
    """A BPE tokenizer trained once on the corpus and shared by the tests (hypothesis re-runs tests
    many times, and function-scoped fixtures do not mix with @given)."""
    return ByteBPETokenizer.train(load_corpus(), vocab_size=512)


@lru_cache(maxsize=1)
def corpus_chars() -> CharTokenizer:
    return CharTokenizer.from_text(load_corpus())


# ---------------------------------------------------------------------- CharTokenizer
def test_char_vocab_is_sorted_distinct_characters():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == (" ", "d", "e", "h", "l", "o", "r", "w")
    assert tok.vocab_size == len(tok) == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode([3, 2, 4, 4, 5]) == "hello"
    assert isinstance(tok, Tokenizer)


def test_char_roundtrip_on_corpus_and_small_vocab():
    text = load_corpus()
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size < 40
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    assert tok.compression_ratio(text) == 1.0


def test_char_decode_accepts_tensors_and_rejects_bad_ids():
    tok = CharTokenizer.from_text("abc")
    assert tok.decode(torch.tensor([0, 1, 2])) == "abc"
    assert tok.decode(torch.tensor([], dtype=torch.long)) == ""
    assert tok.decode(np.array([2, 1])) == "cb"
    assert tok.decode([np.int64(0)]) == "a"
    with pytest.raises(TypeError, match=r"got 1.0 \(float\)"):
        tok.decode([1.0])
    with pytest.raises(ValueError, match=r"token id 3 is outside .* \[0, 2\]"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="token id -1"):
        tok.decode([-1])
    with pytest.raises(ValueError, match=r"1-D tensor.*for a batch"):
        tok.decode(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="integers"):
        tok.decode(torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="not text"):
        tok.decode("abc")


def test_char_encode_unknown_characters_names_them_and_the_fix():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(
        ValueError, match=r"2 character\(s\).*'X' \(first at index 1\).*'!'"
    ) as info:
        tok.encode("aXb!X")
    assert "CharTokenizer.from_text" in str(info.value)
    with pytest.raises(TypeError, match="decode bytes first"):
        tok.encode(b"abc")  # type: ignore[arg-type]


def test_char_constructor_validation():
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match="twice"):
        CharTokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match="single characters"):
        CharTokenizer(["ab"])


def test_char_save_load(tmp_path):
    tok = CharTokenizer.from_text("héllo\n wörld \ud800")
    path = tmp_path / "chars.json"
    tok.save(path)
    assert json.loads(path.read_text(encoding="utf-8"))["type"] == "CharTokenizer"
    again = CharTokenizer.load(path)
    assert again == tok
    assert load_tokenizer(path) == tok


@settings(deadline=None, max_examples=100)
@given(st.text(alphabet=st.sampled_from(sorted(set(load_corpus())))))
def test_char_roundtrip_property(text):
    tok = corpus_chars()
    assert tok.decode(torch.tensor(tok.encode(text), dtype=torch.long)) == text


# ---------------------------------------------------------------------- ByteBPETokenizer
def naive_bpe_merges(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """The textbook algorithm, slowly: recount every pair over every piece at every step.

    The same counting (pairs inside pre-split pieces, overlapping occurrences all counted) and the
    same tie-break (highest count, then smallest pair) as the fast trainer, which must agree."""
    import re

    words = [list(p.encode("utf-8", "surrogatepass")) for p in re.findall(GPT2_SPLIT_PATTERN, text)]
    merges: list[tuple[int, int]] = []
    while 256 + len(merges) < vocab_size:
        counts = Counter(pair for w in words for pair in pairwise(w))
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        new_id = 256 + len(merges)
        merges.append(best)
        merged = []
        for w in words:
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged.append(out)
        words = merged
    return merges


def naive_encode(tok: ByteBPETokenizer, text: str) -> list[int]:
    """Apply every merge in training order to the whole (pre-split) text."""
    import re

    out = []
    for piece in re.findall(tok.pattern, text):
        ids = list(piece.encode("utf-8", "surrogatepass"))
        for k, (a, b) in enumerate(tok.merges):
            i, new = 0, []
            while i < len(ids):
                if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
                    new.append(256 + k)
                    i += 2
                else:
                    new.append(ids[i])
                    i += 1
            ids = new
        out.extend(ids)
    return out


def test_bpe_trains_fast_on_the_corpus_and_compresses_it():
    text = load_corpus()
    start = time.perf_counter()
    tok = ByteBPETokenizer.train(text, vocab_size=512)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"training took {elapsed:.1f} s"
    assert tok.vocab_size == len(tok) == 512
    assert len(tok.merges) == 256
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert max(ids) < 512
    # a word-level vocabulary of ~200 words fits in 256 merges: BPE shortens sequences ~3x
    assert tok.compression_ratio(text) > 2.5
    assert tok.compression_ratio(text) > CharTokenizer.from_text(text).compression_ratio(text)
    assert tok == corpus_bpe()  # deterministic


def test_bpe_merges_stay_inside_words():
    tok = corpus_bpe()
    for i in range(256, tok.vocab_size):
        s = tok.vocab[i].decode("utf-8")
        # a token may start with its word's leading space, but never holds a space after a letter
        assert " " not in s[1:] or not s.strip(), repr(s)
        assert "\n" not in s or not s.strip(), repr(s)
    # the corpus' most frequent words are single tokens, with their leading space
    assert tok.tokens("once upon a time, there was") == [
        "once",
        " upon",
        " a",
        " time",
        ",",
        " there",
        " was",
    ]


def test_bpe_tokens_show_partial_utf8_bytes():
    tok = ByteBPETokenizer()  # no merges: pure bytes
    assert tok.vocab_size == 256
    assert tok.tokens("é") == ["\\xc3", "\\xa9"]
    assert tok.encode("é") == [0xC3, 0xA9]
    assert tok.token_str(ord("a")) == "a"


def test_bpe_matches_the_slow_textbook_algorithm():
    text = load_corpus()[:6_000] + " ünïcödé, __dunder__ 12345 12345 ... !!"
    tok = ByteBPETokenizer.train(text, vocab_size=350)
    assert tok.merges == naive_bpe_merges(text, 350)
    assert tok.encode(text) == naive_encode(tok, text)


@settings(deadline=None, max_examples=60)
@given(text=st.text(alphabet="ab c\n.é", max_size=60), extra=st.integers(0, 30))
def test_bpe_training_property(text, extra):
    """On small random texts (many ties, overlapping pairs like 'aaa'), the incremental trainer
    agrees with the slow one, and encoding agrees with applying the merges in order."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny texts may run out of pairs
        tok = ByteBPETokenizer.train(text, vocab_size=256 + extra)
    assert tok.merges == naive_bpe_merges(text, 256 + extra)
    assert tok.encode(text) == naive_encode(tok, text)
    assert tok.decode(tok.encode(text)) == text


@settings(deadline=None, max_examples=200)
@given(st.text())
def test_bpe_roundtrip_any_unicode(text):
    tok = corpus_bpe()
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids, dtype=torch.long)) == text


LONE_SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


@settings(deadline=None, max_examples=50)
@given(st.text(alphabet=st.one_of(LONE_SURROGATES, st.characters(codec=None))))
def test_bpe_roundtrip_lone_surrogates_and_exotic_characters(text):
    """Python strings may hold lone surrogates, which UTF-8 cannot; they still round-trip."""
    tok = corpus_bpe()
    assert tok.decode(tok.encode(text)) == text


def test_bpe_roundtrip_examples():
    tok = corpus_bpe()
    for text in ["", "\ud800", "a\udfffb", "😀 e\u0301 ½ ²", "\r\n\t  x", "__init__", "ok\x00"]:
        assert tok.decode(tok.encode(text)) == text, repr(text)


def test_bpe_decode_of_invalid_utf8_replaces_or_raises():
    tok = corpus_bpe()
    ids = tok.encode("é")[:1]  # half a character
    assert tok.decode(ids) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        tok.decode(ids, errors="strict")
    with pytest.raises(ValueError, match=r"token id 512 is outside .* \[0, 511\]"):
        tok.decode([512])


def test_bpe_tie_breaking_prefers_smallest_pair():
    # "ab" and "cd" occur equally often: (97, 98) < (99, 100), so "ab" is merged first
    tok = ByteBPETokenizer.train("cd.ab.cd.ab", vocab_size=257)
    assert tok.merges == [(ord("a"), ord("b"))]


def test_bpe_bad_arguments():
    with pytest.raises(ValueError, match="vocab_size must be an int >= 256"):
        ByteBPETokenizer.train("abc", vocab_size=100)
    with pytest.raises(TypeError, match="expected text"):
        ByteBPETokenizer.train(b"abc", vocab_size=300)  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="ran out of pairs"):
        tok = ByteBPETokenizer.train("ab", vocab_size=300)
    assert tok.vocab_size == 257
    with pytest.raises(ValueError, match="does not exist yet"):
        ByteBPETokenizer([(256, 1)])
    with pytest.raises(ValueError, match="non-empty"):
        tok.compression_ratio("")


def test_bpe_save_load(tmp_path):
    tok = corpus_bpe()
    path = tmp_path / "bpe.json"
    tok.save(path)
    again = ByteBPETokenizer.load(path)
    assert again == tok
    assert again.vocab == tok.vocab
    text = "once upon a time, there was a fox named ünï."
    assert again.encode(text) == tok.encode(text)
    assert isinstance(load_tokenizer(path), ByteBPETokenizer)
    with pytest.raises(ValueError, match="holds a ByteBPETokenizer, not a CharTokenizer"):
        CharTokenizer.load(path)
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "ByteBPETokenizer", "version": 99, "merges": []}')
    with pytest.raises(ValueError, match="format version 99"):
        load_tokenizer(bad)


# ------------------------------------------------------------------ every kind, one loader
EVERY_KIND = {
    "CharTokenizer": (lambda: CharTokenizer.from_text("the fox ran. 12+3"), "the fox ran."),
    "WordTokenizer": (lambda: WordTokenizer.from_text("the fox ran. the dog sat."), "the dog ran."),
    "SyntheticVocab": (SyntheticVocab, "12+3"),
    "ByteBPETokenizer": (lambda: ByteBPETokenizer.train("the fox ran. the dog sat. " * 5, 270), "the fox sat."),
}


@pytest.mark.parametrize("kind", sorted(EVERY_KIND))
def test_every_kind_round_trips_through_load_tokenizer(tmp_path, kind):
    make, text = EVERY_KIND[kind]
    tok = make()
    assert isinstance(tok, Tokenizer) and type(tok).__name__ == kind
    path = tmp_path / f"{kind}.json"
    tok.save(path)
    for loaded in (load_tokenizer(path), type(tok).load(path)):
        assert type(loaded) is type(tok) and loaded == tok
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.decode(tok.encode(text)) == tok.decode(tok.encode(text))
    other = next(k for k in sorted(EVERY_KIND) if k != kind)
    with pytest.raises(ValueError, match=f"holds a {kind}, not a {other}"):
        TOKENIZER_KINDS[other].load(path)


def test_the_old_import_paths_still_work():
    from transformer_core.data import SYNTHETIC_VOCAB as from_data
    from transformer_core.encoder_only import WordTokenizer as from_encoder_only
    from transformer_core.encoder_only import pad_sequences

    assert from_data is SYNTHETIC_VOCAB and from_encoder_only is WordTokenizer
    assert pad_sequences([[1, 2], [3]], 0).tolist() == [[1, 2], [3, 0]]
    assert set(TOKENIZER_KINDS) == set(EVERY_KIND)
