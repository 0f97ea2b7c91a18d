"""Span-corruption pre-training on the book's stories, for chapter 17: T5 beside the 2017 model.

The pieces chapter 17 and ``scripts/t5_pretraining.py`` share, so that the chapter's short run and the
script's long ones are the same code:

* :func:`story_data`: the word tokenizer of the stories with T5's sentinel tokens, and the training
  and held-out stories (the last 300) as id tensors;
* :func:`build`: the T5-style model or the paper's 2017 model, of one shape (:data:`SHAPE`);
* :func:`corrupt` and :func:`held_out_batch`: span-corrupted batches (15% of the words hidden in spans
  of 3 on average, T5's setting), the held-out one corrupted once with a fixed seed;
* :func:`train` and :func:`evaluate`: AdamW with warm-up and a cosine, the held-out loss per target
  token and the teacher-forced accuracy on the hidden words.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from transformer_core import T5, T5Config, Transformer, TransformerConfig
from transformer_core.data import load_corpus
from transformer_core.schedules import warmup_cosine
from transformer_core.t5 import span_corruption
from transformer_core.tokenizers import WordTokenizer, pad_sequences

SENTINELS = tuple(f"<extra_id_{i}>" for i in range(8))
SPECIALS = ("[PAD]", "[EOS]", "[BOS]", "[UNK]", *SENTINELS)  # pad 0 (T5's start), eos 1, bos 2
SHAPE = {"d_model": 128, "n_head": 4, "d_ff": 512, "n_encoder_layers": 2, "n_decoder_layers": 2}
STEPS, BATCH, LR, WARMUP = 500, 32, 2e-3, 50


def story_data():
    """The word tokenizer (with T5's sentinels) and the train / held-out stories as id tensors."""
    text = load_corpus()
    tok = WordTokenizer.from_text(text, specials=SPECIALS)
    stories = [s for s in text.split("\n\n") if s.strip()]
    encode = [torch.tensor(tok.encode(s)) for s in stories]
    return tok, encode[:-300], encode[-300:]


def sentinel_ids(tok) -> list[int]:
    return [tok.vocab.index(s) for s in SENTINELS]


def corrupt(stories, sentinels, generator):
    """A batch: encoder input (ends with EOS) and target (sentinel, span, ..., sentinel, EOS)."""
    src, tgt = [], []
    for ids in stories:
        inputs, targets = span_corruption(ids, sentinels, generator=generator)
        src.append(inputs.tolist() + [1])
        tgt.append(targets.tolist() + [1])
    return pad_sequences(src, 0), pad_sequences(tgt, 0)


def build(kind: str, vocab_size: int, seed: int):
    torch.manual_seed(seed)
    if kind == "t5":
        return T5(T5Config(vocab_size=vocab_size, num_buckets=16, max_distance=64, dropout=0.0, **SHAPE))
    config = TransformerConfig(src_vocab_size=vocab_size, tgt_vocab_size=vocab_size, dropout=0.0,
                               label_smoothing=0.0, context_length=128, pad_id=0, bos_id=2, eos_id=1,
                               **SHAPE)
    return Transformer(config)


def decoder_input(kind: str, tgt):
    start = 0 if kind == "t5" else 2  # T5 starts the decoder with pad, the 2017 model with BOS
    return torch.cat([torch.full((tgt.shape[0], 1), start), tgt[:, :-1]], dim=1)


@torch.no_grad()
def evaluate(model, kind, src, tgt, sentinels):
    """Held-out loss per target token and teacher-forced accuracy on the hidden words."""
    model.eval()
    logits = model(src, decoder_input(kind, tgt))
    loss = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=0).item()
    words = (tgt != 0) & (tgt != 1) & ~torch.isin(tgt, torch.tensor(sentinels))
    accuracy = (logits.argmax(-1) == tgt)[words].float().mean().item()
    model.train()
    return loss, accuracy


def train(kind, seed, tok, train_set, val_batch, steps=STEPS, log=None, lr=LR):
    model = build(kind, len(tok.vocab), seed)
    sentinels = sentinel_ids(tok)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    gen = torch.Generator().manual_seed(1000 + seed)
    for step in range(steps):
        rows = torch.randint(len(train_set), (BATCH,), generator=gen).tolist()
        src, tgt = corrupt([train_set[i] for i in rows], sentinels, gen)
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, min(WARMUP, steps), steps, lr, lr / 10)
        logits = model(src, decoder_input(kind, tgt))
        loss = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if log and step % 100 == 0:
            log(f"{kind} seed {seed} step {step}: loss {loss.item():.3f}")
    return model, evaluate(model, kind, *val_batch, sentinels)


def held_out_batch(tok, val_set):
    return corrupt(val_set, sentinel_ids(tok), torch.Generator().manual_seed(12345))
