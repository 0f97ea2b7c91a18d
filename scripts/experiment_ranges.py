#!/usr/bin/env python3
"""Measure the ranges that the experiment exercises accept (one per chapter: 02 to 16 and 12a).

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


def ch02(seed: int) -> int:
    """The training step (to the nearest 10) at which chapter 02's two-head model first passes 90%
    accuracy on the 1,000 test sequences of its "one back and two back" task (one layer, width 32,
    Adam at lr 1e-2, batches of 64). A seed draws the initial weights and the training batches, as
    the chapter's ``train(n_head, seed=seed)`` does; the package's ``MultiHeadAttention`` stands in
    for the chapter's stage 4b (same projections, same init order)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from transformer_core import MultiHeadAttention, sinusoidal_encoding

    V, T, D = 10, 8, 32
    positions = sinusoidal_encoding(T, D)

    class TwoBack(nn.Module):
        def __init__(self, n_head: int) -> None:
            super().__init__()
            self.embed = nn.Embedding(V, D)
            self.attn = MultiHeadAttention(D, n_head)
            self.readout = nn.Linear(D, 2 * V)

        def forward(self, idx):
            out, _ = self.attn(self.embed(idx) + positions, is_causal=True)
            return self.readout(out).view(*idx.shape, 2, V)

    def targets(idx):
        return torch.stack([idx.roll(1, dims=1), idx.roll(2, dims=1)], dim=-1)

    test = torch.randint(V, (1000, T), generator=torch.Generator().manual_seed(99))
    torch.manual_seed(seed)
    model = TwoBack(n_head=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for step in range(1, 501):  # train(2, steps=s, seed) is this run's first s steps
        idx = torch.randint(V, (64, T), generator=g)
        loss = F.cross_entropy(model(idx)[:, 2:].reshape(-1, V), targets(idx)[:, 2:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            with torch.no_grad():
                accuracy = (model(test)[:, 2:].argmax(dim=-1) == targets(test)[:, 2:]).float().mean()
            if accuracy >= 0.9:
                return step
    return 510


def ch03(seed: int) -> int:
    """The fewest training steps (a multiple of 5) after which chapter 03's rotary GPT (2 blocks,
    width 64, the section 9 set-up: lr 3e-3, warm-up 20, cosine over the run, batches of 32 of 32
    tokens) names the token 3 places back at 90% of positions 3-31 of the chapter's test set. A
    seed draws the initial weights and the training batches (lag_model and TrainConfig's seed)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from transformer_core import GPT, GPTConfig
    from transformer_core.training import TrainConfig, Trainer

    V, LAG, T_TRAIN, T_TEST = 16, 3, 32, 128

    def lag_batch(batch_size, length, generator):
        x = torch.randint(V, (batch_size, length), generator=generator)
        y = x.roll(LAG, dims=1)
        y[:, :LAG] = -100
        return x, y

    def lag_loss(model, batch):
        x, y = batch
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)

    x_test, y_test = lag_batch(256, T_TEST, torch.Generator().manual_seed(1234))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for steps in range(20, 201, 5):  # each s a new run (the schedule spans s; warm-up needs 20)
            torch.manual_seed(seed)
            model = GPT(GPTConfig(vocab_size=V, context_length=T_TEST, n_layer=2, n_head=4, d_model=64,
                                  positional="rotary", tie_weights=False))
            nn.init.normal_(model.tok_emb.weight, std=0.5**0.5)
            config = TrainConfig(max_steps=steps, batch_size=32, lr=3e-3, warmup_steps=20, eval_interval=0,
                                 seed=seed, progress=False)
            Trainer(model, lambda split, g: lag_batch(32, T_TRAIN, g), config=config, loss_fn=lag_loss).fit()
            model.eval()
            with torch.no_grad():
                right = (model(x_test).argmax(-1) == y_test).float().mean(0)  # (T_TEST,)
            if float(right[LAG:T_TRAIN].mean()) >= 0.9:
                return steps
        return 205
    finally:
        torch.set_num_threads(threads)


def ch04(seed: int) -> float:
    """The smallest learning rate on the grid 0.005, 0.006, 0.007, ... (steps of 0.001) at which
    chapter 04's 8-block post-norm stack without warm-up, trained as the chapter trains it (150
    updates, Adam with beta_2 0.98, no clipping), ends with a validation loss within 0.1 nats of
    the loss of character frequencies alone, or above it: the rate at which it learns nothing. A
    seed draws the initial weights and the order of the batches, as in the chapter."""
    import torch
    from torch import nn

    from transformer_core import TransformerBlock
    from transformer_core.data import load_corpus, train_val_split
    from transformer_core.tokenizers import CharTokenizer
    from transformer_core.training import TrainConfig, Trainer

    text = load_corpus()
    tok = CharTokenizer.from_text(text)
    train_ids, val_ids = train_val_split(torch.tensor(tok.encode(text)), val_fraction=0.1)
    counts = torch.bincount(train_ids, minlength=tok.vocab_size).float()
    unigram = float(-(counts / counts.sum()).log()[val_ids].mean())
    context, d_model = 32, 32

    class StackLM(nn.Module):  # the chapter's, with the package's post-norm block (the same weights)
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(tok.vocab_size, d_model)
            self.positions = nn.Parameter(torch.randn(context, d_model))
            self.blocks = nn.ModuleList(
                TransformerBlock(d_model, 4, 4 * d_model, norm_first=False) for _ in range(8))
            self.head = nn.Linear(d_model, tok.vocab_size)

        def forward(self, idx):
            x = self.embed(idx) + self.positions[: idx.shape[1]]
            for block in self.blocks:
                x, _ = block(x)
            return self.head(x)

    def final_val(lr: float) -> float:
        torch.manual_seed(seed)
        config = TrainConfig(max_steps=150, batch_size=16, context_length=context, lr=lr,
                             schedule="constant", warmup_steps=0, betas=(0.9, 0.98),
                             weight_decay=0.0, grad_clip=None, seed=seed, log_interval=10,
                             eval_interval=150, eval_steps=10, progress=False)
        return Trainer(StackLM(), train_ids, val_ids, config).fit()[-1]["val_loss"]

    for k in range(5, 101):
        lr = k / 1000
        v = final_val(lr)
        if v > unigram - 0.1:
            return lr
    return 0.1


def ch08(seed: int) -> float:
    """The highest temperature on the grid 1.00, 1.05, 1.10, ... before the grammatical share of
    chapter 08's 128 texts (the story model in float64, each text begun after a blank line and
    filling the context, 4 batches of 32) first falls below 95%: the most varied temperature that
    keeps 95% of the sentences grammatical. A seed draws the samples (sample_stories' seed; the
    chapter's own texts are seed 0's)."""
    from attention_book.grammar import grammatical_share
    from transformer_core.evaluation import sample_stories
    from transformer_core.story_model import load_story_model

    model, tok = load_story_model()
    model = model.double()
    new = model.config.context_length - len(tok.encode("\n\n"))
    for k in range(0, 41):
        temperature = round(1.0 + 0.05 * k, 2)
        texts = sample_stories(model, tok, n=128, max_new_tokens=new, seed=seed, batch_size=32,
                               temperature=temperature)
        share = grammatical_share(texts)
        if share.value < 0.95:
            return round(temperature - 0.05, 2)
    return 3.0


def ch11(seed: int) -> int:
    """The steps of AdamW (lr 3e-3, batch 16) that chapter 11's GPT-2 recipe (learned position
    table) needs before its validation loss first reaches what the same model with rotary
    positions reached after 150 steps; evaluated every 25 steps, up to 1,000. A seed draws both
    models' initial weights and their (shared) order of batches, as in the chapter's
    train_briefly; the validation batches are the chapter's (seed 2)."""
    import torch

    from transformer_core import GPT, GPTConfig
    from transformer_core.data import get_batch, load_corpus, train_val_split
    from transformer_core.tokenizers import CharTokenizer

    torch.set_flush_denormal(True)
    text = load_corpus()
    tokenizer = CharTokenizer.from_text(text)
    train_data, val_data = train_val_split(torch.tensor(tokenizer.encode(text)))
    shape = dict(vocab_size=tokenizer.vocab_size, context_length=64, n_layer=2, n_head=4, d_model=64)

    def val_loss(model) -> float:
        model.eval()
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():
            loss = sum(model.loss(*get_batch(val_data, 32, 64, generator=g)).item() for _ in range(10)) / 10
        model.train()
        return loss

    def run(cfg, steps, every):
        torch.manual_seed(seed)
        model = GPT(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        batches = torch.Generator().manual_seed(seed + 1)
        for step in range(1, steps + 1):
            loss = model.loss(*get_batch(train_data, 16, 64, generator=batches))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % every == 0:
                yield step, val_loss(model)

    target = list(run(GPTConfig(**shape, positional="rotary"), 150, 150))[-1][1]
    for step, loss in run(GPTConfig(**shape), 1000, 25):
        if loss <= target:
            return step
    return 1025


def ch12(seed: int) -> int:
    """The largest global batch (sequences per update, a power of two from 2 to 64) whose model,
    after the same 64k training tokens as every other batch size, scores within 0.05 nats of the
    best batch size's model on held-out stories. A character-level GPT (2 layers, width 64) on the
    committed corpus's first 90% of characters, AdamW at a constant lr 3e-3; a seed draws the
    initial weights and the batches (torch.manual_seed)."""
    import torch
    import torch.nn.functional as F

    from transformer_core import GPT, GPTConfig
    from transformer_core.data import load_corpus
    from transformer_core.tokenizers import CharTokenizer

    text = load_corpus()
    tok = CharTokenizer(sorted(set(text)))
    ids = torch.tensor(tok.encode(text))
    cut = int(0.9 * len(ids))
    train, val = ids[:cut], ids[cut:]
    T, budget = 64, 65_536
    cfg = GPTConfig(vocab_size=tok.vocab_size, context_length=T, n_layer=2, n_head=4, d_model=64, dropout=0.0)
    g = torch.Generator().manual_seed(99)
    vs = torch.randint(len(val) - T - 1, (64,), generator=g)
    vx = torch.stack([val[s : s + T] for s in vs])
    vy = torch.stack([val[s + 1 : s + T + 1] for s in vs])
    losses = {}
    for batch in (2, 4, 8, 16, 32, 64):
        torch.manual_seed(seed)
        model = GPT(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(budget // (batch * T)):
            s = torch.randint(len(train) - T - 1, (batch,))
            x = torch.stack([train[i : i + T] for i in s])
            y = torch.stack([train[i + 1 : i + T + 1] for i in s])
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            losses[batch] = float(F.cross_entropy(model.eval()(vx).flatten(0, 1), vy.flatten()))
    best = min(losses.values())
    return max(b for b, v in losses.items() if v <= best + 0.05)


def ch12a(seed: int) -> float:
    """Chapter 12a's live point: the compute-optimal width for 1e11 FLOPs by the law fitted to the
    committed grid, trained with the grid's recipe on the chapter's stories, its validation loss
    minus the fit's prediction (nats per character). A seed draws the initial weights and the
    batches. The exercise asks for the smallest of the three seeds' misses."""
    import math
    from pathlib import Path

    import torch

    from attention_book.grammar import generate_corpus
    from attention_book.scaling import (
        RECIPE,
        fit_chinchilla,
        grid_model_config,
        grid_train_config,
        read_grid,
    )
    from transformer_core import GPT
    from transformer_core.data import load_corpus
    from transformer_core.evaluation import nats_per_char, text_loss
    from transformer_core.tokenizers import ByteBPETokenizer
    from transformer_core.training import Trainer

    rows = read_grid(Path(__file__).resolve().parents[1] / "chapters" / "data" / "12_scaling_grid.csv")
    law = fit_chinchilla([r["n_params_non_embedding"] for r in rows], [r["tokens_seen"] for r in rows],
                         [r["val_nats_per_char"] for r in rows])
    n_opt, _ = law.compute_optimal(1e11)
    params = {w: GPT(grid_model_config(w)).num_parameters(True) for w in range(16, 257, 16)}
    width = min(params, key=lambda w: abs(math.log(params[w] / n_opt)))
    tokens_per_update = RECIPE["batch_size"] * RECIPE["context_length"]
    updates = round(1e11 / (6 * params[width]) / tokens_per_update)
    corpus = load_corpus()
    tokenizer = ByteBPETokenizer.train(corpus, vocab_size=RECIPE["bpe_vocab_size"])
    tokens_per_story = len(tokenizer.encode(corpus)) / corpus.count("\n\n")
    n_stories = math.ceil(2 * updates * tokens_per_update / tokens_per_story)
    train_ids = torch.tensor(tokenizer.encode(generate_corpus(1, n_stories)))
    val_ids = torch.tensor(tokenizer.encode(generate_corpus(2, 1_000)))
    torch.manual_seed(seed)
    model = GPT(grid_model_config(width, tokenizer.vocab_size))
    Trainer(model, train_ids, None, grid_train_config(updates, seed=seed)).fit()
    loss = nats_per_char(text_loss(model, val_ids), val_ids, tokenizer)
    return round(loss - law.predict(params[width], updates * tokens_per_update), 4)


def ch14(seed: int) -> int:
    """The window, 1 to 8, whose sliding-window GPT (chapter 14's story shape: characters,
    2 layers, width 64) reaches the lowest validation loss after the chapter's 120 steps of Trainer (lr 3e-3, 10 warm-up steps, batch 16; 20 validation
    batches). A seed draws the initial weights, the training batches and the validation batches,
    as in the chapter's train_for."""
    import torch

    from transformer_core import GPT, GPTConfig
    from transformer_core.data import load_corpus, train_val_split
    from transformer_core.tokenizers import CharTokenizer
    from transformer_core.training import TrainConfig, Trainer

    text = load_corpus()
    tokenizer = CharTokenizer.from_text(text)
    train_ids, val_ids = train_val_split(torch.tensor(tokenizer.encode(text)))
    shape = dict(vocab_size=tokenizer.vocab_size, context_length=64, n_layer=2, n_head=4, d_model=64)

    def val_loss(window: int) -> float:
        torch.manual_seed(seed)
        model = GPT(GPTConfig(**shape, attention="sliding_window", window=window))
        config = TrainConfig(max_steps=120, batch_size=16, lr=3e-3, warmup_steps=10, weight_decay=0.0,
                             eval_interval=0, eval_steps=20, progress=False, seed=seed)
        trainer = Trainer(model, train_ids, val_ids, config)
        trainer.fit()
        return trainer.evaluate()

    losses = {w: val_loss(w) for w in range(1, 9)}
    return min(losses, key=losses.get)


def ch15(seed: int) -> float:
    """The smallest capacity factor (in steps of 0.01 from 1.00) at which chapter 15's MoE GPT
    (word tokens, 2 layers, 8 experts of width 64, top-2, balance loss 0.01), trained as the
    chapter trains it (200 steps of Trainer), drops no assignment in either layer on the
    chapter's 64 validation sequences (get_batch, generator seed 5). A seed draws the model's
    initial weights and its training batches."""
    import re

    import torch

    from transformer_core.data import get_batch, load_corpus, train_val_split
    from transformer_core.moe import MoEGPT, MoEGPTConfig, moe_language_model_loss
    from transformer_core.training import TrainConfig, Trainer

    words = re.findall(r"[a-z]+|[,.]|\n\n", load_corpus())
    vocab = sorted(set(words))
    stoi = {w: i for i, w in enumerate(vocab)}
    train_ids, val_ids = train_val_split(torch.tensor([stoi[w] for w in words]))
    cfg = MoEGPTConfig(vocab_size=len(vocab), context_length=32, n_layer=2, n_head=4, d_model=64,
                       d_ff=64, n_experts=8, expert_top_k=2, balance_loss_coef=0.01)
    torch.manual_seed(seed)
    model = MoEGPT(cfg)
    config = TrainConfig(max_steps=200, batch_size=32, lr=3e-3, warmup_steps=20, eval_interval=50,
                         eval_steps=5, log_interval=10, progress=False, seed=seed)
    Trainer(model, train_ids, val_ids, config, loss_fn=moe_language_model_loss).fit()
    model.eval()
    x_val, _ = get_batch(val_ids, 64, 32, generator=torch.Generator().manual_seed(5))
    for hundredths in range(100, 801):
        for layer in model.moe_layers():
            layer.capacity_factor = hundredths / 100
        with torch.no_grad():
            model(x_val)
        if all(r.dropped == 0 for r in model.routing()):
            return hundredths / 100
    return 8.01


def ch07(seed: int) -> int:
    """The step of chapter 07's five-line loop (section 2: a fresh GPT, 2 layers, width 64, context
    64, AdamW at lr 2e-3, one fixed batch of 8 windows, 80 steps) after which the loss on held-out
    text is lowest: where learning the language turns into memorising the batch. The held-out loss
    is measured after every step on section 2's 64 validation windows (generator seed 2). A seed
    draws the initial weights (torch seed) and the batch (generator seed 1 + seed); seed 0 is the
    chapter's run."""
    import torch
    import torch.nn.functional as F

    from transformer_core import GPT, GPTConfig
    from transformer_core.data import get_batch, load_corpus, train_val_split
    from transformer_core.tokenizers import CharTokenizer

    text = load_corpus()
    tok = CharTokenizer.from_text(text)
    train_ids, val_ids = train_val_split(torch.tensor(tok.encode(text)), val_fraction=0.1)
    cfg = GPTConfig(vocab_size=tok.vocab_size, context_length=64, n_layer=2, n_head=4, d_model=64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = GPT(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    x, y = get_batch(train_ids, batch_size=8, context_length=64, generator=torch.Generator().manual_seed(1 + seed))
    x_val, y_val = get_batch(val_ids, batch_size=64, context_length=64, generator=torch.Generator().manual_seed(2))
    best_step, best = 0, float("inf")
    for step in range(1, 81):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            val = float(F.cross_entropy(model(x_val).flatten(0, 1), y_val.flatten()))
        if val < best:
            best_step, best = step, val
    torch.set_num_threads(threads)
    return best_step


def ch09(seed: int) -> int:
    """The shortest English sentence length, in tokens, at which chapter 09's model (its recipe:
    400 steps of 64 pairs of at most 12 tokens, float64 on float32's grid) translates fewer than
    half of 200 held-out sentences of exactly that length exactly right (greedy decoding). A seed
    draws the model's initial weights (torch seed) and its training pairs (generate_pairs seed
    1 + seed), as scripts/translation_claims.py does; seed 0 is the chapter's model. Lengths 4,
    5, ..., 18; the test sentences are the same for every seed (generate_pairs seed 2, split
    "test" up to 12 tokens; longer ones were never trained on)."""
    import torch

    from attention_book.translation import TranslationVocab, generate_pairs
    from transformer_core import Transformer, TransformerConfig
    from transformer_core.schedules import noam_schedule

    vocab = TranslationVocab()
    config = TransformerConfig(
        src_vocab_size=vocab.vocab_size, tgt_vocab_size=vocab.vocab_size, d_model=64, n_head=4,
        n_encoder_layers=2, n_decoder_layers=2, d_ff=256, dropout=0.0, context_length=64,
        label_smoothing=0.1, pad_id=vocab.PAD, bos_id=vocab.BOS, eos_id=vocab.EOS,
    )
    steps, batch = 400, 64
    pairs = generate_pairs(steps * batch, seed=1 + seed, split="train", max_tokens=12)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(seed)
    model = Transformer(config)
    torch.set_default_dtype(torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = noam_schedule(step, config.d_model, 100, 0.5)
        src, tgt = vocab.batch(pairs[(step - 1) * batch : step * batch])
        loss = model.loss(src, tgt)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # weights on float32's grid, as in the chapter
            for p in model.parameters():
                p.copy_(p.float())
    model.eval()
    answer = None
    for length in range(4, 19):
        split = "test" if length <= 12 else None  # longer ones were never trained on
        test = generate_pairs(200, seed=2, split=split, min_tokens=length, max_tokens=length)
        src, _ = vocab.batch(test)
        out = [vocab.decode(row) for row in model.greedy_decode(src, max_len=60)]
        exact = sum(h == p.tolan for h, p in zip(out, test, strict=True)) / len(test)
        if exact < 0.5:
            answer = length
            break
    torch.set_num_threads(threads)
    return answer if answer is not None else 19


def ch13(seed: int) -> int:
    """The fewest tokens after the hole with which chapter 13's trained BERT (section 5's run:
    float64, 600 steps, seed 0) recovers 90% of its both-sides top-1 share on the held-out holes of
    section 6 (one hidden word per sentence of the last 300 stories, the story up to the hole, the
    [MASK], then k tokens). A seed draws which word of each sentence is hidden (section 6's
    random.Random(0) for seed 0); the model is the chapter's for every seed."""
    import random

    import torch

    from transformer_core.data import load_corpus
    from transformer_core.encoder_only import (
        BERT,
        BERTConfig,
        WordTokenizer,
        mask_tokens,
        pad_sequences,
    )
    from transformer_core.training import TrainConfig, Trainer

    text = load_corpus()
    tok = WordTokenizer.from_text(text)
    stories = [s for s in text.split("\n\n") if s.strip()]
    train_ids = [tok.encode(s, add_special_tokens=True) for s in stories[:-300]]
    by_length = sorted(range(len(train_ids)), key=lambda i: len(train_ids[i]))

    def get_batch(split, generator):
        start = int(torch.randint(len(by_length) - 31, (1,), generator=generator))
        x = pad_sequences([train_ids[i] for i in by_length[start : start + 32]], tok.pad_id)
        return mask_tokens(x, tok.mask_id, tok.vocab_size, tok.special_ids, mask_prob=0.3, generator=generator)

    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)
    model = BERT(BERTConfig.tiny(tok.vocab_size, context_length=80, pad_id=tok.pad_id))
    torch.set_default_dtype(torch.float32)
    config = TrainConfig(max_steps=600, batch_size=32, lr=5e-3, warmup_steps=60, weight_decay=0.01,
                         betas=(0.9, 0.98), eval_interval=0, progress=False, seed=0)
    Trainer(model, get_batch, config=config, loss_fn=lambda m, b: m.loss(*b)).fit()
    model.eval()

    rng = random.Random(seed)
    cases = []  # (story tokens, position of the hidden word)
    for story in stories[-300:]:
        toks, start = tok.tokens(story), 0
        for end in [i for i, t in enumerate(toks) if t == "."]:
            cases.append((toks, rng.choice([i for i in range(start, end) if toks[i].isalpha()])))
            start = end + 1
    truth = torch.tensor([tok.token_to_id(toks[hole]) for toks, hole in cases])

    def top1(k: int | None) -> float:  # k tokens after the hole; None: the whole story
        seqs = [tok.encode(" ".join(toks[:hole] + ["[MASK]"] + toks[hole + 1 :][:k]), add_special_tokens=True)
                for toks, hole in cases]
        with torch.no_grad():
            logits = model(pad_sequences(seqs, tok.pad_id))
        at_hole = logits[torch.arange(len(cases)), torch.tensor([hole + 1 for _, hole in cases])]
        at_hole[:, list(tok.special_ids)] = float("-inf")
        return float((at_hole.argmax(-1) == truth).double().mean())

    target = 0.9 * top1(None)
    return next(k for k in range(80) if top1(k) >= target)


def ch10(seed: int) -> int:
    """The most heads of the story model that can be removed together, the individually cheapest
    first, with the loss on 64 held-out story windows up by less than 0.01 nats (the threshold of
    chapter 10's count of heads that can go one at a time). The model in float64, as in the
    chapter; a head is removed by zeroing its columns of out_proj; the heads are ranked by what
    removing each alone costs on the same windows. A seed draws the held-out stories
    (generate_corpus seeds 2, 3, 4 for seeds 0, 1, 2; seed 0's are the chapter's); the windows are
    the first 64 that begin at a blank line, as in the chapter."""
    import copy

    import torch
    import torch.nn.functional as F

    from attention_book.grammar import generate_corpus
    from transformer_core.story_model import load_story_model

    model, tok = load_story_model()
    model = model.double()
    T = model.config.context_length
    newline, _ = tok.encode("\n\n")
    val_ids = torch.tensor(tok.encode(generate_corpus(seed=2 + seed, n_stories=400)))
    is_newline = val_ids[: -T - 1] == newline
    starts = (is_newline[:-1] & is_newline[1:]).nonzero().flatten()[:64]
    windows = torch.stack([val_ids[s : s + T + 1] for s in starts.tolist()])
    x, y = windows[:, :-1], windows[:, 1:]

    def without(heads):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for layer, head in heads:
                attn = m.blocks[layer].attn
                attn.out_proj.weight[:, head * attn.head_dim : (head + 1) * attn.head_dim] = 0
        return m

    def loss(m) -> float:
        with torch.no_grad():
            return F.cross_entropy(m(x).flatten(0, 1), y.flatten()).item()

    base = loss(model)
    heads = [(layer, head) for layer in range(model.config.n_layer) for head in range(model.config.n_head)]
    ranked = sorted(heads, key=lambda lh: loss(without([lh])))  # cheapest first
    for n in range(1, len(heads) + 1):
        if loss(without(ranked[:n])) - base >= 0.01:
            return n - 1
    return len(heads)


EXPERIMENTS = {  # name -> (function of a seed, what it measures, tolerance added on each side)
    "ch02": (ch02, "training step (nearest 10) at which two heads first pass 90% test accuracy", 10),
    "ch03": (ch03, "fewest training steps (multiple of 5) for rotary to reach 90% on positions 3-31", 5),
    "ch04": (ch04, "smallest learning rate at which post-norm without warm-up learns nothing", 0.001),
    "ch05": (ch05, "embedding init std at which the untrained loss is 1 nat above ln V", 0.005),
    "ch06": (ch06, "smallest vocabulary reaching 90% of saturated compression (held out)", 16),
    "ch07": (ch07, "step at which memorising one batch starts to cost held-out loss", 2),
    "ch08": (ch08, "highest temperature keeping 95% of sentences grammatical", 0.05),
    "ch09": (ch09, "shortest sentence length translated exactly right less than half the time", 0),
    "ch10": (ch10, "most heads removable together (cheapest first) with the story loss up < 0.01 nats", 0),
    "ch11": (ch11, "steps the GPT-2 recipe needs to reach GPT-2 + rotary's loss after 150 steps", 25),
    "ch12": (ch12, "largest global batch within 0.05 nats of the best at a fixed 65,536 tokens", 0),
    "ch12a": (ch12a, "the live point's validation loss minus the fit's prediction (the check: their smallest)", 0.0034),
    "ch13": (ch13, "fewest tokens after the hole giving 90% of BERT's both-sides top-1", 1),
    "ch14": (ch14, "sliding window (1 to 8) with the lowest story loss after 120 steps", 0),
    "ch15": (ch15, "smallest capacity factor at which the trained MoE GPT drops no token", 0.05),
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
