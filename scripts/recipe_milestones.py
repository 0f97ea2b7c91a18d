"""Measure the path chapter 07 teaches: from a character model to the recipe that writes stories.

    python scripts/recipe_milestones.py            # writes chapters/data/07_milestones.csv

Each milestone changes one thing and gets the same budget of about 45 s of training on a quiet
two-core laptop CPU: the update counts below are what that budget buys for each model, measured on
such a machine (chapter 07 prints the time its own run takes). Every milestone is trained with three
seeds (model init and batch order) on the chapter's split of the committed corpus, and scored the
way the chapter scores its model: the validation loss in nats per character (the sliding-window
loss of transformer_core.evaluation, comparable across tokenizers and with the corpus's floor), and
the grammatical share of sentences sampled at temperature 1.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

from attention_book.grammar import grammatical_share
from transformer_core import GPT, GPTConfig
from transformer_core.data import load_corpus, train_val_split
from transformer_core.evaluation import nats_per_char, sample_stories, text_loss
from transformer_core.tokenizers import ByteBPETokenizer, CharTokenizer
from transformer_core.training import TrainConfig, Trainer

OUT = Path(__file__).resolve().parent.parent / "chapters" / "data" / "07_milestones.csv"

# name, tokenizer, model shape, updates, batch, lr, what changed
MILESTONES = [
    ("characters", "char", dict(context_length=64, n_layer=2, n_head=4, d_model=64), 1200, 16, 1e-2,
     "chapter 07's first recipe: 1,200 updates (about 25 s)"),
    ("characters, 45 s", "char", dict(context_length=64, n_layer=2, n_head=4, d_model=64), 2600, 16, 1e-2,
     "the same model, trained for the whole budget"),
    ("words (BPE 803)", "bpe", dict(context_length=128, n_layer=4, n_head=4, d_model=128), 200, 32, 3e-3,
     "byte-level BPE saturated at 803 tokens (every word one token), a 4 x 128 GPT"),
    ("words, 2 layers, context 64", "bpe", dict(context_length=64, n_layer=2, n_head=4, d_model=128), 580, 32, 1e-2,
     "half the layers and half the context: 2.9x the updates in the same time"),
]
SEEDS = (0, 1, 2)


def run(name, kind, shape, steps, batch, lr, seed, text):
    tok = CharTokenizer.from_text(text) if kind == "char" else ByteBPETokenizer.train(text, vocab_size=803)
    ids = torch.tensor(tok.encode(text))
    train_ids, val_ids = train_val_split(ids, val_fraction=0.1)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, **shape))
    cfg = TrainConfig(max_steps=steps, batch_size=batch, lr=lr, warmup_steps=min(100, steps // 10),
                      grad_clip=1.0, eval_interval=0, log_interval=50, seed=seed, progress=False)
    wall, cpu = time.perf_counter(), time.process_time()
    Trainer(model, train_ids, val_ids, cfg).fit()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    loss = nats_per_char(text_loss(model, val_ids), val_ids, tok)
    length = 600 if kind == "char" else 150
    share = grammatical_share(sample_stories(model, tok, n=96, max_new_tokens=length, seed=seed))
    return dict(milestone=name, seed=seed, updates=steps, seconds=round(wall, 1), cpu_seconds=round(cpu, 1),
                val_nats_per_char=round(loss, 4), grammatical=share.k, sentences=share.n)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", metavar="MILESTONE", help="re-run one milestone, keep the other rows of --out")
    args = parser.parse_args(argv)
    names = [m[0] for m in MILESTONES]
    if args.only is not None and args.only not in names:
        parser.error(f"--only {args.only!r}: not a milestone; choose one of {names}")
    torch.set_flush_denormal(True)
    text = load_corpus()
    kept = {}
    if args.only is not None:
        with args.out.open(newline="") as f:
            for row in csv.DictReader(f):
                kept.setdefault(row["milestone"], []).append(row)
    rows = []
    for name, kind, shape, steps, batch, lr, _ in MILESTONES:
        if args.only is not None and name != args.only:
            rows.extend(kept.get(name, []))
            continue
        for seed in SEEDS:
            rows.append(run(name, kind, shape, steps, batch, lr, seed, text))
            print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
