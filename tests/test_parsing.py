"""Constituency parsing (attention_book.parsing): linearisation after Vinyals et al., its inverse,
and PARSEVAL-style labelled bracket scores, checked on trees worked by hand."""

from __future__ import annotations

import random

import pytest

from attention_book.grammar import render
from attention_book.parsing import (
    ROOT,
    BracketScore,
    ParseVocab,
    brackets,
    canonical_tree,
    delinearise,
    generate_parses,
    gold_trees,
    is_well_formed,
    linearise,
    parseval,
    phrase_labels,
    sentence_score,
    strip_tree,
)
from attention_book.translation import is_held_out, parse, sample_tree, tree_words

SENTENCE = "lily found a red ball."
# the grammar's derivation, part-of-speech level and empty constituents included
DERIVATION = (
    "SENTENCE",
    ((
        "BODY",
        (
            ("OPENER", ()),
            ("SUBJ", (("NAME", ("lily",)),)),
            ("VP", (
                ("V_THING", ("found",)),
                ("THING_OBJ", ("a", ("THING_C", (("ADJ_THING_C", ("red",)), ("N_THING", ("ball",)))))),
                ("WHERE", ()),
            )),
            ".",
        ),
    ),),
)
# stripped: words in place of the word lists, no empty OPENER / WHERE
STRIPPED = (
    "SENTENCE",
    (("BODY", (("SUBJ", ("lily",)), ("VP", ("found", ("THING_OBJ", ("a", ("THING_C", ("red", "ball")))))), ".")),),
)
LINEAR = "(SENTENCE (BODY (SUBJ XX )SUBJ (VP XX (THING_OBJ XX (THING_C XX XX )THING_C )THING_OBJ )VP XX )BODY )SENTENCE"


def test_the_hand_worked_tree_is_the_grammars():
    assert DERIVATION in parse(SENTENCE)
    assert strip_tree(DERIVATION) == STRIPPED
    assert canonical_tree(SENTENCE) == STRIPPED


def test_linearise_by_hand():
    assert " ".join(linearise(DERIVATION)) == LINEAR
    assert linearise(DERIVATION, words=True)[:4] == ["(SENTENCE", "(BODY", "(SUBJ", "lily"]
    assert linearise(STRIPPED) == linearise(DERIVATION)  # stripping twice changes nothing


def test_brackets_by_hand():
    # words: lily 0, found 1, a 2, red 3, ball 4; the "." does not count; the root is not scored
    assert brackets(STRIPPED) == {
        ("BODY", 0, 5): 1, ("SUBJ", 0, 1): 1, ("VP", 1, 5): 1, ("THING_OBJ", 2, 5): 1, ("THING_C", 3, 5): 1,
    }


def test_perfect_parse_scores_100():
    s = parseval([STRIPPED], [delinearise(LINEAR, SENTENCE)])
    assert (s.precision, s.recall, s.f1, s.exact_match, s.n_exact) == (100.0, 100.0, 100.0, 100.0, 1)


def test_one_wrong_bracket_by_hand():
    # THING_C over "a red ball" instead of "red ball": 4 of 5 brackets right on both sides
    wrong = "(SENTENCE (BODY (SUBJ XX )SUBJ (VP XX (THING_OBJ (THING_C XX XX XX )THING_C )THING_OBJ )VP XX )BODY )SENTENCE"
    s = parseval([STRIPPED], [delinearise(wrong, SENTENCE, repair=False)])
    assert (s.matched, s.gold, s.predicted) == (4, 5, 5)
    assert s.precision == pytest.approx(80.0) and s.recall == pytest.approx(80.0)
    assert s.f1 == pytest.approx(80.0) and s.n_exact == 0
    # a bracket missing: precision 4/4, recall 4/5, F1 = 2 * 1 * 0.8 / 1.8
    missing = "(SENTENCE (BODY (SUBJ XX )SUBJ (VP XX (THING_OBJ XX XX XX )THING_OBJ )VP XX )BODY )SENTENCE"
    s = parseval([STRIPPED], [delinearise(missing, SENTENCE, repair=False)])
    assert (s.precision, s.recall) == (100.0, 80.0)
    assert s.f1 == pytest.approx(800 / 9)


def test_a_wrong_label_is_a_wrong_bracket():
    relabel = LINEAR.replace("(SUBJ XX )SUBJ", "(TIME XX )TIME")
    s = parseval([STRIPPED], [delinearise(relabel, SENTENCE, repair=False)])
    assert (s.matched, s.predicted, s.gold) == (4, 5, 5)


def test_punctuation_does_not_move_a_bracket():
    # the "." attached under the VP instead of the BODY: the same spans once punctuation is left out
    moved = "(SENTENCE (BODY (SUBJ XX )SUBJ (VP XX (THING_OBJ XX (THING_C XX XX )THING_C )THING_OBJ XX )VP )BODY )SENTENCE"
    s = parseval([STRIPPED], [delinearise(moved, SENTENCE, repair=False)])
    assert s.f1 == 100.0 and s.n_exact == 1


@pytest.mark.parametrize("prediction", ["", "XX XX", ")VP )VP )SUBJ", "(SENTENCE )SENTENCE"])
def test_empty_or_garbled_predictions_score_0(prediction):
    tree = delinearise(prediction, SENTENCE)  # repaired into a root over the bare words
    assert tree_words(tree) == ["lily", "found", "a", "red", "ball", "."]
    s = parseval([STRIPPED], [tree])
    assert (s.predicted, s.matched, s.f1, s.n_exact) == (0, 0, 0.0, 0)
    assert not is_well_formed(prediction.split(), 6)


def test_micro_average_over_sentences():
    other = canonical_tree("she was glad.")  # (BODY (SUBJ she) was glad .): two brackets
    a = parseval([STRIPPED, other], [STRIPPED, delinearise("", "she was glad.")])
    assert (a.matched, a.gold, a.predicted, a.n_exact, a.sentences) == (5, 7, 5, 1, 2)
    assert a.recall == pytest.approx(500 / 7) and a.exact_match == 50.0
    assert a == sentence_score(STRIPPED, STRIPPED) + sentence_score(other, delinearise("", "she was glad."))


def test_an_ambiguous_sentence_is_scored_against_its_best_derivation():
    golds = gold_trees("she was glad.")  # a BODY or an ENDING
    assert {t[1][0][0] for t in golds} == {"BODY", "ENDING"}
    for g in golds:
        assert parseval([golds], [g]).f1 == 100.0
    assert parseval([golds[:1]], [golds[1]]).f1 < 100.0


def test_repairs():
    # unclosed brackets are closed at the end
    assert delinearise(LINEAR.rsplit(" )BODY", 1)[0], SENTENCE) == STRIPPED
    # a closing label that differs closes the open bracket
    assert delinearise(LINEAR.replace(")THING_C", ")VP", 1), SENTENCE) == STRIPPED
    # a closing bracket with nothing open is dropped
    assert delinearise(")TIME " + LINEAR, SENTENCE) == STRIPPED
    # extra XX dropped, missing words appended to the root
    assert tree_words(delinearise(LINEAR.replace(")SUBJ", "XX XX )SUBJ"), SENTENCE)) == tree_words(STRIPPED)
    short = delinearise("(SENTENCE (BODY (SUBJ XX )SUBJ )BODY )SENTENCE", SENTENCE)
    assert short == (ROOT, (("BODY", (("SUBJ", ("lily",)),)), "found", "a", "red", "ball", "."))
    # two top-level trees go under one root
    two = delinearise("(SUBJ XX )SUBJ (VP XX XX XX XX XX )VP", SENTENCE)
    assert two[0] == ROOT and [c[0] for c in two[1]] == ["SUBJ", "VP"]


@pytest.mark.parametrize("bad", [
    LINEAR.rsplit(" )BODY", 1)[0],
    LINEAR.replace(")THING_C", ")VP", 1),
    ")TIME " + LINEAR,
    LINEAR.replace(")SUBJ", "XX )SUBJ"),
    LINEAR.replace("XX )SUBJ", ")SUBJ"),
    "(SUBJ XX )SUBJ (VP XX XX XX XX XX )VP",
])
def test_strict_mode_rejects_ill_formed_sequences(bad):
    assert not is_well_formed(bad.split(), 6)
    with pytest.raises(ValueError, match="ill-formed"):
        delinearise(bad, SENTENCE, repair=False)


def test_bad_input_gets_clear_errors():
    with pytest.raises(TypeError, match="label, children"):
        linearise("lily")
    with pytest.raises(ValueError, match="no constituent with words"):
        strip_tree(("OPENER", ()))
    with pytest.raises(ValueError, match="not a sentence of the story grammar"):
        gold_trees("lily found a red dragon.")
    with pytest.raises(ValueError, match="different words"):
        parseval([STRIPPED], [canonical_tree("she was glad.")])
    with pytest.raises(ValueError, match="1 gold trees but 2"):
        parseval([STRIPPED], [STRIPPED, STRIPPED])
    with pytest.raises(ValueError, match="empty or unreadable"):
        delinearise(LINEAR, "")
    with pytest.raises(ValueError, match="split must be"):
        generate_parses(3, split="dev")


def test_round_trip_of_generated_trees():
    rng = random.Random(0)
    for _ in range(500):
        t = sample_tree(rng)
        words = tree_words(t)
        for keep_words in (False, True):
            tokens = linearise(t, words=keep_words)
            assert is_well_formed(tokens, len(words))
            assert delinearise(tokens, words, repair=False) == strip_tree(t)
        assert parseval([t], [strip_tree(t)]).f1 == 100.0


def test_generated_parses_respect_the_split_and_the_lengths():
    train = generate_parses(300, seed=1, split="train", max_tokens=12)
    test = generate_parses(100, seed=2, split="test", min_tokens=13)
    assert not any(is_held_out(e.sentence) for e in train)
    assert all(is_held_out(e.sentence) for e in test)
    assert max(e.length for e in train) <= 12 < min(e.length for e in test)
    assert all(render(tree_words(e.tree)) == e.sentence for e in train)
    assert generate_parses(50, seed=1) == generate_parses(50, seed=1)


def test_the_vocabulary_encodes_every_tree():
    vocab = ParseVocab()
    assert vocab.tokens[:4] == ("<pad>", "<bos>", "<eos>", "XX")
    assert vocab.vocab_size == 4 + 2 * len(phrase_labels())
    examples = generate_parses(200, seed=3)
    batch = vocab.batch([e.tree for e in examples])
    for row, e in zip(batch, examples, strict=True):
        assert vocab.decode(row) == linearise(e.tree)
    assert ParseVocab(words=True).decode(ParseVocab(words=True).encode(STRIPPED))[3] == "lily"


def test_score_percentages_handle_nothing():
    assert BracketScore(0, 0, 0, 0, 0).f1 == 0.0
    assert BracketScore(0, 0, 0, 0, 0).exact_match == 0.0
