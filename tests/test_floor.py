"""The corpus's entropy floor: exact story probabilities, the Monte Carlo floor and its bounds."""

import math
import random

import pytest

from attention_book import floor, grammar
from attention_book.grammar import STORY_GRAMMAR, render
from transformer_core import data
from transformer_core.tokenizers import ByteBPETokenizer, CharTokenizer
from transformer_core.viz import plot_history

LILY = ("she", "her", "lily", "girl", "little")


@pytest.fixture(scope="module")
def estimate():
    return floor.corpus_floor(n_stories=300, seed=1)


def _enumerate(symbol, table, memo):
    """Every string `symbol` derives, with its probability summed over derivations (brute force)."""
    if symbol not in table:
        return {(symbol,): 1.0}
    if symbol not in memo:
        alts, cum = table[symbol]
        out = {}
        for rhs, lo, hi in zip(alts, [0, *cum], cum, strict=False):
            partial = {(): (hi - lo) / cum[-1]}
            for s in rhs:
                sub = _enumerate(s, table, memo)
                partial = {a + b: p * q for a, p in partial.items() for b, q in sub.items()}
            for toks, p in partial.items():
                out[toks] = out.get(toks, 0.0) + p
        memo[symbol] = out
    return memo[symbol]


@pytest.mark.parametrize("hero", [LILY, ("it", "its", "pip", "owl", "old")])
@pytest.mark.parametrize("kind", ["INTRO", "ENDING"])
def test_inside_probabilities_of_an_enumerable_kind_match_brute_force_and_sum_to_one(kind, hero):
    table = STORY_GRAMMAR._choice_table(floor._restrict(hero))
    strings = _enumerate(kind, table, {})
    assert sum(strings.values()) == pytest.approx(1.0, abs=1e-12)
    for toks, p in list(strings.items())[::7]:
        assert floor._inside(toks, kind, hero) == pytest.approx(p, rel=1e-12)


def test_an_ambiguous_sentence_sums_its_derivations():
    # BODY -> OPENER(ε) SUBJ(PRONOUN) VP . ; VP -> V_THING it WHERE(ε) or V_FOOD it
    p = 8 / 19 * 6 / 10 * 3 / 6 * (4 / 20 * 1 / 15 * 1 / 5 * 3 / 5 + 2 / 20 * 1 / 10 * 1 / 5)
    toks = tuple("she found it .".split())
    assert floor._inside(toks, "BODY", LILY) == pytest.approx(p, rel=1e-12)


def test_a_sentence_probability_matches_its_frequency_in_samples():
    rng, n = random.Random(3), 4000
    restrict = {"PRONOUN": ["she"], "POSS": ["her"], "NAME": ["lily"], "N_HERO": ["girl"],
                "ADJ_HERO": ["little"]}
    hits = sum(render(STORY_GRAMMAR.generate(rng, "INTRO", restrict)) == "lily was a little girl."
               for _ in range(n))
    p = floor._inside(tuple("lily was a little girl .".split()), "INTRO", LILY)
    assert p == pytest.approx(1 / 12)
    assert abs(hits / n - p) < 4 * math.sqrt(p * (1 - p) / n)


def _brute_force_log_prob(story):
    sents = floor._sentences(story)
    total = 0.0
    kinds = ["INTRO"] + ["BODY"] * (len(sents) - 2) + ["ENDING"]
    for hero, p_hero in floor._heroes():
        p = p_hero / 4
        for kind, s in zip(kinds, sents, strict=True):
            p *= floor._inside(s, kind, hero)
        total += p
    return math.log(total)


def test_grouping_heroes_by_canonical_key_changes_nothing():
    rng, picked = random.Random(11), {}
    while len(picked) < 3:
        story = grammar.generate_story(rng)
        for word in (" max ", " owl", " old "):
            if word in story and word not in picked and len(story) < 200:
                picked[word] = story
    assert len(floor._heroes()) == 1326
    for story in picked.values():
        assert floor.story_log_prob(story) == pytest.approx(_brute_force_log_prob(story), rel=1e-12)


@pytest.mark.parametrize("text", [
    "hello world.",
    "once upon a time, there was a little girl named lily. she found an red ball. she was happy.",
    "once upon a time, there was a little girl named lily. he was happy. she was happy.",  # incoherent
    "once upon a time, there was a little girl named lily. she was happy.",  # two sentences
    "once upon a time, there was a little girl named lily. she was happy. she was happy.\n",
    "once upon a time, there was a little girl named lily." + " she was happy." * 6,  # seven
    "Once upon a time, there was a little girl named lily. she was happy. she was happy.",
])
def test_a_non_story_has_probability_zero(text):
    assert floor.story_log_prob(text) == -math.inf


def test_bad_input_is_refused_clearly():
    with pytest.raises(TypeError, match="str"):
        floor.story_log_prob(b"lily was a girl.")
    with pytest.raises(ValueError, match="empty"):
        floor.story_log_prob("")
    with pytest.raises(ValueError, match="n_stories"):
        floor.corpus_floor(n_stories=1)
    with pytest.raises(ValueError, match="context"):
        floor.window_reach(["lily was a girl."], 0)


def test_the_floor_matches_an_independent_sample_the_committed_corpus(estimate):
    stories = data.load_corpus().strip().split("\n\n")[:300]
    nats = [-floor.story_log_prob(s) for s in stories]
    mean = sum(nats) / len(nats)
    se = math.sqrt(sum((x - mean) ** 2 for x in nats) / (len(nats) - 1) / len(nats))
    assert abs(mean - estimate.nats_per_story) < 3 * math.hypot(se, estimate.se)
    lo, hi = estimate.interval
    assert lo < estimate.nats_per_story < hi and hi - lo == pytest.approx(2 * 1.96 * estimate.se)
    assert all(math.isfinite(x) for x in nats)


def test_exact_numbers_and_bounds_bracket_the_estimate(estimate):
    f = estimate
    assert f.hero_entropy == pytest.approx(
        math.log(3) + (2 * math.log(9) + math.log(7) + math.log(12)) / 3 + math.log(13))
    assert f.nats_given_hero < f.nats_per_story < f.nats_given_hero + f.hero_entropy
    assert f.nats_given_hero + f.hero_entropy < f.derivation_entropy == floor.derivation_entropy()
    assert 0 < f.hero_unknown < f.hero_entropy
    # story by story: p(story) >= p(hero) p(story | hero) for its true hero
    rng = random.Random(1)
    for _ in range(30):
        hero = floor._hero_of(rng.getstate())
        story = grammar.generate_story(rng)
        p_hero = dict(floor._heroes())[hero]
        p_given = floor._prob_given_hero(floor._sentences(story), hero)
        assert floor.story_log_prob(story) >= math.log(p_hero * p_given) - 1e-9
    # the exact expected length agrees with the committed corpus (2,800 stories)
    lengths = [len(s) + 2 for s in data.load_corpus().strip().split("\n\n")]
    mean = sum(lengths) / len(lengths)
    sd = math.sqrt(sum((x - mean) ** 2 for x in lengths) / len(lengths))
    assert abs(mean - f.chars_per_story) < 3 * sd / math.sqrt(len(lengths))
    assert f.char_interval[0] < f.nats_per_char < f.char_interval[1]
    assert f.nats_per_char < f.derivation_entropy / f.chars_per_story < 0.31


def test_per_token_floor_is_total_nats_over_total_tokens(estimate):
    text = data.load_corpus()
    stream = "".join(s + "\n\n" for s in estimate.stories)
    for tok in (CharTokenizer.from_text(text), ByteBPETokenizer.train(text, 300)):
        per_token, (lo, hi) = estimate.per_token(tok)
        assert per_token == pytest.approx(sum(estimate.nats) / len(tok.encode(stream)))
        assert lo < per_token < hi


def test_window_reach():
    stories = ["lily was a girl. she was happy. she went home."] * 3
    assert floor.window_reach(stories, 10_000) == (1.0, 0.0)
    share, bound = floor.window_reach(stories, 10)  # the first sentence is 17 characters
    assert share == pytest.approx(11 / 48) and bound == math.inf
    share, bound = floor.window_reach(stories, 32)  # only the last sentence reaches past it
    assert share == pytest.approx(33 / 48)
    assert bound == pytest.approx((floor.hero_entropy() + math.log(18)) * 1 / 48)


def test_plot_history_draws_the_floor():
    history = [{"step": 0, "train_loss": 2.0, "val_loss": 2.1}, {"step": 10, "train_loss": 1.0}]
    ax = plot_history(history, floor=0.3).axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "floor (corpus entropy)"]
    assert list(line.get_ydata()) == [0.3, 0.3] and line.get_linestyle() == "--"
    assert "floor (corpus entropy)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert not [ln for ln in plot_history(history).axes[0].get_lines() if "floor" in ln.get_label()]


def test_committed_floor_matches_fresh_stories():
    # FLOOR_NATS_PER_STORY came from 50,000 stories (seed 7); 1,500 fresh ones (another seed) must
    # agree within their combined noise (4 standard errors: a failure means the constant is stale)
    from attention_book.floor import FLOOR_NATS_PER_STORY, FLOOR_NATS_PER_STORY_SE

    est = floor.corpus_floor(1500, seed=23)
    noise = math.hypot(est.se, FLOOR_NATS_PER_STORY_SE)
    assert abs(est.nats_per_story - FLOOR_NATS_PER_STORY) < 4 * noise
    assert est.derivation_entropy > FLOOR_NATS_PER_STORY > est.nats_given_hero


def test_floor_per_token_and_per_char():
    from attention_book.floor import FLOOR_NATS_PER_STORY, chars_per_story, floor_per_token

    per_char = floor_per_token()
    assert per_char == pytest.approx(FLOOR_NATS_PER_STORY / chars_per_story())
    assert 0.29 < per_char < 0.31
    text = data.load_corpus()
    # one token per character: the per-token floor is the per-character floor, up to the sample's length
    assert floor_per_token(CharTokenizer.from_text(text)) == pytest.approx(per_char, rel=0.01)
    words = ByteBPETokenizer.train(text, vocab_size=803)
    assert floor_per_token(words) == pytest.approx(per_char * len(text) / len(words.encode(text)), rel=0.01)
    with pytest.raises(ValueError, match="no stories"):
        floor_per_token(words, text="\n\n")
