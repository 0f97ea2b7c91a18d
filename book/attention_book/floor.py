"""The corpus's entropy floor: the lowest loss any model can reach on the story corpus.

A language model's validation loss is a cross-entropy, and a cross-entropy is never below the
entropy of the text: ``E[-log q(story)] >= E[-log p(story)] = H(story)``. Usually nobody knows ``p``;
here we do, because :func:`~attention_book.grammar.generate_story` wrote the corpus. So the floor
can be *computed*.

What a reader should notice:

* :func:`story_log_prob` is exact: it sums over every hidden choice of the generator (the hero's
  name, noun and adjective the text may never reveal) and over every derivation of each sentence
  (the grammar is ambiguous: "she found it." is a V_THING or a V_FOOD sentence). It is the memoised
  recogniser of :meth:`Grammar.recognizes` with sets of end positions replaced by sums of
  probabilities (the *inside* algorithm), and it reads the generator's own choice probabilities from
  ``Grammar._choice_table``, so generator and scorer cannot disagree;
* :func:`corpus_floor` averages ``-log p`` over fresh stories: an unbiased Monte Carlo estimate of
  ``H(story)``, with an interval. Around it sit numbers that are exact (``H(hero)``, the derivation
  entropy, the mean story length) or bounds, each named as such;
* per token it is the same nats per story over a different count: longer tokens, higher floor.
"""

from __future__ import annotations

import math
import random
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate, pairwise, product

from transformer_core.data import load_corpus

from .grammar import _HEROES, LEXICON, STORY_GRAMMAR, VOWELS, generate_story, tokenize_sentence

__all__ = ["FLOOR_NATS_PER_STORY", "FLOOR_NATS_PER_STORY_SE", "FloorEstimate", "chars_per_story",
           "corpus_floor", "derivation_entropy", "floor_per_token", "hero_entropy", "story_log_prob",
           "window_reach"]

# The floor, estimated once with many stories so that the chapters need not wait for it:
# corpus_floor(50_000, seed=7) (``python -m attention_book.floor`` recomputes it; a test checks it
# against fresh stories). Its standard error is small next to the gaps the book measures.
FLOOR_NATS_PER_STORY = 48.739
FLOOR_NATS_PER_STORY_SE = 0.083

_G = STORY_GRAMMAR
_N_BODY = (1, 2, 3, 4)  # rng.randint(1, 4): the number of BODY sentences, uniform
_ADJ = LEXICON["ADJ_HERO"]
Hero = tuple[str, str, str, str, str]  # pronoun, possessive, name, noun, adjective


def _heroes() -> list[tuple[Hero, float]]:
    """Every hero ``generate_story`` can draw, with its probability (1,326 of them)."""
    out = []
    for pronoun, poss, nouns, names in _HEROES:
        p = 1 / (len(_HEROES) * len(names) * len(nouns) * len(_ADJ))
        out += [((pronoun, poss, nm, nn, a), p) for nm, nn, a in product(names, nouns, _ADJ)]
    return out


def _restrict(hero: Hero) -> tuple[tuple[str, frozenset[str]], ...]:
    """The ``restrict`` key ``generate_story`` builds for this hero, as ``Grammar.generate`` sorts it."""
    names = ("PRONOUN", "POSS", "NAME", "N_HERO", "ADJ_HERO")
    return tuple(sorted((k, frozenset([w])) for k, w in zip(names, hero, strict=True)))


_TABLES: dict[tuple, tuple[dict, dict]] = {}


def _probs(hero: Hero) -> tuple[dict[str, list[tuple[tuple[str, ...], float]]], dict[str, dict]]:
    """The generator's choice table for this hero, as probabilities: rules and word lists."""
    key = _restrict(hero)
    hit = _TABLES.get(key)
    if hit is None:
        rules, words = {}, {}
        for nt, (alts, cum) in _G._choice_table(key).items():
            ps = [(c - b) / cum[-1] for b, c in pairwise([0, *cum])]  # [] for a dead one
            rules[nt] = list(zip(alts, ps, strict=True))
            if nt in _G._word_lists:
                words[nt] = {rhs[0]: p for rhs, p in rules[nt]}
        hit = _TABLES[key] = (rules, words)
    return hit


def _inside(toks: tuple[str, ...], symbol: str, hero: Hero) -> float:
    """P(``symbol`` derives exactly ``toks`` | hero), summed over every derivation.

    The recogniser of :meth:`Grammar.recognizes`, with ``ends(X, i)`` now a dict {end: probability}
    instead of a set: sequencing multiplies, alternatives add. Same first-set pruning, same memo.
    """
    rules, words = _probs(hero)
    nullable, first, n = _G._nullable, _G._first, len(toks)
    memo: dict[tuple[str, int], dict[int, float]] = {}

    def ends(sym: str, i: int) -> dict[int, float]:
        hit = memo.get((sym, i))
        if hit is not None:
            return hit
        out: dict[int, float] = {}
        if sym not in nullable and (i >= n or toks[i] not in first[sym]):
            pass
        elif sym in words:
            p = words[sym].get(toks[i], 0.0)
            if p:
                out[i + 1] = p
        else:
            for rhs, p_alt in rules[sym]:
                pos = {i: p_alt}
                for s in rhs:
                    nxt: dict[int, float] = {}
                    if s in rules:
                        for j, pj in pos.items():
                            for e, q in ends(s, j).items():
                                nxt[e] = nxt.get(e, 0.0) + pj * q
                    else:
                        nxt = {j + 1: pj for j, pj in pos.items() if j < n and toks[j] == s}
                    pos = nxt
                    if not pos:
                        break
                for e, q in pos.items():
                    out[e] = out.get(e, 0.0) + q
        memo[(sym, i)] = out
        return out

    return ends(symbol, 0).get(n, 0.0)


def _cls(word: str, seen: set[str] | frozenset[str]) -> str:
    """A hero word as far as a text can tell: itself if the text has it, else only its a/an class.

    A word the text never writes can only matter through which word lists become empty (an owl hero
    leaves ``N_HERO_C`` empty), and that depends on its first letter only.
    """
    return word if word in seen else ("<V>" if word[0] in VOWELS else "<C>")


_SENT: dict[tuple, float] = {}


def _sentence_prob(kind: str, toks: tuple[str, ...], hero: Hero) -> float:
    """P(sentence | kind, hero), cached by the sentence and the hero's canonical key."""
    seen = frozenset(toks)
    key = (kind, toks, *(_cls(w, seen) for w in hero))
    p = _SENT.get(key)
    if p is None:
        if len(_SENT) > 1 << 18:
            _SENT.clear()
        p = _SENT[key] = _inside(toks, kind, hero)
    return p


def _sentences(story: object) -> list[tuple[str, ...]] | None:
    if not isinstance(story, str):
        raise TypeError(f"story must be a str, got {type(story).__name__}")
    if not story:
        raise ValueError("story is empty: a story has 3-6 sentences")
    toks = tokenize_sentence(story)
    if not toks or story != story.strip() or toks[-1] != ".":
        return None
    sents, start = [], 0
    for i, t in enumerate(toks):
        if t == ".":
            sents.append(tuple(toks[start : i + 1]))
            start = i + 1
    return sents if 3 <= len(sents) <= 2 + max(_N_BODY) else None


def _prob_given_hero(sents: list[tuple[str, ...]], hero: Hero) -> float:
    p = 1 / len(_N_BODY)  # the sentence count is fixed by the text: one value of randint(1, 4)
    kinds = ["INTRO"] + ["BODY"] * (len(sents) - 2) + ["ENDING"]
    for kind, s in zip(kinds, sents, strict=True):
        p *= _sentence_prob(kind, s, hero)
        if p == 0.0:
            break
    return p


def story_log_prob(story: str) -> float:
    """The exact natural log of P(``generate_story`` writes exactly ``story``); ``-inf`` if never.

    ``story`` is one story as ``generate_story`` returns it (one line, no separator). Text that is not
    in canonical form, has the wrong number of sentences, or any sentence the grammar (with one
    coherent hero) cannot derive, gets ``-inf``. Not a ``str``: ``TypeError``; empty: ``ValueError``.

    The sum over 1,326 heroes is grouped: heroes that agree on every word the story writes and on the
    a/an class of the rest give the same probability, so a story needs only a few dozen products.
    """
    sents = _sentences(story)
    if sents is None:
        return -math.inf
    seen = frozenset().union(*sents)
    total = 0.0
    for pronoun, poss, nouns, names in _HEROES:
        groups = [Counter(_cls(w, seen) for w in ws) for ws in (names, nouns, _ADJ)]
        reps = [{_cls(w, seen): w for w in reversed(ws)} for ws in (names, nouns, _ADJ)]
        size = len(_HEROES) * len(names) * len(nouns) * len(_ADJ)
        for keys in product(*groups):
            weight = math.prod(g[k] for g, k in zip(groups, keys, strict=True)) / size
            hero = (pronoun, poss, *(r[k] for r, k in zip(reps, keys, strict=True)))
            total += weight * _prob_given_hero(sents, hero)
    return math.log(total) if total > 0 else -math.inf


def hero_entropy() -> float:
    """H(hero) in nats, exact: what the story's hidden first draw holds (at most, what it reveals)."""
    return -sum(p * math.log(p) for _, p in _heroes())


def _expect(hero: Hero) -> dict[str, tuple[float, float]]:
    """(derivation entropy, expected characters) of INTRO, BODY, ENDING, by dynamic programming.
    A word counts with the space after it, "," and "." as one: a story's sentences then add up to
    its length plus one, i.e. the story with its "\\n\\n" minus one."""
    rules, _ = _probs(hero)
    memo: dict[str, tuple[float, float]] = {}

    def ev(sym: str) -> tuple[float, float]:
        if sym not in rules:
            return 0.0, (1.0 if sym in ",." else len(sym) + 1.0)
        if sym not in memo:
            h = c = 0.0
            for rhs, p in rules[sym]:
                parts = [ev(s) for s in rhs]
                h += p * (-math.log(p) + sum(x for x, _ in parts))
                c += p * sum(y for _, y in parts)
            memo[sym] = (h, c)
        return memo[sym]

    return {k: ev(k) for k in ("INTRO", "BODY", "ENDING")}


@lru_cache(maxsize=1)
def _story_expectations() -> tuple[float, float]:
    """(derivation entropy per story, expected characters per story incl. "\\n\\n"), both exact."""
    mean_body = sum(_N_BODY) / len(_N_BODY)
    h_total = hero_entropy() + math.log(len(_N_BODY))
    chars = 1.0
    for hero, p in _heroes():
        e = _expect(hero)
        h_total += p * (e["INTRO"][0] + mean_body * e["BODY"][0] + e["ENDING"][0])
        chars += p * (e["INTRO"][1] + mean_body * e["BODY"][1] + e["ENDING"][1])
    return h_total, chars


def chars_per_story() -> float:
    """The expected characters per story in the stream, the two "\\n\\n" included: exact."""
    return _story_expectations()[1]


def floor_per_token(tokenizer=None, text: str | None = None) -> float:
    """The floor in nats per token of ``tokenizer`` (per character without one), from
    :data:`FLOOR_NATS_PER_STORY`.

    Per character it divides by the exact expected story length. Per token it divides by the
    tokens per story of ``text`` (default: the committed corpus), each story counted with the blank
    line that follows it, as a model reads the stream.
    """
    if tokenizer is None:
        return FLOOR_NATS_PER_STORY / chars_per_story()
    if text is None:
        text = load_corpus()
    stories = [s for s in text.split("\n\n") if s.strip()]
    if not stories:
        raise ValueError("text holds no stories (stories are separated by blank lines)")
    n_tokens = len(tokenizer.encode("".join(s.strip() + "\n\n" for s in stories)))
    return FLOOR_NATS_PER_STORY * len(stories) / n_tokens


def derivation_entropy() -> float:
    """H(hero, sentence count, every derivation) in nats per story: exact, and an UPPER bound on
    H(story), because the story is a function of them (ambiguity and unseen choices only lower it)."""
    return _story_expectations()[0]


def _hero_of(state: object) -> Hero:
    """Replay ``generate_story``'s first four draws from a copy of the rng: the story's true hero."""
    rng = random.Random()
    rng.setstate(state)
    pronoun, poss, nouns, names = rng.choice(_HEROES)
    return pronoun, poss, rng.choice(names), rng.choice(nouns), rng.choice(_ADJ)


@dataclass(frozen=True)
class FloorEstimate:
    """The entropy floor of the corpus, per story, per character and (via :meth:`per_token`) per token.

    Estimates (Monte Carlo over ``n_stories`` fresh stories, exact ``p``): ``nats_per_story`` (with
    ``se``), ``nats_given_hero`` (H(story | hero), a LOWER bound on the floor). Exact:
    ``hero_entropy``, ``derivation_entropy`` (an UPPER bound), ``chars_per_story`` (expected length
    including the two "\\n\\n" characters; ``sample_chars_per_story`` is the sample's mean).
    """

    n_stories: int
    nats_per_story: float
    se: float
    nats_given_hero: float
    hero_entropy: float
    derivation_entropy: float
    chars_per_story: float
    sample_chars_per_story: float
    stories: tuple[str, ...] = field(repr=False, compare=False)
    nats: tuple[float, ...] = field(repr=False, compare=False)

    @property
    def interval(self) -> tuple[float, float]:
        """95% interval of the nats per story (normal approximation, mean ± 1.96 se)."""
        return self.nats_per_story - 1.96 * self.se, self.nats_per_story + 1.96 * self.se

    @property
    def hero_unknown(self) -> float:
        """H(hero | story), an estimate: what the text leaves open about its hero, in nats. From the
        identity H(story) = H(hero) + H(story | hero) - H(hero | story), which holds story by story."""
        return self.hero_entropy + self.nats_given_hero - self.nats_per_story

    @property
    def nats_per_char(self) -> float:
        """The floor per character of the stream: estimated nats / exact expected characters."""
        return self.nats_per_story / self.chars_per_story

    @property
    def char_interval(self) -> tuple[float, float]:
        lo, hi = self.interval
        return lo / self.chars_per_story, hi / self.chars_per_story

    def per_token(self, tokenizer) -> tuple[float, tuple[float, float]]:
        """(floor in nats per token, its 95% interval) for ``tokenizer``: total nats / total tokens.

        The same stories, each followed by "\\n\\n", encoded as one stream; each token is counted for
        the story its first character belongs to (the ratio's interval needs per-story counts). With a
        character tokenizer this divides by the sample's characters, not the exact expectation.
        """
        starts, bounds = _unit_starts(self.stories, tokenizer)
        counts = [bisect_left(starts, b) - bisect_left(starts, a) for a, b, _ in bounds]
        ratio = sum(self.nats) / sum(counts)
        mean_t = sum(counts) / len(counts)
        resid = [x - ratio * t for x, t in zip(self.nats, counts, strict=True)]
        se = math.sqrt(sum(r * r for r in resid) / (len(resid) - 1) / len(resid)) / mean_t
        return ratio, (ratio - 1.96 * se, ratio + 1.96 * se)


def _unit_starts(stories: Sequence[str], tokenizer) -> tuple[Sequence[int], list]:
    """Where each token starts in the stream of ``stories`` (each + "\\n\\n"); characters if no
    tokenizer. Also each story's (start, end, sentence ends) in characters of the stream."""
    stream = "".join(s + "\n\n" for s in stories)
    bounds, pos = [], 0
    for s in stories:
        ends = [pos + m.end() + 1 for m in re.finditer(r"\.", s)]  # a sentence owns the space after
        ends[-1] = pos + len(s) + 2  # ... and the last one the "\n\n"
        bounds.append((pos, pos + len(s) + 2, ends))
        pos += len(s) + 2
    if tokenizer is None:
        return range(len(stream)), bounds
    ids = tokenizer.encode(stream)
    lengths = [len(tokenizer.decode([i])) for i in ids]
    if sum(lengths) != len(stream):
        raise ValueError("decoding tokens one by one does not give back the text")
    return [0, *accumulate(lengths[:-1])], bounds


def corpus_floor(n_stories: int = 2000, seed: int = 1) -> FloorEstimate:
    """Estimate H(story) as the mean of ``-log p(story)`` over ``n_stories`` fresh stories.

    ``p`` is exact (:func:`story_log_prob`), so the mean is an unbiased estimate of the true entropy;
    its standard error shrinks as 1/sqrt(n). Stories come from ``random.Random(seed)`` (seed 0 would
    repeat the committed corpus). Each story's true hero is recovered too, for H(story | hero).
    """
    if not isinstance(n_stories, int) or n_stories < 2:
        raise ValueError(f"n_stories must be an int >= 2, got {n_stories!r}")
    rng = random.Random(seed)
    stories, nats, given = [], [], []
    for _ in range(n_stories):
        hero = _hero_of(rng.getstate())
        story = generate_story(rng)
        stories.append(story)
        nats.append(-story_log_prob(story))
        given.append(-math.log(_prob_given_hero(_sentences(story), hero)))
    mean = sum(nats) / n_stories
    var = sum((x - mean) ** 2 for x in nats) / (n_stories - 1)
    h_deriv, chars = _story_expectations()
    return FloorEstimate(
        n_stories, mean, math.sqrt(var / n_stories), sum(given) / n_stories, hero_entropy(),
        h_deriv, chars, sum(len(s) + 2 for s in stories) / n_stories, tuple(stories), tuple(nats),
    )


def window_reach(stories: Sequence[str], context: int, tokenizer=None) -> tuple[float, float]:
    """(share of positions whose window reaches their story's start, bound on the excess loss).

    A position whose ``context`` previous tokens (characters without ``tokenizer``) hold its story's
    start can reach the floor. Otherwise the window lacks at most the hero and the story's place
    (which sentence of how many: 18 pairs), provided it holds the sentence from its start: then a
    predictor using only that sentence loses at most H(hero) + log 18 nats over it. The bound is
    that, per token, averaged over ``stories`` (``inf`` if a sentence is longer than the window).
    """
    if not isinstance(context, int) or context < 1:
        raise ValueError(f"context must be a positive int, got {context!r}")
    starts, bounds = _unit_starts(stories, tokenizer)
    reached = total = cut = 0
    valid = True
    for a, b, ends in bounds:
        first = bisect_left(starts, a)
        n = bisect_left(starts, b) - first
        reached += min(n, context + 1)  # position i (0-based) sees i tokens of its own story
        total += n
        prev = 0
        for e in ends:
            last = bisect_left(starts, e) - first  # the sentence holds positions prev .. last-1
            cut += last - 1 > context
            valid &= last - prev <= context + 1
            prev = last
    bound = (hero_entropy() + math.log(18)) * cut / total if valid else math.inf
    return reached / total, bound


def main() -> None:  # python -m attention_book.floor: recompute FLOOR_NATS_PER_STORY
    est = corpus_floor(50_000, seed=7)
    print(f"FLOOR_NATS_PER_STORY = {est.nats_per_story:.3f}\nFLOOR_NATS_PER_STORY_SE = {est.se:.3f}")
    print(f"per character: {est.nats_per_char:.4f} (95% interval {est.char_interval[0]:.4f}-{est.char_interval[1]:.4f})")


if __name__ == "__main__":
    main()
