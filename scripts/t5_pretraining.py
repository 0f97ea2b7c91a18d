"""Span-corruption pre-training on the stories: the T5-style encoder-decoder beside the paper's.

Chapter 17 trains a small T5 live for a few dozen updates; this script (its code is
``attention_book.span_pretraining``) makes the numbers the chapter
compares, which need more updates and three seeds than a chapter's minute holds:

* both models, the same shape (d_model 128, 2 + 2 layers, 4 heads, d_ff 512), the same span-corrupted
  stories (15% of the words hidden in spans of 3 on average, T5's setting), the same optimiser and
  schedule at two peak learning rates (2e-3, and T5's own 1e-2), seeds 0, 1, 2;
* each run's held-out loss per target token and its accuracy on the hidden words (teacher-forced:
  the share of hidden words that are the model's first choice), on the last 300 stories, each
  corrupted once with a fixed seed;
* the T5 of seed 0 is saved (float16) for the chapter to study.

Run: ``python scripts/t5_pretraining.py`` (about 30 minutes of CPU time on one thread; `--seeds 1` runs one seed,
``--lrs 2e-3`` one learning rate).
"""

from __future__ import annotations

import argparse
import csv
import resource
import time
from pathlib import Path

import torch

from attention_book.span_pretraining import LR, STEPS, held_out_batch, story_data, train

DATA = Path(__file__).resolve().parents[1] / "chapters" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", default=[LR, 1e-2],
                        help="peak learning rates (default: %(default)s; 1e-2 is T5's own)")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--out", type=Path, default=DATA / "17_t5_vs_2017.csv")
    parser.add_argument("--weights", type=Path, default=DATA / "17_t5_stories.pt")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tok, train_set, val_set = story_data()
    val_batch = held_out_batch(tok, val_set)
    rows = []
    for seed in args.seeds:
        for lr in args.lrs:
            for kind in ("t5", "2017"):
                wall, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_utime
                model, (loss, accuracy) = train(kind, seed, tok, train_set, val_batch, args.steps,
                                                log=print, lr=lr)
                row = {"model": kind, "seed": seed, "lr": lr, "steps": args.steps,
                       "val_loss": round(loss, 4), "hidden_word_accuracy": round(accuracy, 4),
                       "params": sum(p.numel() for p in model.parameters()),
                       "cpu_s": round(resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu, 1),
                       "wall_s": round(time.perf_counter() - wall, 1)}
                print(row, flush=True)
                rows.append(row)
                if kind == "t5" and seed == 0 and lr == LR:  # the model chapter 17 studies
                    state = {k: v.half() for k, v in model.state_dict().items()}
                    torch.save({"config": model.config.to_dict(), "state_dict": state,
                                "steps": args.steps}, args.weights)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}" + (f" and {args.weights}" if 0 in args.seeds and LR in args.lrs else ""))


if __name__ == "__main__":
    main()
