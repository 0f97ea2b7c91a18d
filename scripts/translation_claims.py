"""Measure the paper's claims about its choices on chapter 09's translation task (English -> Tolan).

    python scripts/translation_claims.py          # writes chapters/data/09_claims.csv

Three settings, each trained with three seeds (model init and the order of the training pairs) by
chapter 09's recipe, RECIPE below, the same loop (float64 arithmetic, the weights rounded to
float32 after each step, one thread):

* "smoothing 0.1, shared":  the paper's model: label smoothing eps = 0.1, one vocabulary and one
  embedding matrix for source, target and output layer (seed 0 is chapter 09's own run);
* "smoothing 0, shared":    the same without label smoothing (section 5.4: smoothing "hurts
  perplexity, as the model learns to be more unsure, but improves accuracy and BLEU score");
* "smoothing 0.1, separate": an English vocabulary for the source and a Tolan one for the target,
  so the source embedding is a matrix of its own (the paper shares one BPE vocabulary).

Each model is scored on the same 1,000 held-out sentences of the lengths it was trained on
(at most 12 tokens): perplexity and next-token accuracy of the reference translation with the
reference as decoder input (teacher forcing), and BLEU and chrF (sacrebleu) and exact match of
greedy decoding and of beam search (beam 4) with length penalty alpha = 0, 0.6 (the paper's) and
1.0 (with the length of the outputs over that of the references); beam_fixes / beam_breaks count the sentences beam search (alpha = 0.6) gets right where greedy
decoding is wrong, and the reverse. And on 300 sentences longer than any it was trained on in each
length band (13-14, 15-16, 17 or more tokens), greedy BLEU.

Measured: about 20 minutes on a two-core machine shared with other jobs (each run's training
time is in the CSV, "seconds"; about 35 s of it on a quiet machine).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import sacrebleu
import torch
import torch.nn.functional as F

from attention_book.translation import TranslationVocab, generate_pairs
from transformer_core import Transformer, TransformerConfig
from transformer_core.schedules import noam_schedule

OUT = Path(__file__).resolve().parent.parent / "chapters" / "data" / "09_claims.csv"

# chapter 09's recipe (section 10): keep the two in step
RECIPE = {
    "model": dict(
        d_model=64,
        n_head=4,
        n_encoder_layers=2,
        n_decoder_layers=2,
        d_ff=256,
        dropout=0.0,
        context_length=64,
    ),
    "steps": 400,
    "batch_size": 64,
    "warmup": 100,
    "factor": 0.5,
    "max_tokens": 12,  # the longest English sentence trained on, in tokens
    "data_seed": 1,  # + the run's seed: the training pairs
    "test_seed": 2,  # the held-out test sentences
}
SETTINGS = {
    "smoothing 0.1, shared": dict(label_smoothing=0.1, shared=True),
    "smoothing 0, shared": dict(label_smoothing=0.0, shared=True),
    "smoothing 0.1, separate": dict(label_smoothing=0.1, shared=False),
}
SEEDS = (0, 1, 2)
N_TEST = 1000
LONG_BANDS = ((13, 14), (15, 16), (17, 99))
N_LONG = 300


def vocabularies(shared: bool) -> tuple[TranslationVocab, TranslationVocab]:
    if shared:
        vocab = TranslationVocab()
        return vocab, vocab
    return TranslationVocab.english(), TranslationVocab.tolan()


def train(seed: int, label_smoothing: float, shared: bool) -> tuple[Transformer, float]:
    """Chapter 09's loop: fresh pairs every step, Adam with the paper's betas and eps, the paper's
    schedule times a factor, label-smoothed loss; float64 arithmetic, weights rounded to float32
    after every step, one thread."""
    src_vocab, tgt_vocab = vocabularies(shared)
    config = TransformerConfig(
        src_vocab_size=src_vocab.vocab_size,
        tgt_vocab_size=tgt_vocab.vocab_size,
        label_smoothing=label_smoothing,
        **RECIPE["model"],
    )
    steps, batch = RECIPE["steps"], RECIPE["batch_size"]
    pairs = generate_pairs(
        steps * batch,
        seed=RECIPE["data_seed"] + seed,
        split="train",
        max_tokens=RECIPE["max_tokens"],
    )
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(seed)
    model = Transformer(config)
    torch.set_default_dtype(torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = noam_schedule(step, config.d_model, RECIPE["warmup"], RECIPE["factor"])
        src, tgt = src_vocab.batch(pairs[(step - 1) * batch : step * batch], tgt_vocab)
        loss = model.loss(src, tgt)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # weights kept on float32's grid: the same bits on every CPU
            for p in model.parameters():
                p.copy_(p.float())
    model.eval()
    return model, time.perf_counter() - start


@torch.no_grad()
def teacher_forced(model: Transformer, src: torch.Tensor, tgt: torch.Tensor) -> tuple[float, float]:
    """Perplexity and next-token accuracy of the reference, fed to the decoder (no smoothing)."""
    logits = model(src, tgt[:, :-1])
    target = tgt[:, 1:]
    keep = target != model.config.pad_id
    nll = F.cross_entropy(logits[keep], target[keep])
    accuracy = (logits.argmax(-1)[keep] == target[keep]).double().mean()
    return math.exp(float(nll)), float(accuracy)


def score(model, src_vocab, tgt_vocab, test) -> dict:
    src, tgt = src_vocab.batch(test, tgt_vocab)
    refs = [p.tolan for p in test]
    ppl, accuracy = teacher_forced(model, src, tgt)
    row = {"perplexity": round(ppl, 4), "token_accuracy": round(accuracy, 4)}
    outputs = {
        "greedy": model.greedy_decode(src, max_len=40),
        "beam": model.beam_search(src, beam_size=4, max_len=40, length_penalty=0.6),
        "beam_a0": model.beam_search(src, beam_size=4, max_len=40, length_penalty=0.0),
        "beam_a1": model.beam_search(src, beam_size=4, max_len=40, length_penalty=1.0),
    }
    right = {}
    for name, out in outputs.items():
        hyp = [tgt_vocab.decode(o) for o in out]
        right[name] = [h == r for h, r in zip(hyp, refs, strict=True)]
        bleu = sacrebleu.corpus_bleu(hyp, [refs])
        row[f"bleu_{name}"] = round(bleu.score, 2)
        row[f"length_ratio_{name}"] = round(bleu.sys_len / bleu.ref_len, 4)
        row[f"chrf_{name}"] = round(sacrebleu.corpus_chrf(hyp, [refs]).score, 2)
        row[f"exact_{name}"] = sum(right[name])
    row["beam_fixes"] = sum(
        b and not g for g, b in zip(right["greedy"], right["beam"], strict=True)
    )
    row["beam_breaks"] = sum(
        g and not b for g, b in zip(right["greedy"], right["beam"], strict=True)
    )
    row["test_sentences"] = len(test)
    return row


def score_long(model, src_vocab, tgt_vocab) -> dict:
    row = {}
    for low, high in LONG_BANDS:
        pairs = generate_pairs(N_LONG, seed=RECIPE["test_seed"], min_tokens=low, max_tokens=high)
        src, _ = src_vocab.batch(pairs, tgt_vocab)
        hyp = [tgt_vocab.decode(o) for o in model.greedy_decode(src, max_len=60)]
        row[f"bleu_greedy_{low}_{high if high < 99 else 'up'}"] = round(
            sacrebleu.corpus_bleu(hyp, [[p.tolan for p in pairs]]).score, 2
        )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=RECIPE["steps"], help="fewer for a quick try")
    args = parser.parse_args(argv)
    RECIPE["steps"] = args.steps
    torch.set_num_threads(1)
    test = generate_pairs(
        N_TEST, seed=RECIPE["test_seed"], split="test", max_tokens=RECIPE["max_tokens"]
    )
    rows = []
    start = time.perf_counter()
    for name in args.settings:
        setting = SETTINGS[name]
        for seed in args.seeds:
            model, seconds = train(seed, **setting)
            src_vocab, tgt_vocab = vocabularies(setting["shared"])
            row = {
                "setting": name,
                "seed": seed,
                "steps": RECIPE["steps"],
                "seconds": round(seconds, 1),
                **score(model, src_vocab, tgt_vocab, test),
                **score_long(model, src_vocab, tgt_vocab),
            }
            rows.append(row)
            print(
                f"{name:26} seed {seed}: ppl {row['perplexity']:.3f}  acc {row['token_accuracy']:.4f}  "
                f"BLEU greedy {row['bleu_greedy']:.2f} beam {row['bleu_beam']:.2f}  exact "
                f"{row['exact_greedy']}/{row['exact_beam']}  ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out} ({len(rows)} runs, {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
