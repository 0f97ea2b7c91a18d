"""Tests for transformer_core.data and attention_book.grammar: the corpus, batches, synthetic tasks."""

from __future__ import annotations

import random
import re

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from attention_book import grammar
from attention_book.grammar import (
    STORY_GRAMMAR,
    Grammar,
    generate_corpus,
    generate_sentence,
    grammatical_fraction,
    is_grammatical,
    split_sentences,
    tokenize_sentence,
)
from transformer_core.data import (
    CORPUS_PATH,
    SYNTHETIC_TASKS,
    SYNTHETIC_VOCAB,
    TokenDataset,
    addition_task,
    copy_task,
    get_batch,
    load_corpus,
    load_text,
    repeated_random_sequences,
    reverse_task,
    sort_task,
    train_val_split,
)

CORPUS = load_corpus()
SENTENCES = sorted(set(split_sentences(CORPUS)))
STORIES = CORPUS.rstrip("\n").split("\n\n")


# ---------------------------------------------------------------------- the corpus
def test_corpus_is_the_fresh_output_of_the_grammar():
    """The committed file is exactly what the seeded generator writes: nothing hand-edited."""
    assert generate_corpus() == CORPUS
    assert CORPUS_PATH.read_text(encoding="utf-8") == CORPUS


def test_corpus_shape_and_alphabet():
    size = len(CORPUS.encode("utf-8"))
    assert 300_000 <= size <= 600_000
    assert set(CORPUS) <= set("abcdefghijklmnopqrstuvwxyz ,.\n")
    assert len(set(CORPUS)) < 40
    assert len(STORIES) == grammar.CORPUS_STORIES
    for story in STORIES:
        assert "\n" not in story and story == story.strip()
        assert 3 <= len(split_sentences(story)) <= 6
        assert story.endswith(".")
    assert 100 <= len(STORY_GRAMMAR.vocabulary) <= 250


def test_every_corpus_sentence_is_grammatical():
    assert len(SENTENCES) > 1000
    rejected = [s for s in SENTENCES if not is_grammatical(s)]
    assert rejected == []
    assert grammatical_fraction(CORPUS) == 1.0


def test_stories_keep_one_hero():
    """The generator restricts the hero's name and pronoun: one name and one pronoun per story."""
    names = set(grammar.LEXICON["NAME"])
    for story in STORIES[:300]:
        words = re.findall(r"[a-z]+", story)
        assert len({w for w in words if w in names}) == 1, story
        assert len({w for w in words if w in {"she", "he"}}) <= 1, story


# ---------------------------------------------------------------------- the checker
@pytest.mark.parametrize(
    "sentence",
    [
        "the dog found a red ball.",
        "she was happy.",
        "  she was happy.\n",  # surrounding whitespace is ignored
        "once upon a time, there was an old owl named pip.",
        "lily and the owl were very happy.",
        "one day, tom went to the park.",
        "then, he ate an apple and played with it.",
        "from that day on, it was never lonely again.",
        "sam wanted to play, but he was tired.",
    ],
)
def test_grammatical_sentences_are_accepted(sentence):
    assert is_grammatical(sentence)


@pytest.mark.parametrize(
    "sentence",
    [
        "the dog found a red ball",  # no period
        "dog the found a red ball.",  # word swap
        "the dog found a ball red.",  # word swap
        "the dog found an red ball.",  # a/an
        "once upon a time, there was a owl named pip.",  # a/an
        "lily and the owl was happy.",  # agreement: two subjects take "were"
        "she was very very happy.",  # one degree word only
        "the dog found a red big ball.",  # size before colour
        "the dog ran to park.",  # missing article
        "the dgo found a red ball.",  # misspelling
        "the dog fund a red ball.",  # misspelling
        "The dog found a red ball.",  # capital letter: not canonical
        "the dog  found a red ball.",  # double space: not canonical
        "the dog found a red ball .",  # space before the period
        "the dog found a red ball.. ",  # two periods
        "the dog found a red ball. she was happy.",  # two sentences
        ".",
        "",
    ],
)
def test_garbled_sentences_are_rejected(sentence):
    assert not is_grammatical(sentence)


@settings(deadline=None, max_examples=200)
@given(st.sampled_from(SENTENCES), st.data())
def test_swapping_two_adjacent_tokens_is_rejected(sentence, data):
    tokens = tokenize_sentence(sentence)
    i = data.draw(st.integers(0, len(tokens) - 2))
    assume(tokens[i] != tokens[i + 1])
    tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
    assert not is_grammatical(grammar.render(tokens))


@settings(deadline=None, max_examples=200)
@given(st.sampled_from(SENTENCES), st.data())
def test_misspelling_a_word_is_rejected(sentence, data):
    tokens = tokenize_sentence(sentence)
    words = [i for i, t in enumerate(tokens) if t.isalpha()]
    i = data.draw(st.sampled_from(words))
    word = tokens[i]
    j = data.draw(st.integers(0, len(word)))
    letter = data.draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz"))
    edit = data.draw(st.sampled_from(["insert", "delete", "replace"]))
    if edit == "insert":
        new = word[:j] + letter + word[j:]
    elif edit == "delete":
        new = word[:j] + word[j + 1 :]
    else:
        new = word[:j] + letter + word[j + 1 :]
    assume(new and new not in STORY_GRAMMAR.vocabulary)  # "hat" -> "at" is a real word
    tokens[i] = new
    assert not is_grammatical(grammar.render(tokens))


@settings(deadline=None, max_examples=200)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["SENTENCE", "INTRO", "BODY", "ENDING"]))
def test_every_generated_sentence_is_grammatical(seed, kind):
    sentence = generate_sentence(random.Random(seed), kind)
    assert is_grammatical(sentence)
    assert STORY_GRAMMAR.recognizes(tokenize_sentence(sentence), kind)


def test_split_sentences_and_fraction_rule():
    text = "she was happy. she happy was.\n\nthe dog ran to th"
    assert split_sentences(text) == ["she was happy.", "she happy was."]
    assert grammatical_fraction(text) == 0.5  # the unfinished "the dog ran to th" is not counted
    assert grammatical_fraction("") == 0.0
    assert grammatical_fraction("no sentence ends here") == 0.0
    assert grammatical_fraction("she was happy.") == 1.0
    # a sentence that runs across a story break is one sentence, and not a grammatical one
    assert grammatical_fraction("she was\n\nhappy.") == 0.0
    assert split_sentences("a.. b.") == ["a.", ".", "b."]


def test_grammar_construction_errors():
    with pytest.raises(ValueError, match="recursive"):
        Grammar.from_text("S -> a S | b", {})
    with pytest.raises(ValueError, match="undefined nonterminals: T"):
        Grammar.from_text("S -> a T", {})
    with pytest.raises(ValueError, match="outside a-z"):
        Grammar.from_text("S -> W", {"W": ("Dog",)})
    with pytest.raises(ValueError, match="write ε"):
        Grammar.from_text("S -> a | ", {})
    with pytest.raises(ValueError, match="unknown word lists"):
        STORY_GRAMMAR.generate(random.Random(0), restrict={"NOPE": ["x"]})


def test_small_grammar_weights_a_an_and_restrictions():
    g = Grammar.from_text("S -> the N . {3} | ε | A N_V .\nA -> an", {"N": ("owl", "dog")})
    assert g.recognizes(["the", "dog", "."])
    assert g.recognizes([])
    assert g.recognizes(["an", "owl", "."])
    assert not g.recognizes(["an", "dog", "."])
    rng = random.Random(0)
    for _ in range(20):
        out = g.generate(rng, restrict={"N": ["dog"]})
        assert out in ([], ["the", "dog", "."])  # "an N_V" has no word left, so it is skipped


def test_cli_check_and_write(tmp_path, capsys):
    out = tmp_path / "small.txt"
    assert grammar.main(["--out", str(out), "--stories", "5", "--seed", "3"]) == 0
    assert "5 stories" in capsys.readouterr().out
    assert out.read_text(encoding="utf-8") == generate_corpus(3, 5)
    assert grammar.main(["--check", "--out", str(out), "--stories", "5", "--seed", "3"]) == 0
    assert grammar.main(["--check", "--out", str(out), "--stories", "5", "--seed", "4"]) == 1
    assert "DIFFERS" in capsys.readouterr().out
    with pytest.raises(ValueError, match="at least 1"):
        generate_corpus(0, 0)


# ---------------------------------------------------------------------- load_text
def test_load_text_normalises_line_endings_and_bom(tmp_path):
    p = tmp_path / "mine.txt"
    p.write_bytes("\ufeffhello\r\nwörld\rend\n".encode())
    assert load_text(p) == "hello\nwörld\nend\n"
    assert load_text(str(p)) == "hello\nwörld\nend\n"


def test_load_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file at .*nope.txt"):
        load_text(tmp_path / "nope.txt")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_text(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        load_text(empty)
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\n ")
    with pytest.raises(ValueError, match="only whitespace"):
        load_text(blank)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(
        ValueError, match=r"not valid utf-8 text: the byte 0xe9 at offset 3.*latin-1"
    ):
        load_text(latin)
    assert load_text(latin, encoding="latin-1") == "café"


# ---------------------------------------------------------------------- batches
def test_train_val_split():
    train, val = train_val_split(list(range(100)), val_fraction=0.1)
    assert train.dtype == val.dtype == torch.int64
    assert torch.equal(train, torch.arange(90)) and torch.equal(val, torch.arange(90, 100))
    train, val = train_val_split(torch.arange(3), val_fraction=0.01)
    assert len(train) == 2 and len(val) == 1  # both parts keep a token
    with pytest.raises(ValueError, match="between 0 and 1"):
        train_val_split([1, 2, 3], val_fraction=1.0)
    with pytest.raises(ValueError, match="cannot split 1 token"):
        train_val_split([1])
    with pytest.raises(TypeError, match="encode it first"):
        train_val_split("some text")
    with pytest.raises(TypeError, match="integer token ids"):
        train_val_split(torch.rand(10))
    with pytest.raises(ValueError, match="1-D"):
        train_val_split(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        train_val_split([])


def test_get_batch_shapes_shift_and_determinism():
    data = torch.arange(1000)
    x, y = get_batch(
        data, batch_size=4, context_length=16, generator=torch.Generator().manual_seed(0)
    )
    assert x.shape == y.shape == (4, 16)
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    x2, _ = get_batch(data, 4, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    x3, _ = get_batch(data.tolist(), 4, 16, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(x, x3)
    # exactly T + 1 tokens: one possible window
    x, y = get_batch(torch.arange(9), 3, 8)
    assert torch.equal(x, torch.arange(8).expand(3, 8)) and torch.equal(y, x + 1)


def test_get_batch_errors():
    with pytest.raises(ValueError, match=r"data has 8 tokens.*context_length=8 needs 9"):
        get_batch(torch.arange(8), 2, 8)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        get_batch(torch.arange(100), 0, 8)
    with pytest.raises(ValueError, match="context_length must be a positive int"):
        get_batch(torch.arange(100), 2, 0)
    with pytest.raises(TypeError, match="encode it first"):
        get_batch("hello world", 2, 4)


@settings(deadline=None, max_examples=50)
@given(n=st.integers(2, 300), batch_size=st.integers(1, 8), data=st.data())
def test_get_batch_windows_are_slices_of_the_data(n, batch_size, data):
    context_length = data.draw(st.integers(1, n - 1))
    tokens = torch.arange(n) * 7 % 1009  # distinct values, so a window identifies its position
    x, y = get_batch(tokens, batch_size, context_length)
    for row_x, row_y in zip(x, y, strict=True):
        start = int((tokens == row_x[0]).nonzero()[0])
        assert torch.equal(row_x, tokens[start : start + context_length])
        assert torch.equal(row_y, tokens[start + 1 : start + context_length + 1])


@settings(deadline=None, max_examples=50)
@given(n=st.integers(2, 200), data=st.data())
def test_token_dataset_windows(n, data):
    context_length = data.draw(st.integers(1, n - 1))
    stride = data.draw(st.integers(1, 2 * context_length))
    ds = TokenDataset(torch.arange(n), context_length, stride)
    starts = [s for s in range(0, n, stride) if s + context_length + 1 <= n]
    assert len(ds) == len(starts)
    for i, s in enumerate(starts):
        x, y = ds[i]
        assert torch.equal(x, torch.arange(s, s + context_length))
        assert torch.equal(y, x + 1)
    assert torch.equal(ds[-1][0], ds[len(ds) - 1][0])


def test_token_dataset_with_dataloader_and_errors():
    ds = TokenDataset(list(range(101)), context_length=10)
    assert len(ds) == 10
    assert "10 windows" in repr(ds)
    x, y = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert x.shape == y.shape == (4, 10) and x.dtype == torch.int64
    assert torch.equal(x[1], torch.arange(10, 20))
    with pytest.raises(IndexError, match="out of range"):
        ds[10]
    with pytest.raises(ValueError, match="needs 11"):
        TokenDataset(torch.arange(10), 10)
    with pytest.raises(ValueError, match="stride must be a positive int"):
        TokenDataset(torch.arange(100), 10, stride=0)


# ---------------------------------------------------------------------- synthetic tasks
def _rows(src: torch.Tensor, tgt: torch.Tensor) -> list[tuple[str, str]]:
    return [
        (SYNTHETIC_VOCAB.decode(s), SYNTHETIC_VOCAB.decode(t))
        for s, t in zip(src, tgt, strict=True)
    ]


@pytest.mark.parametrize(
    ("task", "answer"),
    [
        (copy_task, lambda s: s),
        (reverse_task, lambda s: s[::-1]),
        (sort_task, lambda s: "".join(sorted(s))),
    ],
)
def test_sequence_tasks(task, answer):
    src, tgt = task(64, min_len=2, max_len=7, generator=torch.Generator().manual_seed(0))
    assert src.shape == (64, 8) and tgt.shape == (64, 9)
    assert src.dtype == tgt.dtype == torch.int64
    v = SYNTHETIC_VOCAB
    assert (tgt[:, 0] == v.BOS).all()
    for s, t in _rows(src, tgt):
        assert 2 <= len(s) <= 7 and s.isdigit()
        assert t == answer(s)
    lengths = (src != v.PAD).sum(1) - 1  # digits before <eos>
    assert set(lengths.tolist()) > {2, 7}  # lengths vary inside a batch
    for row, n in zip(src, lengths.tolist(), strict=True):
        assert (
            row[n] == v.EOS and (row[n + 1 :] == v.PAD).all() and (row[:n] >= v.FIRST_DIGIT).all()
        )
    for row, n in zip(tgt, lengths.tolist(), strict=True):
        assert row[n + 1] == v.EOS and (row[n + 2 :] == v.PAD).all()


def test_tasks_are_deterministic_given_a_generator():
    for name, task in SYNTHETIC_TASKS.items():
        a = task(8, generator=torch.Generator().manual_seed(5))
        b = task(8, generator=torch.Generator().manual_seed(5))
        c = task(8, generator=torch.Generator().manual_seed(6))
        assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True)), name
        assert not torch.equal(a[0], c[0]), name


def test_addition_task():
    src, tgt = addition_task(50, max_digits=3, generator=torch.Generator().manual_seed(0))
    assert src.shape == (50, 8) and tgt.shape == (50, 6)
    for s, t in _rows(src, tgt):
        a, b = s.split("+")
        assert int(a) + int(b) == int(t)
        assert len(a) <= 3 and len(b) <= 3
    src2, tgt2 = addition_task(50, 3, torch.Generator().manual_seed(0), reverse_answer=True)
    assert torch.equal(src, src2)
    for (_, t), (_, t2) in zip(_rows(src, tgt), _rows(src2, tgt2), strict=True):
        assert t2 == t[::-1]
    with pytest.raises(ValueError, match="at most 18"):
        addition_task(2, max_digits=19)


def test_task_argument_errors():
    with pytest.raises(ValueError, match=r"min_len \(5\) must not exceed max_len \(3\)"):
        copy_task(4, min_len=5, max_len=3)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        reverse_task(0)


def test_synthetic_vocab():
    v = SYNTHETIC_VOCAB
    assert v.vocab_size == len(v) == 14
    assert (v.PAD, v.BOS, v.EOS) == (0, 1, 2)
    assert v.encode("12+3") == [4, 5, 13, 6]
    ids = [v.BOS, *v.encode("12"), v.EOS, v.PAD, 7]
    assert v.decode(ids) == "12"
    assert v.decode(ids, skip_special=False) == "<bos>12<eos>"
    assert v.decode(ids, skip_special=False, stop_at_eos=False) == "<bos>12<eos><pad>4"
    assert v.decode(torch.tensor(ids)) == "12"
    with pytest.raises(ValueError, match="only digits and '\\+'"):
        v.encode("1a")
    with pytest.raises(ValueError, match="outside this tokenizer.s vocabulary"):
        v.decode([14])
    with pytest.raises(ValueError, match="1-D"):
        v.decode(torch.zeros(2, 2, dtype=torch.long))


def test_repeated_random_sequences():
    x = repeated_random_sequences(16, 20, vocab_size=50, generator=torch.Generator().manual_seed(0))
    assert x.shape == (16, 20) and x.dtype == torch.int64
    assert torch.equal(x[:, :10], x[:, 10:])
    assert 0 <= int(x.min()) and int(x.max()) < 50
    y = repeated_random_sequences(16, 20, 50, torch.Generator().manual_seed(0))
    assert torch.equal(x, y)
    with pytest.raises(ValueError, match="seq_len must be even"):
        repeated_random_sequences(2, 7, 10)
    with pytest.raises(ValueError, match="vocab_size must be a positive int"):
        repeated_random_sequences(2, 8, 0)
