#!/usr/bin/env python3
"""Measure the ranges that the experiment exercises accept (one per chapter, issue 16).

    python scripts/experiment_ranges.py            # every chapter's experiment
    python scripts/experiment_ranges.py ch06 ch16  # some of them

Each experiment exercise asks the reader to find a number out by running the chapter's code. This
script runs the same experiment for seeds 0, 1 and 2 (what a seed draws is said per experiment)
and prints each seed's answer and their range; the check in book/attention_book/exercises/chNN.py
accepts that range widened by the tolerance printed here (the step of the grid a reader would
search). Re-run it when the package's numerics change, and update the constants it names.
Each experiment is what the chapter's solution does for one seed; keep the two in step.
"""

from __future__ import annotations

import argparse
import random
import time

SEEDS = (0, 1, 2)


def story_halves(seed: int) -> tuple[str, str]:
    """The corpus's stories shuffled by ``seed``, cut in two: (training half, held-out half)."""
    from transformer_core.data import load_corpus

    stories = load_corpus().strip().split("\n\n")
    random.Random(seed).shuffle(stories)
    half = len(stories) // 2
    return "\n\n".join(stories[:half]) + "\n\n", "\n\n".join(stories[half:]) + "\n\n"


def ch06(seed: int) -> int:
    """The smallest BPE vocabulary whose compression of held-out stories reaches 90% of what the
    saturated vocabulary (trained until nothing is left to merge) reaches. A seed draws which
    half of the stories BPE is trained on; the other half is measured."""
    import warnings

    from transformer_core.tokenizers import ByteBPETokenizer

    train, held_out = story_halves(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "ran out of pairs to merge": what we ask for
        merges = ByteBPETokenizer.train(train, vocab_size=10_000).merges
    full = ByteBPETokenizer(merges).compression_ratio(held_out)
    sizes = range(256, 256 + len(merges) + 1)
    lo, hi = 0, len(sizes) - 1  # bisection: compression grows with the merges
    while lo < hi:
        mid = (lo + hi) // 2
        if ByteBPETokenizer(merges[: sizes[mid] - 256]).compression_ratio(held_out) >= 0.9 * full:
            hi = mid
        else:
            lo = mid + 1
    return sizes[lo]


def ch05(seed: int) -> float:
    """The embedding init std at which chapter 05's untrained GPT (GPT-2's init everywhere else,
    the head tied) scores 1 nat worse than the uniform guess ln V on the chapter's random
    sequences (initial_loss, seed 1). A seed draws the model's initial weights, the embedding
    included; bisection to 0.0005."""
    import math

    import torch
    import torch.nn.functional as F

    from transformer_core import GPT, GPTConfig
    from transformer_core.data import load_corpus

    vocab = len(sorted(set(load_corpus())))
    cfg = GPTConfig(vocab_size=vocab, context_length=32, n_layer=2, n_head=4, d_model=64)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(vocab, (16, 33), generator=g)

    def excess(std: float) -> float:
        torch.manual_seed(seed)
        model = GPT(cfg).eval()
        with torch.no_grad():
            torch.nn.init.normal_(model.tok_emb.weight, std=std)
            logits = model(ids[:, :-1])
        return float(F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())) - math.log(vocab)

    lo, hi = 0.02, 1.0
    while hi - lo > 0.0005:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if excess(mid) >= 1.0 else (mid, hi)
    return round(hi, 4)


def ch16(seed: int) -> int:
    """The fewest bits per weight (symmetric, one scale per row, every linear layer of the story
    model, head included) at which the validation loss stays within 1% of the float model's. A
    seed draws the held-out stories (generate_corpus seeds 2, 3, 4 for seeds 0, 1, 2; the model
    was trained on seed 1's): 200 of them in blocks of 20, as chapter 16 judges the model."""
    import copy

    import torch

    from attention_book.grammar import generate_corpus
    from transformer_core.evaluation import text_loss
    from transformer_core.story_model import load_story_model

    model, tok = load_story_model()
    stories = generate_corpus(seed=2 + seed, n_stories=400).strip().split("\n\n")
    blocks = [torch.tensor(tok.encode("\n\n" + "\n\n".join(stories[i : i + 20]))) for i in range(0, 200, 20)]
    chars = sum(len(tok.decode(ids[1:].tolist())) for ids in blocks)

    def loss(m) -> float:
        return sum(text_loss(m, ids) * (len(ids) - 1) for ids in blocks) / chars

    base = loss(copy.deepcopy(model).double())
    for bits in range(2, 9):
        levels = 2 ** (bits - 1) - 1  # one bit is the sign: 4 bits give -7..7
        m = copy.deepcopy(model).double()
        with torch.no_grad():
            for layer in m.modules():
                if isinstance(layer, torch.nn.Linear):
                    scale = layer.weight.abs().amax(dim=-1, keepdim=True) / levels
                    layer.weight.copy_(torch.round(layer.weight / scale) * scale)
        if loss(m) <= 1.01 * base:
            return bits
    return 9


EXPERIMENTS = {  # name -> (function of a seed, what it measures, tolerance added on each side)
    "ch06": (ch06, "smallest vocabulary reaching 90% of saturated compression (held out)", 16),
    "ch05": (ch05, "embedding init std at which the untrained loss is 1 nat above ln V", 0.005),
    "ch16": (ch16, "fewest bits per weight keeping the loss within 1% of float", 0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    for name in parser.parse_args().names:
        fn, what, tol = EXPERIMENTS[name]
        start = time.perf_counter()
        values = [fn(seed) for seed in SEEDS]
        per_seed = ", ".join(f"seed {s}: {v:g}" for s, v in zip(SEEDS, values, strict=True))
        print(f"{name}: {what}")
        print(f"  {per_seed}; range {min(values):g} to {max(values):g}; "
              f"accept {min(values) - tol:g} to {max(values) + tol:g} "
              f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
