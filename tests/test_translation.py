"""The translation task (attention_book.translation): English of the story grammar into Tolan.

Every generated pair is valid, the checker rejects a wrong word order and a wrong agreement (and
says which), the generator is deterministic by seed, the held-out split holds, and the shared
vocabulary encodes and decodes both languages.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from attention_book.grammar import STORY_GRAMMAR, is_grammatical, render, tokenize_sentence
from attention_book.translation import (
    NOUNS,
    Pair,
    TranslationVocab,
    alignment,
    check_translation,
    generate_pair,
    generate_pairs,
    gloss,
    is_held_out,
    is_valid_translation,
    parse,
    references,
    sample_tree,
    translate_tree,
    tree_words,
)


@pytest.fixture(scope="module")
def pairs() -> list[Pair]:
    return [p for seed in range(3) for p in generate_pairs(1500, seed=seed)]


# ---------------------------------------------------------------------- worked by hand
HAND_WORKED = {
    # verb last; the place (postposition, dative) before the object (accusative); adjective after
    "lily found a red ball in the park.": "lily ker parken en mon bol rudo trovet.",
    # two adjectives in mirror order; the subject's article nominative, the object's accusative
    "the dog saw a big red ball.": "ko vask mon bol rudo grodo videt.",
    # gave X to Y -> Y (dative) X (accusative) gave
    "then the old mouse gave his new cup to the kind bee.": "tiam ka mus vela kar bizen dulka tas nova sol donet.",
    # the because-clause moves to the front; the predicate adjective agrees with "he" (masculine)
    "he was sad because lily went home.": "pro lily hejmen iret, su tristo eset.",
    # a plural subject: plural adjective and verb
    "tom and the cat were very happy.": "tom kaj ka mirel tre feli esen.",
    # "named" agrees with the hero noun: an owl is neuter
    "once upon a time, there was an owl named pip.": "antaulonge, jen me hulo pip nomite eset.",
    # wanted to + infinitive, verb last in both clauses
    "she wanted to play with the ball, but she was scared.": "sa kor bol kun ludar volet, sed sa tremba eset.",
    "it was a good day.": "mo tag bono eset.",
}


@pytest.mark.parametrize("english", sorted(HAND_WORKED))
def test_hand_worked_translations(english):
    assert is_grammatical(english)
    assert references(english) == [HAND_WORKED[english]]
    assert check_translation(english, HAND_WORKED[english]).ok


# ---------------------------------------------------------------------- every pair is valid
def test_every_generated_pair_is_valid(pairs):
    for p in pairs:
        assert is_grammatical(p.english), p.english
        assert is_valid_translation(p.english, p.tolan), (p.english, p.tolan, references(p.english))
        verdict = check_translation(p.english, p.tolan)
        assert verdict.ok and verdict.reason == "correct"


def test_every_rule_of_the_sentence_grammar_is_translated(pairs):
    """The sample uses every alternative of INTRO, BODY and ENDING, so each transfer rule ran."""
    used = Counter()
    rng = random.Random(5)
    for _ in range(6000):
        clause = sample_tree(rng)[1][0]
        used[(clause[0], tuple(c if isinstance(c, str) else c[0] for c in clause[1]))] += 1
    for kind in ("INTRO", "BODY", "ENDING"):
        for rhs, _ in STORY_GRAMMAR.rules[kind]:
            assert used[(kind, rhs)] > 0, f"{kind} -> {' '.join(rhs)} never sampled"


def test_the_tree_sampler_writes_the_grammar_and_parse_finds_the_tree():
    rng = random.Random(1)
    for _ in range(300):
        tree = sample_tree(rng)
        words = tree_words(tree)
        assert STORY_GRAMMAR.recognizes(words)
        assert tree in parse(words)
        assert render(translate_tree(tree)) in references(render(words))


def test_parse_rejects_what_the_grammar_does_not_derive():
    assert parse("found the dog a ball.") == []
    assert parse("the dog found an red ball.") == []
    assert references("Lily found a ball.") == []
    verdict = check_translation("found the dog a ball.", "ko vask trovet.")
    assert not verdict.ok and verdict.reason == "not a sentence of the story grammar"


# ---------------------------------------------------------------------- the checker rejects
ARTICLES = {k + g + c for k in "km" for g in "oae" for c in ("", "n", "r")}


def test_the_checker_rejects_a_wrong_word_order(pairs):
    english = "lily found a red ball in the park."
    right = references(english)[0]
    for wrong in (
        "lily trovet ker parken en mon bol rudo.",  # verb second, as in English
        "lily mon bol rudo ker parken en trovet.",  # object before the place
        "lily ker parken en mon rudo bol trovet.",  # adjective before the noun
    ):
        verdict = check_translation(english, wrong)
        assert not verdict.ok and verdict.reason == "wrong word order", wrong
        assert verdict.reference == right
    # and on generated pairs: the verb moved to second place is always caught
    checked = 0
    for p in pairs:
        tokens = tokenize_sentence(p.tolan)
        if len(tokens) < 5 or tokens[-2] == tokens[1]:
            continue
        moved = render([tokens[0], tokens[-2], *tokens[1:-2], tokens[-1]])
        if moved in references(p.english):
            continue
        verdict = check_translation(p.english, moved)
        assert not verdict.ok and verdict.reason == "wrong word order", (p, moved)
        checked += 1
    assert checked > 1000


def test_the_checker_rejects_a_wrong_agreement(pairs):
    english = "lily found a red ball in the park."
    for wrong in (
        "lily ker parken en man bol rudo trovet.",  # article feminine, "ball" is masculine
        "lily ker parken en mo bol rudo trovet.",  # article nominative: it is the object
        "lily ker parken en mon bol ruda trovet.",  # adjective feminine
        "lily kor parken en mon bol rudo trovet.",  # "park" is neuter
        "lily ker parken en mon bol rudo troven.",  # plural verb, singular subject
    ):
        verdict = check_translation(english, wrong)
        assert not verdict.ok and verdict.reason == "wrong agreement", wrong
    # on generated pairs: any article switched to another gender is caught
    checked = 0
    swap = {"o": "a", "a": "e", "e": "o"}
    for p in pairs:
        tokens = tokenize_sentence(p.tolan)
        j = next((j for j, t in enumerate(tokens) if t in ARTICLES), None)
        if j is None:
            continue
        wrong = list(tokens)
        wrong[j] = tokens[j][0] + swap[tokens[j][1]] + tokens[j][2:]
        verdict = check_translation(p.english, render(wrong))
        assert not verdict.ok and verdict.reason == "wrong agreement", (p, wrong)
        checked += 1
    assert checked > 1000


def test_the_word_by_word_gloss_is_rejected(pairs):
    """Word-by-word is wrong but for a few of the shortest ("soon, he played." -> "baldau, su ludet.")."""
    right = [p for p in pairs[:1000] if check_translation(p.english, gloss(p.english)).ok]
    assert len(right) < 20 and all(p.length <= 5 for p in right)


def test_the_checker_names_other_mistakes_wrong_words():
    english = "lily found a red ball in the park."
    verdict = check_translation(english, "lily ker parken en mon bol verdo trovet.")
    assert not verdict.ok and verdict.reason == "wrong words"
    verdict = check_translation(english, "lily ker parken en mon bol rudo.")
    assert not verdict.ok and verdict.reason == "wrong words"


# ---------------------------------------------------------------------- the language itself
def test_tolan_has_its_own_words():
    """Only names and punctuation are shared; every inflected form is one word only."""
    tolan = set(TranslationVocab.tolan().tokens)
    english = set(STORY_GRAMMAR.vocabulary)
    names = set(STORY_GRAMMAR.rules["NAME"] and [r[0] for r, _ in STORY_GRAMMAR.rules["NAME"]])
    assert tolan & english == names | {",", "."}
    assert len({n for n, _ in NOUNS.values()}) == len(NOUNS)


def test_nouns_have_genders_english_does_not_show():
    genders = Counter(g for _, g in NOUNS.values())
    assert set(genders) == {"m", "f", "n"} and min(genders.values()) >= 15


def test_translations_reorder(pairs):
    """Not a word-for-word copy: in most pairs some content words cross (a non-monotone alignment)."""
    crossing = 0
    for p in pairs[:1000]:
        links = sorted(alignment(p.english, p.tolan))
        english_order = [i for _, i in links]
        crossing += english_order != sorted(english_order)
    assert crossing > 600


def test_alignment_links_content_words():
    english = "lily found a red ball in the park."
    links = alignment(english, references(english)[0])
    # lily-lily, parken-park, en-in, bol-ball, rudo-red, trovet-found
    assert links == [(0, 0), (2, 7), (3, 5), (5, 4), (6, 3), (7, 1)]


# ---------------------------------------------------------------------- determinism and splits
def test_generation_is_deterministic_by_seed():
    assert generate_pairs(200, seed=7) == generate_pairs(200, seed=7)
    assert generate_pairs(200, seed=7) != generate_pairs(200, seed=8)
    a, b = random.Random(3), random.Random(3)
    assert [generate_pair(a) for _ in range(50)] == [generate_pair(b) for _ in range(50)]
    state = random.getstate()
    generate_pairs(20, seed=1)
    assert random.getstate() == state  # the global random state is left alone


def test_splits_and_lengths():
    train = generate_pairs(400, seed=0, split="train", max_tokens=12)
    test = generate_pairs(200, seed=0, split="test")
    assert not any(is_held_out(p.english) for p in train)
    assert all(is_held_out(p.english) for p in test)
    assert max(p.length for p in train) <= 12
    long = generate_pairs(50, seed=0, min_tokens=15)
    assert min(p.length for p in long) >= 15
    unique = generate_pairs(300, seed=0, unique=True)
    assert len({p.english for p in unique}) == 300
    share = sum(is_held_out(p.english) for p in generate_pairs(3000, seed=4, unique=True)) / 3000
    assert 0.07 < share < 0.13
    with pytest.raises(ValueError, match="split"):
        generate_pairs(3, split="valid")
    with pytest.raises(ValueError, match="too few"):
        generate_pairs(5, seed=0, min_tokens=40)


# ---------------------------------------------------------------------- the vocabulary
def test_vocabulary_round_trip_and_batches(pairs):
    vocab = TranslationVocab()
    assert vocab.tokens[:3] == ("<pad>", "<bos>", "<eos>")
    for p in pairs[:200]:
        assert vocab.decode(vocab.encode(p.english)) == p.english
        assert vocab.decode(vocab.encode(p.tolan, bos=True)) == p.tolan
    src, tgt = vocab.batch(pairs[:8])
    assert src.dtype == tgt.dtype == torch.long and src.shape[0] == tgt.shape[0] == 8
    assert (tgt[:, 0] == vocab.BOS).all()
    assert ((src == vocab.EOS).sum(1) == 1).all() and ((tgt == vocab.EOS).sum(1) == 1).all()
    # separate vocabularies: English ids for the source, Tolan ids for the target
    en, to = TranslationVocab.english(), TranslationVocab.tolan()
    src2, tgt2 = en.batch(pairs[:8], to)
    assert int(src2.max()) < en.vocab_size and int(tgt2.max()) < to.vocab_size
    assert [to.decode(t) for t in tgt2] == [p.tolan for p in pairs[:8]]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        to.encode("lily found a ball.")
