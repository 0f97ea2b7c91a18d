"""Train the grid of GPTs that chapter 12a fits its scaling laws to, and write its table.

    python scripts/scaling_grid.py                 # writes chapters/data/12_scaling_grid.csv
    python scripts/scaling_grid.py --jobs 1        # one process instead of two
    python scripts/scaling_grid.py --resume        # go on where a stopped run left off

The grid: six widths of a 2-layer GPT (d_model 16 ... 128, heads of width 16) times four training
lengths (150, 400, 1,000 and 2,500 updates of 32 windows of 64 tokens: 0.3M, 0.8M, 2M and 5.1M
tokens), 24 runs with seed 0 (model init and batch order), and the shortest run of every width again
with seeds 1 and 2 (``--repeat-seeds``), to measure how far a loss moves with the seed alone: 36 runs.
The recipe (attention_book.scaling.RECIPE, grid_model_config, grid_train_config) is chapter 07's:
the byte-level BPE saturated at 803 tokens (every word one token), AdamW at lr 1e-2 with warm-up (a
tenth of the run, at most 100 updates) and cosine decay to lr/10 at the run's own end, clipping at
1. The training text is written fresh by the grammar (as scripts/train_story_model.py does):
100,000 stories, 4.1M tokens; the three shorter budgets read less than half of it (random windows),
the longest about 1.2 times over; the validation stories come from another seed.

Each row: the model's parameters without the embedding (the token table, tied to the head, and the
learned position table: Kaplan et al.'s count) and with it, the tokens and characters seen, the
seed, the validation loss in nats per character (the sliding-window loss of
transformer_core.evaluation, comparable with the corpus floor of attention_book.floor), and the
run's wall and CPU seconds. Each run uses one thread (torch.set_num_threads(1)) and at most two run
side by side, so the CPU seconds are what the grid costs; on a machine shared with other work the
wall seconds are longer than the same grid takes on two quiet cores, whose time is at least the CPU
seconds divided by two.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch

from attention_book.grammar import generate_corpus
from attention_book.scaling import RECIPE, read_grid
from attention_book.scaling import grid_model_config as model_config
from attention_book.scaling import grid_train_config as train_config
from transformer_core import GPT
from transformer_core.data import load_corpus
from transformer_core.evaluation import nats_per_char, text_loss
from transformer_core.tokenizers import ByteBPETokenizer
from transformer_core.training import Trainer

OUT = Path(__file__).resolve().parent.parent / "chapters" / "data" / "12_scaling_grid.csv"

TRAIN_SEED = 1  # the stories trained on (scripts/train_story_model.py's)
VAL_SEED = 2  # held-out stories for the validation loss
TRAIN_STORIES = 100_000
VAL_STORIES = 1_000
WIDTHS = (16, 32, 48, 64, 96, 128)
STEPS = (150, 400, 1000, 2500)
SEEDS = (0,)  # the whole grid
REPEAT_SEEDS = (1, 2)  # the shortest runs again with these seeds (--repeat-seeds), for the spread across seeds

FIELDS = ["d_model", "n_layer", "n_params_non_embedding", "n_params_total", "updates", "tokens_seen",
          "chars_seen", "seed", "val_nats_per_char", "wall_seconds", "cpu_seconds"]


def load_data() -> tuple[ByteBPETokenizer, torch.Tensor, torch.Tensor, float]:
    """(tokenizer, training ids, validation ids, characters per training token)."""
    tokenizer = ByteBPETokenizer.train(load_corpus(), vocab_size=RECIPE["bpe_vocab_size"])
    text = generate_corpus(TRAIN_SEED, TRAIN_STORIES)
    train_ids = torch.tensor(tokenizer.encode(text))
    val_ids = torch.tensor(tokenizer.encode(generate_corpus(VAL_SEED, VAL_STORIES)))
    return tokenizer, train_ids, val_ids, len(text) / len(train_ids)


_DATA: tuple | None = None  # set in the parent before the workers fork


def run(job: tuple[int, int, int]) -> dict:
    d_model, updates, seed = job
    tokenizer, train_ids, val_ids, chars_per_token = _DATA
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # see TOOLCHAIN: denormals slow CPU matmuls many times over
    torch.manual_seed(seed)
    model = GPT(model_config(d_model, tokenizer.vocab_size))
    cfg = train_config(updates, seed)
    wall, cpu = time.perf_counter(), time.process_time()
    Trainer(model, train_ids, None, cfg).fit()
    loss = nats_per_char(text_loss(model, val_ids), val_ids, tokenizer)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = updates * cfg.batch_size * RECIPE["context_length"]
    return dict(d_model=d_model, n_layer=RECIPE["n_layer"], n_params_non_embedding=model.num_parameters(True),
                n_params_total=model.num_parameters(), updates=updates, tokens_seen=tokens,
                chars_seen=round(tokens * chars_per_token), seed=seed, val_nats_per_char=round(loss, 4),
                wall_seconds=round(wall, 1), cpu_seconds=round(cpu, 1))


def write(rows: list[dict], path: Path) -> None:
    rows = sorted(rows, key=lambda r: (r["d_model"], r["updates"], r["seed"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    global _DATA
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--jobs", type=int, default=2, choices=(1, 2), help="runs side by side, one thread each")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --out, run only the rest")
    parser.add_argument("--repeat-seeds", type=int, nargs="*", default=list(REPEAT_SEEDS),
                        help="seeds that repeat the shortest run of every width")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    _DATA = load_data()
    print(f"data: {len(_DATA[1]):,} training tokens, {len(_DATA[2]):,} validation tokens "
          f"({time.perf_counter() - start_wall:.0f} s)", flush=True)
    # the whole grid first, its costliest runs first (the two processes then finish together)
    jobs = [(d, s, seed) for seed in SEEDS for d in sorted(WIDTHS, reverse=True) for s in sorted(STEPS, reverse=True)]
    jobs += [(d, min(STEPS), seed) for d in sorted(WIDTHS, reverse=True) for seed in args.repeat_seeds]
    rows: list[dict] = read_grid(args.out) if args.resume and args.out.exists() else []
    done = {(r["d_model"], r["updates"], r["seed"]) for r in rows}
    jobs = [job for job in jobs if job not in done]
    with mp.get_context("fork").Pool(args.jobs) as pool:
        for row in pool.imap_unordered(run, jobs):
            rows.append(row)
            write(rows, args.out)  # after every run: the table so far
            print(row, flush=True)
    wall = time.perf_counter() - start_wall
    runs_cpu = sum(r["cpu_seconds"] for r in rows)
    print(f"wrote {args.out}: {len(rows)} runs. This call: {wall / 60:.1f} min of wall time, "
          f"{(time.process_time() - start_cpu) / 60:.1f} min of CPU time in the parent (the data). All runs: "
          f"{runs_cpu / 60:.1f} min of CPU time, {sum(r['wall_seconds'] for r in rows) / 60:.1f} min of wall time "
          f"summed over runs; on two quiet cores the grid needs at least {runs_cpu / 120:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
