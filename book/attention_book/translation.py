"""The book's translation task: the story grammar's English, and Tolan, a language made up for it.

The paper is a translation paper. Its data (WMT 2014) takes days of GPU time; this module gives the
book a translation task of the same kind that a laptop can learn, with a ground truth: every English
sentence of the story grammar (:mod:`attention_book.grammar`) has an exact translation into
**Tolan**, a second language written here, by a transfer over the sentence's derivation tree.

Tolan differs from English where translation is hard for a model that copies word by word:

* **word order**: verbs come last in every clause ("lily found a red ball in the park" ->
  "lily ker parken en mon bol rudo trovet": the park, then the ball, then *found*); a
  "because" clause moves to the front; "gave X to Y" becomes "Y-to X gave";
* **adjectives after the noun**, and two of them in mirror order ("a big red ball" ->
  "mo bol rudo grodo");
* **postpositions** instead of prepositions ("in the park" -> "ker parken en");
* **agreement**: every noun has a gender (masculine, feminine or neuter) that English does not
  show ("ball" is masculine, "box" feminine, "kite" neuter); articles agree with their noun in
  gender and *case* (subject, object, or after a postposition), adjectives in gender; a predicate
  adjective and the participle "named" agree with the subject; a verb agrees in number with a
  subject "X and the dog" (plural);
* **a vocabulary of its own**: one Tolan word for several English ones ("once upon a time" ->
  "antaulonge", "looked for" -> "sercet"), English words whose translation depends on their role
  ("orange" the fruit, "orange" the colour). Names stay as they are, as names do.

What a reader should notice: the translation is a function of the English *derivation*, not of its
words, so a model has to find the structure to translate; :func:`references` gives the reference
translations of any English sentence of the grammar (more than one only where the grammar derives
the sentence in ways that translate differently), and :func:`check_translation` says whether a
candidate is one of them, and if not, whether its word order or its agreement is wrong.

Pairs for training and testing come from :func:`generate_pairs`; :func:`is_held_out` sets a tenth of
all English sentences aside (by a hash of the sentence, so the split holds for any number of
samples): a model trained on the ``"train"`` split has never seen a ``"test"`` sentence.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from .grammar import STORY_GRAMMAR, render, tokenize_sentence

__all__ = [
    "LANGUAGE",
    "alignment",
    "gloss",
    "Pair",
    "TranslationVocab",
    "Tree",
    "Verdict",
    "check_translation",
    "generate_pair",
    "generate_pairs",
    "is_held_out",
    "is_valid_translation",
    "parse",
    "references",
    "sample_tree",
    "translate_tree",
    "tree_words",
]

LANGUAGE = "Tolan"

# A derivation tree: (nonterminal, children); a child is a tree or a word.
Tree = tuple[str, tuple]

# ---------------------------------------------------------------------- the Tolan lexicon
# fmt: off
# Genders: "m" masculine, "f" feminine, "n" neuter. Nouns do not show their gender: it is lexical.
NOUNS: dict[str, tuple[str, str]] = {
    # people and animals (N_HERO, N_ANIMAL)
    "girl": ("nela", "f"), "boy": ("tomu", "m"), "dog": ("vask", "m"), "cat": ("mirel", "f"),
    "bird": ("pilu", "n"), "bunny": ("hopsa", "n"), "fox": ("rens", "m"), "frog": ("kvak", "f"),
    "duck": ("anat", "f"), "bear": ("ursel", "m"), "mouse": ("mus", "f"), "owl": ("hulo", "n"),
    "puppy": ("vaskin", "n"), "kitten": ("mirko", "n"), "fish": ("pesk", "m"),
    "bee": ("bizen", "f"), "ant": ("formi", "f"), "elephant": ("elfant", "m"),
    "friend": ("amik", "m"),
    # things (N_THING)
    "ball": ("bol", "m"), "kite": ("drak", "n"), "box": ("kest", "f"), "hat": ("kapel", "m"),
    "book": ("skrib", "n"), "toy": ("jok", "m"), "doll": ("pupa", "f"), "car": ("aut", "n"),
    "boat": ("bark", "f"), "drum": ("tambur", "m"), "shell": ("konk", "f"), "rock": ("stenu", "m"),
    "stick": ("bast", "n"), "flower": ("flori", "f"), "leaf": ("foli", "n"), "key": ("klav", "m"),
    "ring": ("ringel", "n"), "bag": ("sak", "m"), "cup": ("tas", "f"),
    "umbrella": ("parapluv", "n"),
    # food (N_FOOD)
    "cake": ("kuk", "f"), "cookie": ("biskot", "m"), "apple": ("pom", "n"), "pie": ("torta", "f"),
    "banana": ("banan", "m"), "carrot": ("karot", "f"), "sandwich": ("panin", "n"),
    "orange": ("apels", "f"), "egg": ("ov", "n"), "pear": ("pir", "m"), "muffin": ("mufel", "m"),
    # places (PLACE) and covers (COVER)
    "park": ("parken", "n"), "garden": ("hort", "m"), "forest": ("arbar", "m"),
    "river": ("flus", "f"), "lake": ("lag", "m"), "beach": ("strand", "f"), "hill": ("mont", "m"),
    "farm": ("bien", "n"), "shop": ("butik", "f"), "school": ("skol", "f"), "pond": ("damb", "n"),
    "house": ("dom", "n"), "zoo": ("bestej", "n"), "sea": ("oseno", "f"), "tree": ("arb", "m"),
    "bed": ("lit", "n"), "table": ("tabl", "f"), "bridge": ("pont", "m"),
}

# Adjective stems; the word is stem + ending: -a feminine, -o masculine, -e neuter, -i plural.
ADJECTIVES: dict[str, str] = {
    "little": "pit", "small": "mikr", "big": "grod", "kind": "dulk", "brave": "kurag",
    "happy": "fel", "shy": "tiem", "funny": "drol", "old": "vel", "young": "jun", "tiny": "etet",
    "silly": "stult", "good": "bon", "friendly": "amen", "sleepy": "dormem", "hungry": "fam",
    "brown": "brun", "white": "blank", "black": "nigr", "orange": "oranz", "new": "nov",
    "red": "rud", "blue": "blov", "green": "verd", "yellow": "flav", "pink": "roz", "shiny": "bril",
    "soft": "mol", "pretty": "bel", "sweet": "dolk", "warm": "varm", "yummy": "gust", "hot": "kald",
    "fresh": "fres", "sad": "trist", "scared": "tremb", "tired": "lac", "excited": "vigl",
    "proud": "fier", "angry": "koler", "surprised": "mir", "glad": "goj", "lonely": "izol",
}
ENDING = {"f": "a", "m": "o", "n": "e", "pl": "i"}

# Verb stems, by English form (past tense, and the bare form after "wanted to"); the word is
# stem + "et" (past, singular subject), + "en" (past, plural subject) or + "ar" (infinitive).
VERBS: dict[str, str] = {
    "found": "trov", "find": "trov", "saw": "vid", "see": "vid", "took": "pren", "had": "hav",
    "lost": "perd", "wanted": "vol", "liked": "plez", "loved": "am", "got": "ger", "made": "far",
    "picked": "pluk", "dropped": "jet", "carried": "port", "kept": "tenk", "shared": "dival",
    "ate": "mang", "eat": "mang", "baked": "bak", "met": "renk", "helped": "hilp", "help": "hilp",
    "hugged": "brak", "followed": "sekv", "chased": "kas", "fed": "nutr", "went": "ir", "go": "ir",
    "ran": "kur", "walked": "pas", "hopped": "salt", "raced": "rap", "came": "ven", "played": "lud",
    "play": "lud", "laughed": "rid", "smiled": "sorid", "jumped": "sprin", "danced": "dans",
    "sang": "kant", "slept": "dorm", "cried": "plor", "waited": "atend", "swam": "nag",
    "gave": "don", "looked": "serc", "became": "turn", "was": "es", "were": "es", "felt": "sent",
}
VERB_ENDING = {"sg": "et", "pl": "en", "inf": "ar"}

# Articles agree with their noun's gender and case: "k-" definite, "m-" indefinite, then the
# gender's vowel, then the case: nothing for the subject (nominative), -n for a direct object
# (accusative), -r after a postposition or for "to" an animal (dative).
CASE_SUFFIX = {"nom": "", "acc": "n", "dat": "r"}
GENDER_VOWEL = {"m": "o", "f": "a", "n": "e"}
# "it" as an object: te (nom), ten (acc), ter (dat); subject pronouns she / he / it.
PRONOUNS = {"she": ("sa", "f"), "he": ("su", "m"), "it": ("se", "n")}
POSSESSIVES = {"her": "sil", "his": "sol", "its": "sel"}  # after the noun, not inflected
POSTPOSITIONS = {"in": "en", "near": "apud", "at": "ce", "by": "pres", "under": "sub"}
NAME_GENDER = {
    **dict.fromkeys("lily mia anna sue emma lucy zoe amy ella".split(), "f"),
    **dict.fromkeys("tom ben sam tim jack leo max joe bob".split(), "m"),
    **dict.fromkeys("spot buddy coco pip rex daisy".split(), "n"),
}
TIMES = {  # TIME (an opener before a comma)
    ("one", "day"): "iutage", ("then",): "tiam", ("later",): "poste", ("soon",): "baldau",
    ("after", "that"): "sekve", ("the", "next", "day"): "morgaue", ("that", "night"): "nokte",
    ("in", "the", "morning"): "matene", ("suddenly",): "subite",
}
HOW_LONG = {
    ("all", "day"): "tuttage", ("every", "day"): "ciutage", ("again",): "denove",
    ("for", "a", "long", "time"): "longe",
}
DEGREES = {("very",): "tre", ("so",): "tiel"}
# fmt: on


def _article(definite: bool, gender: str, case: str) -> str:
    return ("k" if definite else "m") + GENDER_VOWEL[gender] + CASE_SUFFIX[case]


def _adjective(english: str, agree: str) -> str:
    return ADJECTIVES[english] + ENDING[agree]


def _verb(english: str, form: str) -> str:
    return VERBS[english] + VERB_ENDING[form]


# ---------------------------------------------------------------------- trees: sample and parse
def _productive_rules() -> dict[str, list[tuple[tuple[str, ...], float]]]:
    """The story grammar's alternatives that can produce words (some word lists are empty: no
    food adjective starts with a vowel, so "an ADJ_FOOD_V N_FOOD" can never be written)."""
    rules = STORY_GRAMMAR.rules
    productive: set[str] = set()
    changed = True
    while changed:
        changed = False
        for nt, alts in rules.items():
            if nt not in productive and any(
                all(s not in rules or s in productive for s in rhs) for rhs, _ in alts
            ):
                productive.add(nt)
                changed = True
    return {
        nt: [(rhs, w) for rhs, w in alts if all(s not in rules or s in productive for s in rhs)]
        for nt, alts in rules.items()
        if nt in productive
    }


_RULES = _productive_rules()
_CHOICES = {nt: ([rhs for rhs, _ in alts], [w for _, w in alts]) for nt, alts in _RULES.items()}


def sample_tree(rng: random.Random, symbol: str = "SENTENCE") -> Tree:
    """A random derivation tree of the story grammar, with its weights (the distribution of
    :func:`attention_book.grammar.generate_sentence`). Randomness comes only from ``rng``."""
    alts, weights = _CHOICES[symbol]
    rhs = rng.choices(alts, weights=weights)[0]
    return symbol, tuple(sample_tree(rng, s) if s in _CHOICES else s for s in rhs)


def tree_words(tree: Tree | str) -> list[str]:
    """The English tokens a tree derives, in order."""
    if isinstance(tree, str):
        return [tree]
    return [w for child in tree[1] for w in tree_words(child)]


def _first_sets() -> tuple[set[str], dict[str, set[str]]]:
    nullable: set[str] = set()
    first: dict[str, set[str]] = {nt: set() for nt in _RULES}
    changed = True
    while changed:
        changed = False
        for nt, alts in _RULES.items():
            for rhs, _ in alts:
                all_nullable = True
                for s in rhs:
                    new = first[s] if s in _RULES else {s}
                    if not new <= first[nt]:
                        first[nt] |= new
                        changed = True
                    if s not in nullable:
                        all_nullable = False
                        break
                if all_nullable and nt not in nullable:
                    nullable.add(nt)
                    changed = True
    return nullable, first


_NULLABLE, _FIRST = _first_sets()


def parse(sentence: str | Sequence[str]) -> list[Tree]:
    """Every derivation tree of an English sentence (a string in the corpus's form, or its
    tokens); ``[]`` when the story grammar does not derive it."""
    tokens = tokenize_sentence(sentence) if isinstance(sentence, str) else list(sentence)
    if tokens is None:
        return []
    return list(_parse(tuple(tokens)))


@lru_cache(maxsize=1 << 14)
def _parse(toks: tuple[str, ...]) -> tuple[Tree, ...]:
    n = len(toks)
    memo: dict[tuple[str, int], list[tuple[int, Tree]]] = {}

    def spans(sym: str, i: int) -> list[tuple[int, Tree]]:
        key = (sym, i)
        if key in memo:
            return memo[key]
        out: list[tuple[int, Tree]] = []
        if sym in _NULLABLE or (i < n and toks[i] in _FIRST[sym]):
            for rhs, _ in _RULES[sym]:
                partial: list[tuple[int, tuple]] = [(i, ())]
                for s in rhs:
                    if s in _RULES:
                        partial = [(e, kids + (t,)) for p, kids in partial for e, t in spans(s, p)]
                    else:
                        partial = [
                            (p + 1, kids + (s,)) for p, kids in partial if p < n and toks[p] == s
                        ]
                    if not partial:
                        break
                out += [(e, (sym, kids)) for e, kids in partial]
        memo[key] = out
        return out

    return tuple(t for e, t in spans("SENTENCE", 0) if e == n)


# ---------------------------------------------------------------------- the transfer to Tolan
def _rhs(tree: Tree) -> tuple[str, ...]:
    """The rule a node used, as its right-hand side: nonterminal names and words."""
    return tuple(c if isinstance(c, str) else c[0] for c in tree[1])


def _kids(tree: Tree) -> list[Tree]:
    return [c for c in tree[1] if not isinstance(c, str)]


def _leaves(tree: Tree) -> list[tuple[str, str]]:
    """(word list, word) for each word under ``tree``, e.g. ("ADJ_THING", "red")."""
    out = []
    for c in tree[1]:
        if isinstance(c, str):
            out.append((STORY_GRAMMAR.lexical.get(tree[0], tree[0]), c))
        else:
            out += _leaves(c)
    return out


def _nominal(tree: Tree) -> tuple[list[str], str]:
    """A noun with its adjectives (HERO, THING, FOOD, ANIMAL and their _C/_V forms, PLACE, COVER):
    Tolan puts the noun first and the adjectives after it, in mirror order, agreeing in gender."""
    leaves = _leaves(tree)
    noun_word = leaves[-1][1]
    noun, gender = NOUNS[noun_word]
    adjectives = [_adjective(w, gender) for _, w in reversed(leaves[:-1])]
    return [noun, *adjectives], gender


def _determined(det: str, nominal: Tree, case: str) -> tuple[list[str], str]:
    """ "a ball", "an owl", "the park": the article agrees with the noun's gender and the case."""
    words, gender = _nominal(nominal)
    return [_article(det == "the", gender, case), *words], gender


def _object(tree: Tree, case: str) -> list[str]:
    """THING_OBJ, FOOD_OBJ, ANIMAL_OBJ, HERO_A."""
    rhs = tree[1]
    first = rhs[0]
    if first == "it":
        return ["t" + GENDER_VOWEL["n"] + CASE_SUFFIX[case]]
    if first in ("a", "an", "the"):
        return _determined(first, rhs[1], case)[0]
    if not isinstance(first, str) and first[0] == "POSS":  # her ball -> ball hers
        owner = first[1][0]
        return [*_nominal(rhs[1])[0], POSSESSIVES[owner]]
    raise ValueError(f"not a noun phrase: {_rhs(tree)}")


def _subject(tree: Tree) -> tuple[list[str], str]:
    """SUBJ -> (Tolan words, gender)."""
    kid = tree[1][0]
    if isinstance(kid, str):  # "the HERO"
        return _determined("the", tree[1][1], "nom")
    word = kid[1][0]
    if kid[0] == "PRONOUN":
        tolan, gender = PRONOUNS[word]
        return [tolan], gender
    return [word], NAME_GENDER[word]  # a name


def _place(article_tree_pair: tuple[str, Tree], post: str) -> list[str]:
    """ "in the park" -> "ker parken en": the noun in the dative, then the postposition."""
    det, place = article_tree_pair
    return [*_determined(det, place, "dat")[0], post]


def _where(tree: Tree) -> list[str]:
    rhs = tree[1]
    if not rhs:
        return []
    prep = rhs[0][1][0] if not isinstance(rhs[0], str) else rhs[0]  # PREP node, or "under"
    return _place((rhs[1], rhs[2]), POSTPOSITIONS[prep])


def _phrase(tree: Tree, table: dict[tuple[str, ...], str]) -> list[str]:
    words = tuple(tree_words(tree))
    return [table[words]] if words else []


def _vp(tree: Tree, form: str) -> list[str]:
    """VP or VP_BASE, verb last. ``form``: "sg" / "pl" (past tense) or "inf" (after "wanted to")."""
    rhs = _rhs(tree)
    kids = tree[1]

    def verb(node_or_word) -> str:
        word = node_or_word if isinstance(node_or_word, str) else node_or_word[1][0]
        return _verb(word, form)

    if rhs[0] in ("V_THING", "V_ANIMAL"):  # found a ball in the park -> park-in ball found
        return [*_where(kids[2]), *_object(kids[1], "acc"), verb(kids[0])]
    if rhs[0] == "V_FOOD":
        return [*_object(kids[1], "acc"), verb(kids[0])]
    if rhs[0] == "MOTION":  # ran to the park -> park-to ran
        return [*_place(("the", kids[3]), "al"), verb(kids[0])]
    if rhs[0] == "INTRANS":  # played in the park all day -> all-day park-in played
        return [*_phrase(kids[2], HOW_LONG), *_where(kids[1]), verb(kids[0])]
    if rhs[:2] in (("played", "with"), ("play", "with")):
        return [*_object(kids[2], "dat"), "kun", verb(kids[0])]
    if rhs[0] == "gave":  # gave the ball to the dog -> the-dog(dat) the-ball(acc) gave
        return [*_object(kids[3], "dat"), *_object(kids[1], "acc"), verb("gave")]
    if rhs[:2] == ("looked", "for"):
        return [*_object(kids[2], "acc"), verb("looked")]
    if rhs in (("went", "home"),):
        return ["hejmen", verb("went")]
    if rhs == ("play", "WHERE"):
        return [*_where(kids[1]), verb("play")]
    if rhs[:2] == ("go", "to"):
        return [*_place(("the", kids[3]), "al"), verb("go")]
    if rhs[0] in ("eat", "find", "see", "help"):
        return [*_object(kids[1], "acc"), verb(rhs[0])]
    raise ValueError(f"no Tolan rule for the verb phrase {rhs}")


def _opener(tree: Tree) -> list[str]:
    rhs = tree[1]
    if not rhs:
        return []
    if rhs == ("then",):
        return ["tiam"]
    return [*_phrase(rhs[0], TIMES), ","]  # TIME ,


def _predicate(degree: Tree, feeling: Tree, agree: str, verb: str) -> list[str]:
    """DEGREE FEELING and the verb: "was very happy" -> "tre fela eset" for a feminine subject."""
    return [*_phrase(degree, DEGREES), _adjective(feeling[1][0], agree), verb]


def _clause(tree: Tree) -> list[str]:
    """INTRO, BODY or ENDING -> Tolan tokens, final "." included."""
    rhs = _rhs(tree)
    k = tree[1]
    if rhs[0] == "once":  # once upon a time , there was HERO_A named NAME .
        return ["antaulonge", ",", *_clause(("INTRO", k[5:]))]
    if rhs[0] == "there":  # there was HERO_A named NAME .
        words, gender = _hero_a(k[2])
        return ["jen", *words, k[4][1][0], "nomit" + ENDING[gender], _verb("was", "sg"), "."]
    if rhs == ("NAME", "was", "HERO_A", "."):
        return [k[0][1][0], *_hero_a(k[2])[0], _verb("was", "sg"), "."]
    if rhs[:3] == ("one", "day", ","):  # one day , NAME went to the PLACE .
        return ["iutage", ",", k[3][1][0], *_place(("the", k[7]), "al"), _verb("went", "sg"), "."]
    if rhs[0] == "OPENER":
        subject, _ = _subject(k[1])
        out = [*_opener(k[0]), *subject, *_vp(k[2], "sg")]
        if len(rhs) == 6:  # OPENER SUBJ VP and VP .
            out += ["kaj", *_vp(k[4], "sg")]
        return [*out, "."]
    if rhs[0] == "SUBJ" and rhs[1] in ("was", "felt") and rhs[2] == "DEGREE":
        subject, gender = _subject(k[0])
        main = [*subject, *_predicate(k[2], k[3], gender, _verb(rhs[1], "sg"))]
        if len(rhs) == 5:  # SUBJ was DEGREE FEELING .
            return [*main, "."]
        # SUBJ was DEGREE FEELING because SUBJ VP . -> because SUBJ VP , SUBJ DEGREE FEELING was .
        cause, _ = _subject(k[5])
        return ["pro", *cause, *_vp(k[6], "sg"), ",", *main, "."]
    if rhs[:3] == ("SUBJ", "wanted", "to"):
        # SUBJ wanted to VP_BASE , but SUBJ was DEGREE BAD_FEELING .
        subject, _ = _subject(k[0])
        other, gender = _subject(k[6])
        return [
            *subject,
            *_vp(k[3], "inf"),
            _verb("wanted", "sg"),
            ",",
            "sed",
            *other,
            *_predicate(k[8], k[9], gender, _verb("was", "sg")),
            ".",
        ]
    if rhs[0] == "from":  # from that day on , SUBJ was never BAD_FEELING again .
        subject, gender = _subject(k[5])
        return [
            "ekdetage",
            ",",
            *subject,
            "neniam",
            "plu",
            _adjective(k[8][1][0], gender),
            _verb("was", "sg"),
            ".",
        ]
    if rhs[:3] == ("SUBJ", "and", "the"):  # SUBJ and the ANIMAL ...
        subject = [*_subject(k[0])[0], "kaj", *_determined("the", k[3], "nom")[0]]
        rest = rhs[4:]
        if rest[0] == "became":  # became good friends
            return [*subject, "amiki", _adjective("good", "pl"), _verb("became", "pl"), "."]
        if rest[0] == "played":  # played together all day
            return [*subject, "tuttage", "kune", _verb("played", "pl"), "."]
        # were DEGREE GOOD_FEELING
        return [*subject, *_predicate(k[5], k[6], "pl", _verb("were", "pl")), "."]
    if rhs == ("SUBJ", "went", "home", "."):
        return [*_subject(k[0])[0], "hejmen", _verb("went", "sg"), "."]
    if rhs == ("it", "was", "a", "good", "day", "."):
        return ["mo", "tag", _adjective("good", "m"), _verb("was", "sg"), "."]
    raise ValueError(f"no Tolan rule for the sentence {rhs}")


def _hero_a(tree: Tree) -> tuple[list[str], str]:
    """HERO_A -> "a girl" as a subject: indefinite article, nominative."""
    return _determined(tree[1][0], tree[1][1], "nom")


def translate_tree(tree: Tree) -> list[str]:
    """The Tolan tokens of one English derivation tree (a SENTENCE, INTRO, BODY or ENDING)."""
    if tree[0] == "SENTENCE":
        tree = tree[1][0]
    return _clause(tree)


# ---------------------------------------------------------------------- references and checking
def references(english: str) -> list[str]:
    """The reference translations of an English sentence of the story grammar, sorted (almost
    always one); ``[]`` when the grammar does not derive the sentence."""
    return sorted({render(translate_tree(t)) for t in parse(english)})


def _analyse(word: str) -> tuple[str, str]:
    """(lemma, inflection) of a Tolan word: articles, adjectives, verbs, "it" and "named"
    inflect; any other word is its own lemma."""
    return _INFLECTED.get(word, (word, ""))


def _inflection_table() -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {}
    for definite in (True, False):
        for g in GENDER_VOWEL:
            for case in CASE_SUFFIX:
                table[_article(definite, g, case)] = ("<the>" if definite else "<a>", g + case)
    for case in CASE_SUFFIX:
        table["t" + GENDER_VOWEL["n"] + CASE_SUFFIX[case]] = ("<it>", case)
    for stem in ADJECTIVES.values():
        for agree, ending in ENDING.items():
            table[stem + ending] = (stem + "-", agree)
    for agree, ending in ENDING.items():
        table["nomit" + ending] = ("nomit-", agree)
    for stem in VERBS.values():
        for form, ending in VERB_ENDING.items():
            table[stem + ending] = (stem + "-", form)
    return table


_INFLECTED = _inflection_table()


@dataclass(frozen=True)
class Verdict:
    """The checker's answer: ``ok`` and a short ``reason`` ("correct", "wrong word order",
    "wrong agreement", "wrong word order and agreement", "wrong words", or "not a sentence of the
    story grammar"), with the reference the candidate was compared with."""

    ok: bool
    reason: str
    reference: str | None = None

    def __bool__(self) -> bool:
        return self.ok


def check_translation(english: str, candidate: str) -> Verdict:
    """Is ``candidate`` a right Tolan translation of ``english``? If not, what is wrong with it:

    * "wrong word order": the reference's words, in another order;
    * "wrong agreement": the reference's words in its order, but an article, adjective, verb or
      participle in the wrong gender, case or number ("mon bol" for "man bol");
    * "wrong word order and agreement": both;
    * "wrong words": anything else (a word missing, added or mistranslated).

    The candidate is compared token by token (``render``'s form: "," and "." attached).
    """
    refs = references(english)
    if not refs:
        return Verdict(False, "not a sentence of the story grammar")
    if candidate.strip() in refs:
        return Verdict(True, "correct", candidate.strip())
    cand = tokenize_sentence(candidate) or candidate.split()
    best: Verdict | None = None
    for ref in refs:
        r = tokenize_sentence(ref)
        lemmas_c = [_analyse(w)[0] for w in cand]
        lemmas_r = [_analyse(w)[0] for w in r]
        if sorted(cand) == sorted(r):
            verdict = Verdict(False, "wrong word order", ref)
        elif lemmas_c == lemmas_r:
            verdict = Verdict(False, "wrong agreement", ref)
        elif sorted(lemmas_c) == sorted(lemmas_r):
            verdict = Verdict(False, "wrong word order and agreement", ref)
        else:
            verdict = Verdict(False, "wrong words", ref)
        if best is None or (best.reason == "wrong words" and verdict.reason != "wrong words"):
            best = verdict
    return best


def is_valid_translation(english: str, candidate: str) -> bool:
    """True exactly when ``candidate`` is one of the reference translations of ``english``."""
    return candidate.strip() in references(english)


# ---------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class Pair:
    """One English sentence and its Tolan translation (the reference of the sampled derivation)."""

    english: str
    tolan: str

    @property
    def length(self) -> int:
        """The English sentence's number of tokens (words, "," and ".")."""
        return len(tokenize_sentence(self.english))


def is_held_out(english: str) -> bool:
    """Is this English sentence in the test split? A tenth of all sentences are, chosen by a hash of
    the sentence (CRC-32), so that the split is the same for every seed and sample size."""
    return zlib.crc32(english.encode("utf-8")) % 10 == 0


def generate_pair(rng: random.Random) -> Pair:
    """One random English sentence of the story grammar and its Tolan translation."""
    tree = sample_tree(rng)
    return Pair(render(tree_words(tree)), render(translate_tree(tree)))


def generate_pairs(
    n: int,
    seed: int = 0,
    split: str | None = None,
    min_tokens: int = 1,
    max_tokens: int | None = None,
    unique: bool = False,
) -> list[Pair]:
    """``n`` random pairs from ``random.Random(seed)``: deterministic for a seed.

    ``split="train"`` keeps only sentences that are not held out, ``"test"`` only held-out ones
    (:func:`is_held_out`), ``None`` both. ``min_tokens`` / ``max_tokens`` bound the English length in
    tokens; ``unique=True`` skips a sentence already drawn.
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    rng = random.Random(seed)
    out: list[Pair] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 1000 * (n + 10):
            raise ValueError(
                f"found only {len(out)} of {n} pairs with split={split!r}, "
                f"{min_tokens} <= length <= {max_tokens}, unique={unique}: the grammar has too few"
            )
        tree = sample_tree(rng)
        words = tree_words(tree)
        if len(words) < min_tokens or (max_tokens is not None and len(words) > max_tokens):
            continue
        english = render(words)
        if split is not None and is_held_out(english) != (split == "test"):
            continue
        if unique:
            if english in seen:
                continue
            seen.add(english)
        out.append(Pair(english, render(translate_tree(tree))))
    return out


# ---------------------------------------------------------------------- a baseline and an alignment
def _lexical_translations() -> dict[str, set[str]]:
    """English word -> the Tolan words that can stand for it (any inflection)."""
    table: dict[str, set[str]] = {}

    def add(english: str, tolan: str) -> None:
        table.setdefault(english, set()).add(tolan)

    for english, (noun, _) in NOUNS.items():
        add(english, noun)
    for english, stem in ADJECTIVES.items():
        for ending in ENDING.values():
            add(english, stem + ending)
    for english, stem in VERBS.items():
        for ending in VERB_ENDING.values():
            add(english, stem + ending)
    for english, (pronoun, _) in PRONOUNS.items():
        add(english, pronoun)
    for english, word in {**POSSESSIVES, **POSTPOSITIONS}.items():
        add(english, word)
    for name in NAME_GENDER:
        add(name, name)
    add("friends", "amiki")
    add("named", "nomita")
    add("named", "nomito")
    add("named", "nomite")
    return table


_LEXICAL = _lexical_translations()
# the word a dictionary gives first: adjectives masculine, verbs past singular, "a" and "the" by
# their masculine subject form; words Tolan has no word of their own for are left out
# fmt: off
_GLOSS = {
    **{e: n for e, (n, _) in NOUNS.items()},
    **{e: s + ENDING["m"] for e, s in ADJECTIVES.items()},
    **{e: s + VERB_ENDING["sg"] for e, s in VERBS.items()},
    **{e: p for e, (p, _) in PRONOUNS.items()},
    **POSSESSIVES,
    **POSTPOSITIONS,
    **{w[0]: t for w, t in DEGREES.items()},
    "a": "mo", "an": "mo", "the": "ko", "and": "kaj", "but": "sed", "because": "pro",
    "then": "tiam", "later": "poste", "soon": "baldau", "suddenly": "subite", "again": "denove",
    "home": "hejmen", "with": "kun", "together": "kune", "never": "neniam", "friends": "amiki",
    "named": "nomito", "to": "al", "day": "tag", ",": ",", ".": ".",
    **{n: n for n in NAME_GENDER},
}
# fmt: on


def gloss(english: str) -> str:
    """A word-by-word "translation": each English word replaced by its first dictionary entry, in
    English order, no agreement (adjectives masculine, articles in the subject form). The baseline
    a model has to beat: it knows the words and nothing about Tolan's grammar."""
    tokens = tokenize_sentence(english)
    if tokens is None:
        raise ValueError(f"not in the corpus's written form: {english!r}")
    return render([_GLOSS[t] for t in tokens if t in _GLOSS])


def alignment(english: str, tolan: str) -> list[tuple[int, int]]:
    """Content-word links ``(tolan_position, english_position)`` of a pair: a Tolan noun,
    adjective, verb, pronoun, name, possessive or postposition and the English word it translates,
    where exactly one English word can be its source. Positions count tokens from 0."""
    src = tokenize_sentence(english)
    tgt = tokenize_sentence(tolan)
    if src is None or tgt is None:
        raise ValueError("both sentences must be in the corpus's written form")
    links = []
    for j, word in enumerate(tgt):
        sources = [i for i, e in enumerate(src) if word in _LEXICAL.get(e, ())]
        if len(sources) == 1:
            links.append((j, sources[0]))
    return links


# ---------------------------------------------------------------------- a shared word vocabulary
class TranslationVocab:
    """One word vocabulary for both languages (the paper shares one between source and target):
    ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, then every English and every Tolan token, sorted.
    English and Tolan share only "," "." and the names."""

    PAD, BOS, EOS = 0, 1, 2
    SPECIALS = ("<pad>", "<bos>", "<eos>")

    def __init__(self, words: Iterable[str] | None = None) -> None:
        words = sorted(set(words if words is not None else _all_words()) - set(self.SPECIALS))
        self.tokens: tuple[str, ...] = (*self.SPECIALS, *words)
        self.ids = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def english(cls) -> TranslationVocab:
        """English tokens only: a vocabulary for the source side alone."""
        return cls(STORY_GRAMMAR.vocabulary)

    @classmethod
    def tolan(cls) -> TranslationVocab:
        """Tolan tokens only: a vocabulary for the target side alone."""
        return cls(_tolan_words())

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"TranslationVocab({self.vocab_size} tokens)"

    def encode(self, sentence: str, bos: bool = False) -> list[int]:
        """A sentence -> ids, ending with ``<eos>`` (and starting with ``<bos>`` if asked)."""
        tokens = tokenize_sentence(sentence)
        if tokens is None:
            raise ValueError(
                f"not in the corpus's written form (lowercase, ', ' and '.'): {sentence!r}"
            )
        unknown = [t for t in tokens if t not in self.ids]
        if unknown:
            raise ValueError(f"words outside the vocabulary: {unknown}")
        return ([self.BOS] if bos else []) + [self.ids[t] for t in tokens] + [self.EOS]

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Ids -> a sentence, stopping at the first ``<eos>``, skipping ``<pad>`` and ``<bos>``."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if i == self.EOS:
                break
            if i in (self.PAD, self.BOS):
                continue
            out.append(self.tokens[i])
        return render(out)

    def batch(
        self, pairs: Sequence[Pair], tgt_vocab: TranslationVocab | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(src, tgt)``: English ids ending in ``<eos>``, Tolan ids ``<bos> ... <eos>``, padded.
        The Tolan side uses ``tgt_vocab`` if given (separate vocabularies), else this one."""
        tgt_vocab = tgt_vocab or self
        return (
            self._pad([self.encode(p.english) for p in pairs]),
            tgt_vocab._pad([tgt_vocab.encode(p.tolan, bos=True) for p in pairs]),
        )

    def encode_batch(self, sentences: Sequence[str]) -> Tensor:
        """English sentences -> a padded ``(B, S)`` source batch."""
        return self._pad([self.encode(s) for s in sentences])

    def _pad(self, rows: list[list[int]]) -> Tensor:
        out = torch.full((len(rows), max(map(len, rows))), self.PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out


# Tolan words that are neither inflected nor in one of the tables above
FUNCTION_WORDS = (
    *("antaulonge", "jen", "kaj", "pro", "sed", "ekdetage", "neniam", "plu", "amiki", "kune"),
    *("hejmen", "tag", "kun", "al"),
)


def _tolan_words() -> set[str]:
    """Every token the transfer can write (inflected forms the grammar never uses included)."""
    words = {noun for noun, _ in NOUNS.values()} | set(_INFLECTED) | set(POSSESSIVES.values())
    words |= set(POSTPOSITIONS.values()) | set(TIMES.values()) | set(HOW_LONG.values())
    words |= set(DEGREES.values()) | {p for p, _ in PRONOUNS.values()} | set(FUNCTION_WORDS)
    return words | set(NAME_GENDER) | {",", "."}


def _all_words() -> set[str]:
    """Every English token of the grammar and every Tolan token."""
    return set(STORY_GRAMMAR.vocabulary) | _tolan_words()
