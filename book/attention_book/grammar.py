"""The story grammar behind the book's tiny corpus, and an exact checker for it.

The corpus the book trains on (``transformer_core/assets/tiny_stories.txt``) is not downloaded: it is
generated here from a small *probabilistic context-free grammar* (PCFG) of short stories, such as

    once upon a time, there was a little girl named lily. one day, she found a red ball in the park.
    she was very happy. lily and the dog became good friends.

Because we wrote the grammar, we also know exactly which sentences belong to the language. That gives
the book a ground truth most language-model tutorials lack: :func:`grammatical_fraction` measures how
much of what a model writes the grammar accepts, so "the model learned the syntax" becomes a number.

What a reader should notice:

* the grammar is the text in :data:`GRAMMAR_RULES` plus the word lists in :data:`LEXICON` -- read them
  to see everything the corpus can say;
* :func:`is_grammatical` is a real parser (a memoised top-down recogniser), not a heuristic: it accepts
  a sentence exactly when the grammar can derive it, spaces and punctuation included;
* the grammar is per *sentence*; coherence across sentences (the same hero, "she" for a girl) comes
  from the story generator, which restricts some word lists while it writes one story.

Regenerate the committed corpus with ``python -m attention_book.grammar`` (``--check`` only compares).
"""

from __future__ import annotations

import argparse
import itertools
import random
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from transformer_core.data import CORPUS_PATH
from transformer_core.evaluation import wilson_interval

__all__ = [
    "CORPUS_PATH",
    "CORPUS_SEED",
    "CORPUS_STORIES",
    "GRAMMAR_RULES",
    "LEXICON",
    "STORY_GRAMMAR",
    "Grammar",
    "Share",
    "generate_corpus",
    "generate_sentence",
    "generate_story",
    "grammatical_share",
    "grammatical_fraction",
    "is_grammatical",
    "render",
    "split_sentences",
    "tokenize_sentence",
]

EMPTY = "ε"  # the empty right-hand side, written out so an optional part is visible in the rules

# The sentence grammar. UPPER_CASE names are nonterminals, everything else is a word or punctuation
# token. `{w}` after an alternative is its weight (default 1): the "P" in PCFG. Word lists live in
# LEXICON; a list X also defines X_C and X_V, its words that start with a consonant / a vowel, so the
# grammar can say "a dog" and "an owl" but never "a owl" or "an dog".
GRAMMAR_RULES = """
SENTENCE    -> INTRO | BODY {4} | ENDING

# the first sentence of a story introduces its hero
INTRO       -> once upon a time , there was HERO_A named NAME . {3}
             | there was HERO_A named NAME .
             | NAME was HERO_A .
             | one day , NAME went to the PLACE .

BODY        -> OPENER SUBJ VP . {8}
             | OPENER SUBJ VP and VP . {3}
             | SUBJ was DEGREE FEELING . {3}
             | SUBJ felt DEGREE FEELING .
             | SUBJ was DEGREE FEELING because SUBJ VP . {2}
             | SUBJ wanted to VP_BASE , but SUBJ was DEGREE BAD_FEELING . {2}

ENDING      -> from that day on , SUBJ was never BAD_FEELING again . {2}
             | SUBJ and the ANIMAL became good friends . {2}
             | SUBJ and the ANIMAL played together all day .
             | SUBJ and the ANIMAL were DEGREE GOOD_FEELING .
             | SUBJ was DEGREE GOOD_FEELING . {2}
             | SUBJ went home .
             | it was a good day .

OPENER      -> ε {6} | TIME , {3} | then
TIME        -> one day | then | later | soon | after that | the next day | that night
             | in the morning | suddenly

# who the story is about: a pronoun, the hero's name, or "the little girl"
SUBJ        -> PRONOUN {3} | NAME {2} | the HERO
HERO_A      -> a HERO_C | an HERO_V
HERO        -> HERO_C | HERO_V
HERO_C      -> N_HERO_C | ADJ_HERO_C N_HERO
HERO_V      -> N_HERO_V | ADJ_HERO_V N_HERO

# verb phrases in the past tense
VP          -> V_THING THING_OBJ WHERE {4}
             | V_FOOD FOOD_OBJ {2}
             | V_ANIMAL ANIMAL_OBJ WHERE {3}
             | MOTION to the PLACE {3}
             | INTRANS WHERE HOW_LONG {3}
             | played with THING_OBJ {2}
             | gave THING_OBJ to ANIMAL_OBJ
             | looked for THING_OBJ
             | went home
VP_BASE     -> play with THING_OBJ | play WHERE | go to the PLACE | eat FOOD_OBJ
             | find THING_OBJ | see ANIMAL_OBJ | help ANIMAL_OBJ
WHERE       -> ε {3} | PREP the PLACE | under the COVER
HOW_LONG    -> ε {3} | all day | every day | again | for a long time
DEGREE      -> ε {3} | very | so

# noun phrases: the determiner must agree with the first sound of what follows (a/an)
THING_OBJ   -> a THING_C | an THING_V | the THING | POSS THING | it
THING       -> THING_C | THING_V
THING_C     -> N_THING_C {2} | ADJ_THING_C N_THING {2} | SIZE_C COLOR N_THING
THING_V     -> N_THING_V {2} | ADJ_THING_V N_THING {2} | SIZE_V COLOR N_THING
FOOD_OBJ    -> a FOOD_C | an FOOD_V | the FOOD | POSS FOOD | it
FOOD        -> FOOD_C | FOOD_V
FOOD_C      -> N_FOOD_C | ADJ_FOOD_C N_FOOD
FOOD_V      -> N_FOOD_V | ADJ_FOOD_V N_FOOD
ANIMAL_OBJ  -> a ANIMAL_C {2} | an ANIMAL_V {2} | the ANIMAL {2}
ANIMAL      -> ANIMAL_C | ANIMAL_V
ANIMAL_C    -> N_ANIMAL_C | ADJ_ANIMAL_C N_ANIMAL
ANIMAL_V    -> N_ANIMAL_V | ADJ_ANIMAL_V N_ANIMAL
"""


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Word lists. Keep words lowercase a-z so a character model's vocabulary stays tiny. Avoid words whose
# article is not decided by their first letter ("a unicorn", "an hour"): the a/an split is by letter.
LEXICON: dict[str, tuple[str, ...]] = {
    "PRONOUN": _words("she he it"),
    "POSS": _words("her his its"),
    "NAME": _words(
        "lily mia anna sue emma lucy zoe amy ella tom ben sam tim jack leo max joe bob "
        "spot buddy coco pip rex daisy"
    ),
    "N_HERO": _words("girl boy dog cat bird bunny fox frog duck bear mouse owl puppy kitten"),
    "ADJ_HERO": _words("little small big kind brave happy shy funny old young tiny silly good"),
    "N_ANIMAL": _words(
        "dog cat bird bunny fox frog duck bear mouse owl puppy kitten fish bee ant elephant friend"
    ),
    "ADJ_ANIMAL": _words(
        "little small big kind friendly old tiny funny sleepy hungry brown white black orange new"
    ),
    "N_THING": _words(
        "ball kite box hat book toy doll car boat drum shell rock stick flower leaf key "
        "ring bag cup umbrella"
    ),
    "ADJ_THING": _words(
        "red blue green yellow pink orange shiny soft new old pretty little big small"
    ),
    "SIZE": _words("big small little tiny old"),
    "COLOR": _words("red blue green yellow pink orange brown white"),
    "N_FOOD": _words("cake cookie apple pie banana carrot sandwich orange egg pear muffin"),
    "ADJ_FOOD": _words("big small sweet warm yummy red green hot fresh little"),
    "PLACE": _words("park garden forest river lake beach hill farm shop school pond house zoo sea"),
    "PREP": _words("in near at by"),
    "COVER": _words("tree bed table bridge"),
    "V_THING": _words(
        "found saw took had lost wanted liked loved got made picked dropped carried kept shared"
    ),
    "V_FOOD": _words("ate found saw made wanted liked shared got had baked"),
    "V_ANIMAL": _words("saw met helped hugged followed liked loved found chased fed"),
    "MOTION": _words("went ran walked hopped raced came"),
    "INTRANS": _words("played laughed smiled jumped danced sang slept cried waited ran swam"),
    "FEELING": _words(
        "happy sad scared tired hungry excited proud sleepy angry surprised glad lonely"
    ),
    "GOOD_FEELING": _words("happy glad proud excited"),
    "BAD_FEELING": _words("sad scared lonely angry tired sleepy"),
}

# Heroes: the pronoun, possessive and nouns a story may use for its main character. The generator
# restricts PRONOUN, POSS, NAME, N_HERO and ADJ_HERO to one choice each, so a story stays coherent.
_HEROES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("she", "her", _words("girl"), _words("lily mia anna sue emma lucy zoe amy ella")),
    ("he", "his", _words("boy"), _words("tom ben sam tim jack leo max joe bob")),
    (
        "it",
        "its",
        _words("dog cat bird bunny fox frog duck bear mouse owl puppy kitten"),
        _words("spot buddy coco pip rex daisy max"),
    ),
)

VOWELS = frozenset("aeiou")
CORPUS_SEED = 0
CORPUS_STORIES = 2800

_NONTERMINAL = re.compile(r"[A-Z][A-Z_]*")
_WEIGHT = re.compile(r"\{([0-9.]+)\}\s*$")

Rules = dict[str, list[tuple[tuple[str, ...], float]]]


def _parse_rules(text: str) -> Rules:
    """Read the ``LHS -> a b | c {2}`` notation of :data:`GRAMMAR_RULES` into a dict."""
    rules: Rules = {}
    lhs: str | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "->" in line:
            lhs, line = (part.strip() for part in line.split("->", 1))
            if not _NONTERMINAL.fullmatch(lhs):
                raise ValueError(f"rule name {lhs!r} must be UPPER_CASE")
            rules.setdefault(lhs, [])
        elif line.startswith("|"):
            line = line[1:]
        else:
            raise ValueError(f"cannot read grammar line {raw!r}: expected 'LHS -> ...' or '| ...'")
        if lhs is None:
            raise ValueError(f"alternative {raw!r} comes before any rule")
        for alt in line.split("|"):
            weight = 1.0
            m = _WEIGHT.search(alt)
            if m:
                weight = float(m.group(1))
                alt = alt[: m.start()]
            symbols = tuple(alt.split())
            if symbols == (EMPTY,):
                symbols = ()
            if not symbols and alt.strip() != EMPTY:
                raise ValueError(f"empty alternative in rule {lhs}: write {EMPTY} for 'nothing'")
            rules[lhs].append((symbols, weight))
    return rules


class Grammar:
    """A probabilistic context-free grammar: generate sentences from it, or recognise them.

    ``rules`` maps each nonterminal to its alternatives ``(symbols, weight)``. ``lexical`` maps the name
    of each word-list nonterminal (``N_THING``, ``N_THING_C``, ...) to the word list it was made from
    (``N_THING``), so that :meth:`generate` can restrict a list by its name.

    The grammar must be acyclic (no nonterminal can derive itself): then generation always ends and
    the top-down recogniser cannot loop. The constructor checks it.
    """

    def __init__(self, rules: Rules, start: str, lexical: Mapping[str, str] | None = None) -> None:
        self.rules: Rules = {k: list(v) for k, v in rules.items()}
        self.start = start
        self.lexical: dict[str, str] = dict(lexical or {})
        undefined = sorted(
            {s for alts in self.rules.values() for rhs, _ in alts for s in rhs if self._is_nt(s)}
            - self.rules.keys()
        )
        if undefined:
            raise ValueError(f"grammar uses undefined nonterminals: {', '.join(undefined)}")
        if start not in self.rules:
            raise ValueError(f"start symbol {start!r} has no rule")
        self._check_acyclic()
        self._nullable, self._first = self._first_sets()
        # nonterminals whose alternatives are all single words: the recogniser matches them at once
        self._word_lists = frozenset(
            nt
            for nt, alts in self.rules.items()
            if alts and all(len(rhs) == 1 and not self._is_nt(rhs[0]) for rhs, _ in alts)
        )
        self._tables: dict[
            frozenset[str], dict[str, tuple[list[tuple[str, ...]], list[float]]]
        ] = {}

    @staticmethod
    def _is_nt(symbol: str) -> bool:
        return _NONTERMINAL.fullmatch(symbol) is not None

    @classmethod
    def from_text(
        cls, text: str, lexicon: Mapping[str, Sequence[str]], start: str | None = None
    ) -> Grammar:
        """Build a grammar from rule text (see :data:`GRAMMAR_RULES`) and word lists.

        Every word list ``X`` also yields ``X_C`` and ``X_V`` (consonant- and vowel-initial words).
        The start symbol defaults to the first rule's name.
        """
        rules = _parse_rules(text)
        if start is None:
            if not rules:
                raise ValueError("the grammar text holds no rules")
            start = next(iter(rules))
        lexical: dict[str, str] = {}
        for name, words in lexicon.items():
            if name in rules:
                raise ValueError(f"{name} is both a rule and a word list")
            bad = [w for w in words if not re.fullmatch(r"[a-z]+", w)]
            if bad:
                raise ValueError(f"word list {name} has words outside a-z: {bad}")
            groups = {
                name: list(words),
                f"{name}_C": [w for w in words if w[0] not in VOWELS],
                f"{name}_V": [w for w in words if w[0] in VOWELS],
            }
            for nt, ws in groups.items():
                rules[nt] = [((w,), 1.0) for w in ws]
                lexical[nt] = name
        return cls(rules, start, lexical)

    def _check_acyclic(self) -> None:
        state: dict[str, int] = {}  # 1 = on the current path, 2 = finished

        def visit(nt: str, path: list[str]) -> None:
            state[nt] = 1
            for rhs, _ in self.rules[nt]:
                for s in rhs:
                    if not self._is_nt(s):
                        continue
                    if state.get(s) == 1:
                        cycle = " -> ".join([*path[path.index(s) :], s]) if s in path else s
                        raise ValueError(
                            f"grammar is recursive ({cycle}); this module needs it acyclic"
                        )
                    if s not in state:
                        visit(s, [*path, s])
            state[nt] = 2

        for nt in self.rules:
            if nt not in state:
                visit(nt, [nt])

    def _first_sets(self) -> tuple[set[str], dict[str, set[str]]]:
        """Which nonterminals derive the empty string, and which words can start each nonterminal.

        The recogniser uses them to skip alternatives that cannot match the next word: without this
        pruning it tries every word list at every position, and checking the corpus takes seconds.
        """
        nullable: set[str] = set()
        first: dict[str, set[str]] = {nt: set() for nt in self.rules}
        changed = True
        while changed:  # a fixpoint: a few sweeps suffice for a grammar this shallow
            changed = False
            for nt, alts in self.rules.items():
                for rhs, _ in alts:
                    all_nullable = True
                    for s in rhs:
                        new = first[s] if self._is_nt(s) else {s}
                        if not new <= first[nt]:
                            first[nt] |= new
                            changed = True
                        if not (self._is_nt(s) and s in nullable):
                            all_nullable = False
                            break
                    if all_nullable and nt not in nullable:
                        nullable.add(nt)
                        changed = True
        return nullable, first

    @property
    def vocabulary(self) -> frozenset[str]:
        """Every word and punctuation token the grammar can produce."""
        return frozenset(
            s for alts in self.rules.values() for rhs, _ in alts for s in rhs if not self._is_nt(s)
        )

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        rng: random.Random,
        symbol: str | None = None,
        restrict: Mapping[str, Sequence[str]] | None = None,
    ) -> list[str]:
        """Sample a token list from ``symbol`` (default: the start symbol).

        ``restrict`` maps a word list's name (``"NAME"``) to the words allowed this time (``["lily"]``);
        alternatives that can then no longer produce anything are skipped. Randomness comes only from
        ``rng``, so the same seed always gives the same text.
        """
        key = tuple(sorted((k, frozenset(v)) for k, v in (restrict or {}).items()))
        table = self._choice_table(key)
        out: list[str] = []
        choices = rng.choices

        def expand(s: str) -> None:
            if s not in table:  # a word or punctuation token
                out.append(s)
                return
            alts, cum_weights = table[s]
            if not alts:
                raise ValueError(
                    f"{s} cannot produce anything under restrict={dict(restrict or {})}"
                )
            for t in choices(alts, cum_weights=cum_weights)[0]:
                expand(t)

        expand(symbol or self.start)
        return out

    def _choice_table(
        self, key: tuple[tuple[str, frozenset[str]], ...]
    ) -> dict[str, tuple[list[tuple[str, ...]], list[float]]]:
        """For each nonterminal, its alternatives still usable under a restriction, with cumulative
        weights for ``random.choices``.

        A restriction shrinks some word lists; the rest of the grammar only changes where a list
        becomes empty (an owl hero leaves ``N_HERO_C`` empty, so "a HERO_C" must use an adjective).
        So the rule part of the table is cached by *which* lists are empty, and the word lists are
        filled in per call.
        """
        allowed = dict(key)
        unknown = sorted(set(allowed) - set(self.lexical.values()))
        if unknown:
            raise ValueError(f"restrict names unknown word lists: {', '.join(unknown)}")
        words = {
            nt: [rhs for rhs, _ in self.rules[nt] if rhs[0] in allowed[base]]
            for nt, base in self.lexical.items()
            if base in allowed
        }
        dead = frozenset(nt for nt, ws in words.items() if not ws)
        table = self._tables.get(dead)
        if table is None:
            table = self._tables[dead] = self._rule_table(dead)
        table = dict(table)
        for nt, ws in words.items():
            table[nt] = (ws, list(range(1, len(ws) + 1)))  # words are equally likely
        return table

    def _rule_table(
        self, dead: frozenset[str]
    ) -> dict[str, tuple[list[tuple[str, ...]], list[float]]]:
        """Alternatives of every nonterminal that can still produce words when ``dead`` ones cannot."""
        productive: dict[str, bool] = {}

        def usable(nt: str) -> list[tuple[tuple[str, ...], float]]:
            if nt in dead:
                return []
            return [(rhs, w) for rhs, w in self.rules[nt] if all(is_productive(s) for s in rhs)]

        def is_productive(s: str) -> bool:
            if not self._is_nt(s):
                return True
            if s not in productive:
                productive[s] = bool(usable(s))
            return productive[s]

        table: dict[str, tuple[list[tuple[str, ...]], list[float]]] = {}
        for nt in self.rules:
            alts = usable(nt)
            table[nt] = ([rhs for rhs, _ in alts], list(itertools.accumulate(w for _, w in alts)))
        return table

    # ------------------------------------------------------------------ recognition
    def recognizes(self, tokens: Sequence[str], symbol: str | None = None) -> bool:
        """True exactly when ``symbol`` (default: the start symbol) derives the token list.

        A memoised top-down recogniser: ``ends(X, i)`` is the set of positions where a derivation of X
        that starts at token i can end. The sentence is accepted when the start symbol can end at the
        last token. Memoising makes it polynomial; the grammar being acyclic makes it terminate.
        """
        toks = tuple(tokens)
        n = len(toks)
        rules, nullable, first, word_lists = (
            self.rules,
            self._nullable,
            self._first,
            self._word_lists,
        )
        memo: dict[tuple[str, int], set[int]] = {}

        def ends(sym: str, i: int) -> set[int]:
            key = (sym, i)
            hit = memo.get(key)
            if hit is not None:
                return hit
            result: set[int] = set()
            if sym not in nullable and (i >= n or toks[i] not in first[sym]):
                pass  # the next token cannot start this nonterminal: skip all its alternatives
            elif sym in word_lists:
                result.add(i + 1)  # a word list; the check above already found toks[i] in it
            else:
                for rhs, _ in rules[sym]:
                    positions = {i}
                    for s in rhs:
                        if s in rules:
                            positions = {e for p in positions for e in ends(s, p)}
                        else:
                            positions = {p + 1 for p in positions if p < n and toks[p] == s}
                        if not positions:
                            break
                    result |= positions
            memo[key] = result
            return result

        return n in ends(symbol or self.start, 0)


STORY_GRAMMAR = Grammar.from_text(GRAMMAR_RULES, LEXICON)
"""The grammar of the book's corpus; its start symbol ``SENTENCE`` derives one sentence."""

# ---------------------------------------------------------------------- text <-> tokens
_TOKEN = re.compile(r"[a-z]+|[,.]")


def render(tokens: Sequence[str]) -> str:
    """Join tokens into text the way the corpus writes it: one space between words, none before , or ."""
    return " ".join(tokens).replace(" ,", ",").replace(" .", ".")


def tokenize_sentence(sentence: str) -> list[str] | None:
    """Split a sentence into grammar tokens, or return None if it is not written in canonical form.

    Canonical form is what :func:`render` writes: lowercase words separated by single spaces, "," and
    "." attached to the word before them. Anything else (a capital letter, a double space, a newline,
    a digit) cannot be a corpus sentence, so the checker rejects it rather than guessing.
    """
    s = sentence.strip()
    tokens = _TOKEN.findall(s)
    return tokens if render(tokens) == s else None


@lru_cache(maxsize=1 << 16)
def is_grammatical(sentence: str) -> bool:
    """Does the story grammar derive this sentence? Exact, not heuristic.

    ``sentence`` is one sentence with its final period, e.g. ``"the dog found a red ball."``.
    Surrounding whitespace is ignored; inside, the text must be in canonical form (see
    :func:`tokenize_sentence`). ``"the dog found an red ball."`` or ``"found the dog a ball."`` is
    rejected. Results are cached, since a model repeats its favourite sentences.
    """
    tokens = tokenize_sentence(sentence)
    return tokens is not None and STORY_GRAMMAR.recognizes(tokens)


def split_sentences(text: str) -> list[str]:
    """Cut text into sentences, the way :func:`grammatical_fraction` counts them.

    The rule: every "." ends a sentence; a sentence is the text since the previous "." (or the start),
    whitespace around it removed, plus its ".". Whatever follows the last "." is an unfinished
    fragment (sampling stopped mid-sentence) and is dropped. Blank lines between stories are whitespace
    like any other, so a sentence that runs across a story break stays one (ungrammatical) sentence.
    """
    pieces = text.split(".")
    return [piece.strip() + "." for piece in pieces[:-1]]


def grammatical_fraction(text: str) -> float:
    """The share of complete sentences in ``text`` that the grammar accepts, in [0, 1].

    Sentences are cut by :func:`split_sentences` (the unfinished fragment after the last "." is not
    counted). Text with no complete sentence gives 0.0: a model that never ends a sentence has written
    nothing grammatical yet. Start the text at a sentence boundary (the start of a story), or its
    first sentence is counted as a fragment of a sentence and will likely be rejected.
    """
    sentences = split_sentences(text)
    if not sentences:
        return 0.0
    return sum(map(is_grammatical, sentences)) / len(sentences)


# ---------------------------------------------------------------------- stories and the corpus
def generate_sentence(rng: random.Random, kind: str = "SENTENCE") -> str:
    """One random sentence from the grammar (``kind``: SENTENCE, INTRO, BODY or ENDING)."""
    return render(STORY_GRAMMAR.generate(rng, kind))


def generate_story(rng: random.Random) -> str:
    """One story of 3-6 sentences on one line: an introduction, 1-4 body sentences, an ending.

    A hero (pronoun, name, noun, adjective) is drawn first and the word lists for them are restricted
    to it for the whole story, so "lily" stays "she" and "the little girl". Each sentence is still a
    sentence of :data:`STORY_GRAMMAR`: restricting a word list never leaves the language.
    """
    pronoun, poss, nouns, names = rng.choice(_HEROES)
    restrict = {
        "PRONOUN": [pronoun],
        "POSS": [poss],
        "NAME": [rng.choice(names)],
        "N_HERO": [rng.choice(nouns)],
        "ADJ_HERO": [rng.choice(LEXICON["ADJ_HERO"])],
    }
    kinds = ["INTRO"] + ["BODY"] * rng.randint(1, 4) + ["ENDING"]
    return " ".join(render(STORY_GRAMMAR.generate(rng, k, restrict)) for k in kinds)


def generate_corpus(seed: int = CORPUS_SEED, n_stories: int = CORPUS_STORIES) -> str:
    """The corpus text: ``n_stories`` stories separated by blank lines, ending in a newline.

    Deterministic: it uses only ``random.Random(seed)``, never the global random state, so the
    committed file can be checked against a fresh generation.
    """
    if n_stories < 1:
        raise ValueError(f"n_stories must be at least 1, got {n_stories}")
    rng = random.Random(seed)
    return "\n\n".join(generate_story(rng) for _ in range(n_stories)) + "\n"


# ------------------------------------------------- the share a model gets right
@dataclass(frozen=True)
class Share:
    """``k`` of ``n`` sentences were grammatical; ``low``-``high`` is the 95% interval of the share."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else 0.0

    def __str__(self) -> str:
        return f"{self.value:.1%} of {self.n} sentences (95% interval {self.low:.1%}-{self.high:.1%})"


def grammatical_share(texts: str | list[str]) -> Share:
    """The share of complete sentences in ``texts`` that the story grammar accepts, with its interval.

    Each text is cut with :func:`attention_book.grammar.split_sentences`: the unfinished fragment
    after the last "." is dropped. Start each text at the start of a story.
    """
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a str or a list of str (the samples a model wrote)")
    sentences = [s for t in texts for s in split_sentences(t)]
    if not sentences:
        raise ValueError("the texts hold no complete sentence (none ends with '.'): sample longer texts")
    k = sum(map(is_grammatical, sentences))
    return Share(k, len(sentences), *wilson_interval(k, len(sentences)))



def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m attention_book.grammar",
        description="Generate the tiny story corpus from the grammar (or check the committed copy).",
    )
    parser.add_argument("--seed", type=int, default=CORPUS_SEED)
    parser.add_argument("--stories", type=int, default=CORPUS_STORIES)
    parser.add_argument(
        "--out", type=Path, default=CORPUS_PATH, help="where to write (default: %(default)s)"
    )
    parser.add_argument(
        "--check", action="store_true", help="only compare with --out; exit 1 if different"
    )
    args = parser.parse_args(argv)
    text = generate_corpus(args.seed, args.stories)
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'DIFFERS from a fresh generation'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8", newline="\n")
    n_sentences = len(split_sentences(text))
    print(
        f"wrote {args.out}: {len(text.encode('utf-8')):,} bytes, {args.stories} stories, "
        f"{n_sentences:,} sentences, {len(set(text))} distinct characters"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
