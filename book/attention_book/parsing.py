"""Constituency parsing of the story sentences: the paper's second task (section 6.3).

"Attention Is All You Need" also trains its model to parse English: the input is a sentence, the
output its constituency tree written as a sequence of tokens, after Vinyals et al. (2015, *Grammar
as a Foreign Language*). The story grammar (:mod:`attention_book.grammar`) gives every sentence its
exact trees (:func:`attention_book.translation.parse`), so the book can score a parser against the
truth. This module holds the three pieces such an experiment needs:

* **linearise** a tree as Vinyals et al. do: a depth-first walk that writes ``(LABEL`` on entering a
  constituent and ``)LABEL`` on leaving it, and each word as ``XX``::

      lily found a red ball.
      (SENTENCE (BODY (SUBJ XX )SUBJ (VP XX (THING_OBJ XX (THING (THING_C XX XX )THING_C )THING
      )THING_OBJ )VP XX )BODY )SENTENCE

  ``XX`` stands for the word (``words=True`` keeps the words instead). Vinyals et al. wrote ``XX``
  for the part-of-speech tags, which the standard scorer (evalb) does not score; the output then
  holds the structure and nothing else, a vocabulary of brackets, and the decoder must count the
  words, which its cross-attention can do. The book does the same: the grammar's word lists
  (``N_THING``, ``NAME``, ...) are its part-of-speech tags, left out like Vinyals's;
* **de-linearise** a predicted sequence back into a tree over the sentence's words, repairing what a
  model may get wrong (:func:`delinearise` says how) or rejecting it (``repair=False``);
* **score** it PARSEVAL-style with evalb's conventions (:func:`parseval`): labelled brackets
  ``(label, start, end)``, the root and the part-of-speech level not scored, punctuation left out of
  the word positions, precision, recall and F1 micro-averaged over the test set, and exact match
  (evalb's "complete match": every bracket right, none extra).

Choices, and why:

* **Unary chains are kept.** ``THING -> THING_C -> N_THING_C`` gives two brackets over the same
  words, ``THING`` and ``THING_C``; both are scored, as evalb scores every labelled bracket (a
  multiset: two brackets of one label over one span count twice). Collapsing them would throw away
  part of the grammar's derivation (``THING_C``: the noun phrase starts with a consonant).
* **Empty constituents are dropped** (``OPENER``, ``WHERE``, ``HOW_LONG``, ``DEGREE`` deriving
  nothing): they cover no word, and evalb ignores them too.
* **Ambiguous sentences.** A sixth of the grammar's sentences have more than one derivation
  ("she was happy." is a BODY or an ENDING). A parser sees only the sentence, so any of its
  derivations is right: :func:`gold_trees` returns them all and :func:`parseval` scores each
  prediction against the one it matches best. Training targets use one fixed derivation per
  sentence, :func:`canonical_tree` (the first linearisation in sorted order).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .grammar import STORY_GRAMMAR, render, tokenize_sentence
from .translation import Tree, is_held_out, parse, sample_tree, tree_words

__all__ = [
    "PUNCTUATION",
    "ROOT",
    "WORD",
    "BracketScore",
    "ParseExample",
    "ParseVocab",
    "brackets",
    "canonical_tree",
    "delinearise",
    "generate_parses",
    "gold_trees",
    "is_well_formed",
    "linearise",
    "parseval",
    "phrase_labels",
    "predict_trees",
    "sentence_score",
    "strip_tree",
]

ROOT = "SENTENCE"
WORD = "XX"
PUNCTUATION = frozenset({",", "."})


# ---------------------------------------------------------------------- trees
def _check_tree(tree: object, where: str = "tree") -> None:
    if not (
        isinstance(tree, tuple)
        and len(tree) == 2
        and isinstance(tree[0], str)
        and isinstance(tree[1], tuple)
    ):
        raise TypeError(f"{where} must be a (label, children) tuple, got {tree!r:.80}")
    for child in tree[1]:
        if not isinstance(child, str):
            _check_tree(child, where)


def strip_tree(tree: Tree) -> Tree:
    """The tree a parser is asked for: the grammar's derivation without its part-of-speech level
    (a word list's node, ``("NAME", ("lily",))``, becomes its word) and without empty constituents.
    Raises ``ValueError`` if nothing is left (a tree with no words)."""
    _check_tree(tree)

    def walk(node: Tree | str) -> Tree | str | None:
        if isinstance(node, str):
            return node
        label, children = node
        if label in STORY_GRAMMAR.lexical:  # a part-of-speech node: keep its word only
            if len(children) != 1 or not isinstance(children[0], str):
                raise ValueError(f"the word list {label} should hold one word, got {children!r}")
            return children[0]
        kept = tuple(k for k in (walk(c) for c in children) if k is not None)
        return (label, kept) if kept else None

    out = walk(tree)
    if out is None or isinstance(out, str):
        raise ValueError(f"the tree {tree!r:.80} has no constituent with words")
    return out


def phrase_labels() -> tuple[str, ...]:
    """The grammar's constituent labels (its nonterminals that are not word lists), sorted."""
    return tuple(sorted(nt for nt in STORY_GRAMMAR.rules if nt not in STORY_GRAMMAR.lexical))


def gold_trees(sentence: str | Sequence[str]) -> list[Tree]:
    """Every stripped derivation of a sentence of the story grammar, distinct, sorted by their
    linearisation. Raises ``ValueError`` when the grammar does not derive the sentence."""
    trees = parse(sentence)
    if not trees:
        raise ValueError(f"not a sentence of the story grammar: {sentence!r}")
    unique = {tuple(linearise(t, words=True)): strip_tree(t) for t in trees}
    return [unique[k] for k in sorted(unique)]


def canonical_tree(sentence: str | Sequence[str]) -> Tree:
    """The one derivation the book trains on: the first of :func:`gold_trees`."""
    return gold_trees(sentence)[0]


# ---------------------------------------------------------------------- linearise
def linearise(tree: Tree, words: bool = False) -> list[str]:
    """A tree -> Vinyals et al.'s token sequence: ``(LABEL`` ... ``)LABEL`` around each
    constituent, each word as ``XX`` (or itself with ``words=True``). The tree is stripped first
    (:func:`strip_tree`): part-of-speech nodes and empty constituents do not appear."""
    out: list[str] = []

    def walk(node: Tree | str) -> None:
        if isinstance(node, str):
            out.append(node if words else WORD)
            return
        out.append("(" + node[0])
        for child in node[1]:
            walk(child)
        out.append(")" + node[0])

    walk(strip_tree(tree))
    return out


def _token_kind(token: str) -> tuple[str, str]:
    if token.startswith("(") and len(token) > 1:
        return "open", token[1:]
    if token.startswith(")") and len(token) > 1:
        return "close", token[1:]
    return "word", token


def is_well_formed(tokens: Sequence[str], n_words: int) -> bool:
    """Does the sequence de-linearise without repair? One root, every bracket closed by its own
    label, and exactly ``n_words`` words (``XX`` or words), all inside the root."""
    depth, roots, words, stack = 0, 0, 0, []
    for tok in tokens:
        kind, label = _token_kind(tok)
        if kind == "open":
            if depth == 0:
                roots += 1
            stack.append(label)
            depth += 1
        elif kind == "close":
            if not stack or stack.pop() != label:
                return False
            depth -= 1
        else:
            if depth == 0:
                return False
            words += 1
    return not stack and roots == 1 and words == n_words


def delinearise(
    tokens: Sequence[str] | str, sentence: str | Sequence[str], repair: bool = True
) -> Tree:
    """A predicted token sequence -> a tree over the sentence's words (``XX`` takes the next word).

    ``tokens``: a list of tokens or one string of them separated by spaces; ``sentence``: the
    sentence being parsed (a string in the corpus's form, or its tokens). With ``repair=False`` any
    flaw raises ``ValueError``. With ``repair=True`` (the default, for scoring a model) a flaw is
    mended, one rule each, and the score then counts what survived:

    * a closing bracket with nothing open is dropped;
    * a closing bracket whose label differs from the open one closes the open one (its own label
      is ignored: the bracket's extent is what the model wrote, its label the opening's);
    * brackets still open at the end are closed there;
    * a word that is not the sentence's next word (``words=True`` outputs) stands for it;
    * too many words: the extra ``XX`` are dropped; too few: the missing words are appended to the
      root, at its end;
    * more than one top-level constituent, or words outside any: all of them go under one root
      labelled :data:`ROOT`; an empty prediction becomes the root over the bare words, a tree with
      no scored bracket (F1 0).
    """
    if isinstance(tokens, str):
        tokens = tokens.split()
    words = tokenize_sentence(sentence) if isinstance(sentence, str) else list(sentence)
    if not words:
        raise ValueError(f"cannot de-linearise over an empty or unreadable sentence: {sentence!r}")
    tokens = list(tokens)
    if not all(isinstance(t, str) and t and " " not in t for t in tokens):
        raise ValueError("tokens must be non-empty strings without spaces")

    def fail(why: str) -> None:
        if not repair:
            raise ValueError(f"ill-formed linearisation ({why}): {' '.join(tokens)[:200]}")

    stack: list[tuple[str, list]] = []  # open constituents: (label, children so far)
    top: list = []  # finished top-level items
    w = 0
    for tok in tokens:
        kind, label = _token_kind(tok)
        if kind == "open":
            stack.append((label, []))
        elif kind == "close":
            if not stack:
                fail(f"{tok} closes nothing")
                continue
            if stack[-1][0] != label:
                fail(f"{tok} closes ({stack[-1][0]}")
            done_label, kids = stack.pop()
            node = (done_label, tuple(kids))
            (stack[-1][1] if stack else top).append(node)
        else:
            if w < len(words) and tok not in (WORD, words[w]):
                fail(f"word {tok!r} at position {w} is not the sentence's {words[w]!r}")
            if w >= len(words):
                fail("more words than the sentence has")
                continue
            if not stack:
                fail("a word outside every constituent")
            (stack[-1][1] if stack else top).append(words[w])
            w += 1
    if stack:
        fail(f"({stack[-1][0]} is never closed")
        while stack:
            done_label, kids = stack.pop()
            (stack[-1][1] if stack else top).append((done_label, tuple(kids)))
    if w < len(words):
        fail(f"{len(words) - w} of the sentence's {len(words)} words are missing")
    if len(top) != 1 or isinstance(top[0], str):
        fail(f"{len(top)} top-level items instead of one root")
        top = [(ROOT, tuple(top))]
    root = top[0]
    if w < len(words):
        root = (root[0], root[1] + tuple(words[w:]))
    return root


# ---------------------------------------------------------------------- score
def brackets(tree: Tree) -> Counter[tuple[str, int, int]]:
    """The labelled brackets evalb scores, as a multiset of ``(label, start, end)``: ``start`` and
    ``end`` count the words before and after the constituent, **punctuation not counted** (evalb's
    usual parameters delete "," and "." before scoring). Not scored: the root (evalb's TOP), the
    part-of-speech level (stripped first) and a bracket over punctuation alone."""
    tree = strip_tree(tree)
    out: Counter[tuple[str, int, int]] = Counter()
    position = 0

    def walk(node: Tree | str, is_root: bool) -> None:
        nonlocal position
        if isinstance(node, str):
            if node not in PUNCTUATION:
                position += 1
            return
        start = position
        for child in node[1]:
            walk(child, False)
        if not is_root and position > start:
            out[(node[0], start, position)] += 1

    walk(tree, True)
    return out


@dataclass(frozen=True)
class BracketScore:
    """Labelled bracket counts over a set of sentences, micro-averaged (evalb's "bracketing"
    precision and recall: total matched over total predicted, and over total gold).

    ``precision``, ``recall``, ``f1`` and ``exact_match`` are percentages, as evalb prints them."""

    matched: int
    gold: int
    predicted: int
    n_exact: int
    sentences: int

    @property
    def precision(self) -> float:
        return 100.0 * self.matched / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return 100.0 * self.matched / self.gold if self.gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def exact_match(self) -> float:
        return 100.0 * self.n_exact / self.sentences if self.sentences else 0.0

    def __add__(self, other: BracketScore) -> BracketScore:
        return BracketScore(*(a + b for a, b in zip(self._counts(), other._counts(), strict=True)))

    def _counts(self) -> tuple[int, int, int, int, int]:
        return self.matched, self.gold, self.predicted, self.n_exact, self.sentences

    def __str__(self) -> str:
        return (
            f"labelled brackets: P {self.precision:.2f}  R {self.recall:.2f}  F1 {self.f1:.2f}   "
            f"exact {self.n_exact}/{self.sentences} = {self.exact_match:.1f}%"
        )


def _leaves(tree: Tree) -> list[str]:
    return [w for w in tree_words(tree) if w not in PUNCTUATION]


def _score_one(gold: Tree, predicted: Tree) -> BracketScore:
    g, p = brackets(gold), brackets(predicted)
    matched = sum((g & p).values())
    n_g, n_p = sum(g.values()), sum(p.values())
    return BracketScore(matched, n_g, n_p, int(matched == n_g == n_p), 1)


def sentence_score(gold: Tree | Sequence[Tree], predicted: Tree) -> BracketScore:
    """One sentence's counts, against the best-matching of its gold trees (one tree or a list of
    the sentence's derivations: the one with the highest F1, then the most matched brackets)."""
    _check_tree(predicted, "predicted")
    options = [gold] if isinstance(gold, tuple) and isinstance(gold[0], str) else list(gold)
    if not options:
        raise ValueError("no gold tree given")
    for t in options:
        _check_tree(t, "gold")
        if _leaves(t) != _leaves(predicted):
            raise ValueError(
                "gold and predicted trees cover different words: "
                f"{render(tree_words(t))!r} vs {render(tree_words(predicted))!r}"
            )
    scores = [_score_one(t, predicted) for t in options]
    return max(scores, key=lambda s: (s.f1, s.matched))


def parseval(gold: Sequence[Tree | Sequence[Tree]], predicted: Sequence[Tree]) -> BracketScore:
    """Labelled bracket precision, recall and F1 over a test set, micro-averaged, and exact match.

    ``gold[i]`` is sentence ``i``'s tree, or the list of all its derivations (:func:`gold_trees`:
    each prediction is scored against the one it matches best); ``predicted[i]`` the parser's tree
    (:func:`delinearise`). Both cover the same words, or ``ValueError``."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold trees but {len(predicted)} predictions")
    total = BracketScore(0, 0, 0, 0, 0)
    for g, p in zip(gold, predicted, strict=True):
        total = total + sentence_score(g, p)
    return total


# ---------------------------------------------------------------------- data and vocabulary
@dataclass(frozen=True)
class ParseExample:
    """A sentence and its canonical stripped tree (:func:`canonical_tree`)."""

    sentence: str
    tree: Tree

    @property
    def length(self) -> int:
        """The sentence's number of tokens (words, "," and ".")."""
        return len(tokenize_sentence(self.sentence))


def generate_parses(
    n: int,
    seed: int = 0,
    split: str | None = None,
    min_tokens: int = 1,
    max_tokens: int | None = None,
    unique: bool = False,
) -> list[ParseExample]:
    """``n`` random sentences of the story grammar with their trees, from ``random.Random(seed)``.

    The split is translation's (:func:`attention_book.translation.is_held_out`: a hash of the
    sentence puts a tenth of all sentences in ``"test"``), so a parser trained on ``"train"`` never
    sees a test sentence. ``min_tokens`` / ``max_tokens`` bound the length; ``unique`` skips repeats.
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    rng = random.Random(seed)
    out: list[ParseExample] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 1000 * (n + 10):
            raise ValueError(f"found only {len(out)} of {n} sentences with these bounds")
        words = tree_words(sample_tree(rng))
        if len(words) < min_tokens or (max_tokens is not None and len(words) > max_tokens):
            continue
        sentence = render(words)
        if split is not None and is_held_out(sentence) != (split == "test"):
            continue
        if unique:
            if sentence in seen:
                continue
            seen.add(sentence)
        out.append(ParseExample(sentence, canonical_tree(words)))
    return out


class ParseVocab:
    """The target vocabulary of the parser: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``XX``, then
    ``(LABEL`` and ``)LABEL`` for every constituent label of the grammar (and the words, with
    ``words=True``)."""

    PAD, BOS, EOS = 0, 1, 2
    SPECIALS = ("<pad>", "<bos>", "<eos>")

    def __init__(self, words: bool = False) -> None:
        labels = phrase_labels()
        brackets_ = [f"({label}" for label in labels] + [f"){label}" for label in labels]
        extra = sorted(STORY_GRAMMAR.vocabulary) if words else []
        self.words = words
        self.tokens: tuple[str, ...] = (*self.SPECIALS, WORD, *brackets_, *extra)
        self.ids = {t: i for i, t in enumerate(self.tokens)}

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"ParseVocab({self.vocab_size} tokens)"

    def encode(self, tree: Tree) -> list[int]:
        """A tree -> ``<bos>``, its linearisation's ids, ``<eos>``."""
        tokens = linearise(tree, words=self.words)
        return [self.BOS, *(self.ids[t] for t in tokens), self.EOS]

    def decode(self, ids: Sequence[int] | Tensor) -> list[str]:
        """Ids -> tokens, stopping at the first ``<eos>``, skipping ``<pad>`` and ``<bos>``."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if i == self.EOS:
                break
            if i in (self.PAD, self.BOS):
                continue
            out.append(self.tokens[i])
        return out

    def batch(self, trees: Iterable[Tree]) -> Tensor:
        """Trees -> a padded ``(B, T)`` target batch ``<bos> ... <eos>``."""
        rows = [self.encode(t) for t in trees]
        out = torch.full((len(rows), max(map(len, rows))), self.PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out


# ---------------------------------------------------------------------- a parser from a model
@torch.no_grad()
def predict_trees(
    model: torch.nn.Module,
    sentences: Sequence[str],
    vocab: ParseVocab,
    src_vocab=None,
    batch_size: int = 500,
) -> tuple[list[Tree], list[list[str]]]:
    """Parse sentences with a trained encoder-decoder (``transformer_core.Transformer``): greedy
    decoding, then :func:`delinearise` with repair. Returns the trees and the raw token sequences
    (to count the ill-formed ones with :func:`is_well_formed`). ``src_vocab`` encodes the English
    (default: ``TranslationVocab.english()``)."""
    from .translation import TranslationVocab

    src_vocab = src_vocab or TranslationVocab.english()
    limit = model.config.context_length
    # decode sentences of similar length together (a batch runs until its longest tree is done)
    order = sorted(range(len(sentences)), key=lambda i: len(tokenize_sentence(sentences[i]) or ()))
    trees: list = [None] * len(sentences)
    outputs: list = [None] * len(sentences)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        src = src_vocab.encode_batch([sentences[i] for i in chunk])
        max_len = min(limit, 4 * src.shape[1] + 8)  # a tree has about 2.5 tokens per word
        for i, row in zip(chunk, model.greedy_decode(src, max_len=max_len), strict=True):
            tokens = vocab.decode(row)
            outputs[i] = tokens
            trees[i] = delinearise(tokens, sentences[i], repair=True)
    return trees, outputs
