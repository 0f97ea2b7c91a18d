"""Encoder-only models (BERT): bidirectional self-attention trained by masked-language modelling.

GPT reads left to right: a causal mask hides every later token, so position t knows only the prefix.
BERT (Devlin et al., 2018) drops that mask. Every position attends to every other one, so each
token's vector is built from both sides of it. Such a model cannot be trained to predict the next
token (it would see it), so BERT hides some tokens instead and asks for them back:

* :func:`mask_tokens` -- BERT's recipe: choose 15% of the (non-special) positions; of those, 80%
  become ``[MASK]``, 10% a random token, 10% stay as they are. Labels are the original ids at the
  chosen positions and -100 (ignored) everywhere else;
* :func:`mlm_loss` -- cross-entropy over the chosen positions only;
* :class:`BERT` / :class:`BERTConfig` -- token + position embeddings (with BERT's embedding
  LayerNorm), a stack of the package's :class:`~transformer_core.blocks.EncoderLayer` (post-norm,
  as BERT, by default), and BERT's masked-LM head (dense, GELU, LayerNorm, then a decoder tied to
  the token embedding);
* :class:`~transformer_core.tokenizers.WordTokenizer` -- one id per word, with BERT's special
  tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]``, for the book's story corpus (it lives in
  :mod:`transformer_core.tokenizers`, with :func:`~transformer_core.tokenizers.pad_sequences`);
* :func:`fill_mask` -- the model's top candidates, with probabilities, for every ``[MASK]`` in a text.

Not here: BERT's second pre-training task (next-sentence prediction) and its segment embeddings,
which RoBERTa (Liu et al., 2019) showed MLM does not need.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import EncoderLayer, ModelConfig, Stack, count_parameters
from .checkpoint import SavesToFile
from .layers import make_norm
from .positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from .tokenizers import SPECIAL_TOKENS, WordTokenizer, pad_sequences
from .validation import check_int, check_token_ids, values_are_free

__all__ = [
    "IGNORE_INDEX",
    "SPECIAL_TOKENS",
    "BERT",
    "BERTConfig",
    "MaskCandidate",
    "fill_mask",
    "mask_tokens",
    "mlm_loss",
    # kept in transformer_core.tokenizers, and importable from here
    "WordTokenizer",
    "pad_sequences",
]

IGNORE_INDEX = -100  # the label of a position the loss skips (PyTorch's cross_entropy default)


# ---------------------------------------------------------------------------------- masking
def _check_id(name: str, value: object, vocab_size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int token id, got {type(value).__name__}")
    if not 0 <= value < vocab_size:
        raise ValueError(f"{name}={value} is outside the vocabulary [0, {vocab_size - 1}]")
    return value


def mask_tokens(
    idx: Tensor,
    mask_id: int,
    vocab_size: int,
    special_ids: Iterable[int] = (),
    mask_prob: float = 0.15,
    generator: torch.Generator | None = None,
    mask_token_frac: float = 0.8,
    random_token_frac: float = 0.1,
) -> tuple[Tensor, Tensor]:
    """BERT's masking: returns ``(inputs, labels)``, both ``(B, T)`` int64.

    Each position whose token is not special (``special_ids``; ``mask_id`` always counts as one) is
    *chosen* with probability ``mask_prob``. A chosen position's label is its token; every other
    label is -100, so the loss skips it. In the inputs, a chosen position becomes ``[MASK]`` with
    probability ``mask_token_frac`` (80%), a random non-special token with ``random_token_frac``
    (10%), and keeps its token otherwise (10%). The paper's reason: ``[MASK]`` never appears when
    the model is used, so the model must also build good vectors for tokens that look ordinary.

    Randomness comes only from ``generator`` (a CPU ``torch.Generator``), in three full-size draws
    (choose, decide, random token), so a seed gives the same result whatever the data.
    """
    check_token_ids(idx, vocab_size, values=True)  # the draws below read the ids on the CPU anyway
    mask_id = _check_id("mask_id", mask_id, vocab_size)
    specials = {mask_id, *(_check_id("special id", int(i) if isinstance(i, Tensor) else i, vocab_size)
                           for i in special_ids)}
    for name, p in (("mask_prob", mask_prob), ("mask_token_frac", mask_token_frac),
                    ("random_token_frac", random_token_frac)):
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(p).__name__}")
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must be between 0 and 1 (exclusive), got {mask_prob}; BERT uses 0.15")
    if mask_token_frac < 0 or random_token_frac < 0 or mask_token_frac + random_token_frac > 1:
        raise ValueError(
            f"mask_token_frac ({mask_token_frac}) and random_token_frac ({random_token_frac}) must be >= 0 "
            f"and add up to at most 1 (the rest stays unchanged); BERT uses 0.8 and 0.1"
        )
    if generator is not None and generator.device.type != "cpu":
        raise ValueError("pass a CPU torch.Generator: the random draws are made on the CPU")
    words = torch.tensor([i for i in range(vocab_size) if i not in specials], dtype=torch.long)
    if len(words) == 0:
        raise ValueError("every token of the vocabulary is special: there is nothing to mask")

    shape = idx.shape
    special = torch.isin(idx.cpu(), torch.tensor(sorted(specials)))  # (B, T) True = never chosen
    chosen = (torch.rand(shape, generator=generator) < mask_prob) & ~special  # (B, T)
    decide = torch.rand(shape, generator=generator)  # (B, T): which of the three things happens
    random_tokens = words[torch.randint(len(words), shape, generator=generator)]  # (B, T)
    to_mask = chosen & (decide < mask_token_frac)
    to_random = chosen & (decide >= mask_token_frac) & (decide < mask_token_frac + random_token_frac)

    inputs = idx.cpu().masked_fill(to_mask, mask_id)
    inputs = torch.where(to_random, random_tokens, inputs)
    labels = idx.cpu().masked_fill(~chosen, IGNORE_INDEX)
    return inputs.to(idx.device), labels.to(idx.device)


def mlm_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean cross-entropy over the positions whose label is not ``ignore_index``.

    ``logits`` ``(B, T, V)``, ``labels`` ``(B, T)`` int64. Positions that were not chosen for masking
    carry -100 and add nothing, neither to the sum nor to the count. A batch with no chosen position
    at all gives a loss of 0 (with a gradient of zeros), not the NaN of an empty mean.
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() != 3:
        got = f"{logits.dtype} of shape {tuple(logits.shape)}" if isinstance(logits, Tensor) else type(logits).__name__
        raise TypeError(f"logits must be a float tensor of shape (B, T, V), got {got}")
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        got = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(f"labels must be an integer tensor of token ids (and {ignore_index}), got {got}")
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels shape {tuple(labels.shape)} must be logits' (B, T) = {tuple(logits.shape[:2])}")
    V = logits.shape[-1]
    used = labels != ignore_index
    if values_are_free(labels) and used.any() and (labels[used].min() < 0 or labels[used].max() >= V):
        raise ValueError(f"labels hold ids outside [0, {V - 1}] that are not the ignore value {ignore_index}")
    # half-precision logits go up to float32 (the softmax needs the small probabilities); float32
    # and float64 stay as they are
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    total = F.cross_entropy(logits.flatten(0, 1), labels.flatten().long(), ignore_index=ignore_index, reduction="sum")
    return total / used.sum().clamp(min=1)  # the mean over the chosen positions; 0 if there are none


# ---------------------------------------------------------------------------------- the model
@dataclass
class BERTConfig(ModelConfig):
    """The shape of a BERT-style encoder. ``d_ff`` defaults to ``4 * d_model``.

    ``pad_id``: positions holding this id are padding, hidden from attention (None: no padding id;
    pass ``key_padding_mask`` yourself). ``norm_first=False`` is BERT's post-norm.
    Presets: :meth:`tiny` (trains in seconds on a CPU) and :meth:`bert_base` (BERT-base's shape).
    """

    norm_first: bool = False  # (the other fields before tie_weights: ModelConfig's)
    tie_weights: bool = True
    layer_norm_eps: float = 1e-12
    pad_id: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pad_id is not None:
            _check_id("pad_id", self.pad_id, self.vocab_size)

    @classmethod
    def tiny(cls, vocab_size: int, context_length: int = 128, **overrides) -> BERTConfig:
        """2 layers, 4 heads, width 64: the size this book trains on a laptop CPU in seconds."""
        return cls(**{"vocab_size": vocab_size, "context_length": context_length, "n_layer": 2,
                      "n_head": 4, "d_model": 64, **overrides})

    @classmethod
    def bert_base(cls, **overrides) -> BERTConfig:
        """BERT-base's shape: 12 layers, 12 heads, width 768, 30,522 word pieces, 512 positions."""
        return cls(**{"vocab_size": 30522, "context_length": 512, "n_layer": 12, "n_head": 12,
                      "d_model": 768, "dropout": 0.1, "pad_id": 0, **overrides})


class BERT(SavesToFile, nn.Module):
    """A BERT-style encoder with its masked-language-modelling head.

    ``model(idx)`` maps token ids ``(B, T)`` to logits ``(B, T, vocab_size)``: at every position, the
    model's guess of the token that belongs there, made from *both* sides. With
    ``return_attention=True`` it also returns the attention weights ``(n_layer, B, n_head, T, T)``,
    rows summing to 1, with nothing masked but padding keys (which get exactly 0).
    :meth:`encode` gives the final hidden vectors ``(B, T, d_model)`` that a task head would read.
    """

    config_class = BERTConfig

    def __init__(self, config: BERTConfig) -> None:
        super().__init__()
        self.config = c = self.checked_config(config)
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        if c.positional == "learned":  # BERT's: a trained vector per position
            self.pos_emb: nn.Module = LearnedPositionalEmbedding(c.context_length, c.d_model)
        else:
            self.pos_emb = SinusoidalPositionalEncoding(c.d_model, c.context_length)
        # BERT normalises the summed embeddings: in a post-norm stack nothing else would
        self.emb_norm = make_norm(c.norm, c.d_model, c.layer_norm_eps)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = Stack(
            EncoderLayer(c.d_model, c.n_head, c.d_ff, c.dropout, c.activation, c.norm, c.norm_first,
                         c.layer_norm_eps)
            for _ in range(c.n_layer)
        )
        # a pre-norm stack leaves its residual stream unnormalised: add a final norm, as GPT does
        self.ln_f = make_norm(c.norm, c.d_model, c.layer_norm_eps) if c.norm_first else nn.Identity()
        # BERT's masked-LM head: a dense layer, GELU and LayerNorm, then a decoder to the vocabulary
        self.head_dense = nn.Linear(c.d_model, c.d_model)
        self.head_norm = make_norm(c.norm, c.d_model, c.layer_norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size)  # its bias: one number per word, not tied
        self.reset_parameters()
        if c.tie_weights:
            self.lm_head.weight = self.tok_emb.weight  # one matrix reads words in and writes them out

    def reset_parameters(self) -> None:
        """BERT's initialisation: N(0, 0.02) weights, zero biases, norms at gain 1."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Count each parameter once (the tied head shares the embedding's matrix)."""
        return count_parameters(self, non_embedding)

    def padding_mask(self, idx: Tensor, key_padding_mask: Tensor | None = None) -> Tensor | None:
        """The ``(B, T)`` bool mask (True = padding) this model uses for ``idx``.

        An explicit ``key_padding_mask`` wins; else positions holding ``config.pad_id``; else None.
        """
        if key_padding_mask is not None:
            if not isinstance(key_padding_mask, Tensor) or key_padding_mask.dtype != torch.bool:
                got = key_padding_mask.dtype if isinstance(key_padding_mask, Tensor) else type(key_padding_mask).__name__
                raise TypeError(f"key_padding_mask must be a bool tensor (True = padding), got {got}")
            if key_padding_mask.shape != idx.shape:
                raise ValueError(
                    f"key_padding_mask has shape {tuple(key_padding_mask.shape)}, expected idx's (B, T) = "
                    f"{tuple(idx.shape)}"
                )
            return key_padding_mask.to(idx.device)
        if self.config.pad_id is None:
            return None
        pad = idx == self.config.pad_id
        return pad if bool(pad.any()) else None  # no padding: skip the mask, keep the fast kernel

    def encode(
        self, idx: Tensor, key_padding_mask: Tensor | None = None, return_attention: bool = False
    ):
        """``idx`` ``(B, T)`` -> final hidden vectors ``(B, T, d_model)`` [, attention ``(L, B, H, T, T)``]."""
        check_token_ids(idx, self.config.vocab_size, self.config.context_length)
        pad = self.padding_mask(idx, key_padding_mask)
        x = self.drop(self.emb_norm(self.pos_emb(self.tok_emb(idx))))  # (B, T, D)
        # no causal mask: every position attends to every (non-padding) position
        x, weights = self.blocks(x, key_padding_mask=pad, need_weights=return_attention)
        x = self.ln_f(x)
        return (x, torch.stack(weights)) if return_attention else x

    def forward(self, idx: Tensor, key_padding_mask: Tensor | None = None, return_attention: bool = False):
        """``idx`` ``(B, T)`` int64 -> logits ``(B, T, vocab_size)`` [, attention ``(L, B, H, T, T)``]."""
        out = self.encode(idx, key_padding_mask, return_attention)
        h, weights = out if return_attention else (out, None)
        logits = self.lm_head(self.head_norm(F.gelu(self.head_dense(h))))  # (B, T, V)
        return (logits, weights) if return_attention else logits

    def loss(self, inputs: Tensor, labels: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """The masked-LM loss of :func:`mlm_loss` on ``(inputs, labels)`` from :func:`mask_tokens`."""
        return mlm_loss(self(inputs, key_padding_mask), labels)


# ---------------------------------------------------------------------------------- fill-mask
class MaskCandidate(NamedTuple):
    """One guess for a ``[MASK]``: the token, its id and the model's probability for it."""

    token: str
    token_id: int
    probability: float


@torch.no_grad()
def fill_mask(
    model: nn.Module, tokenizer: WordTokenizer, text: str, top_k: int = 5, add_special_tokens: bool = True
) -> list[list[MaskCandidate]]:
    """The model's ``top_k`` candidates for each ``[MASK]`` in ``text``, most probable first.

    Returns one list per ``[MASK]``, in the order they appear. The text is encoded as in training
    (``[CLS] ... [SEP]`` with ``add_special_tokens``); all masks are predicted at once, each from the
    same input, so two neighbouring masks do not see each other's guesses. The model runs in eval mode
    and is put back in its previous mode.
    """
    mask_id = getattr(tokenizer, "mask_id", None)
    if mask_id is None:
        raise ValueError(
            "the tokenizer has no [MASK] token: build it with the special tokens, "
            "e.g. WordTokenizer.from_text(text) (whose specials include [MASK])"
        )
    if not isinstance(text, str):
        raise TypeError(f"text must be a str holding [MASK] tokens, got {type(text).__name__}")
    check_int("top_k", top_k)
    ids = tokenizer.encode(text, add_special_tokens=add_special_tokens)
    where = [i for i, t in enumerate(ids) if t == mask_id]
    if not where:
        raise ValueError(f"the text has no [MASK] token to fill: {text!r}")
    config = getattr(model, "config", None)
    ctx = getattr(config, "context_length", None)
    if ctx is not None and len(ids) > ctx:
        raise ValueError(f"the text is {len(ids)} tokens long, more than the model's context_length {ctx}")
    vocab_size = getattr(config, "vocab_size", None)
    if vocab_size is not None and vocab_size != tokenizer.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model {vocab_size}: not a pair")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        logits = model(torch.tensor([ids], device=device))  # (1, T, V)
    finally:
        model.train(was_training)
    probs = logits[0, where].float().softmax(dim=-1)  # (n_masks, V)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [
        [MaskCandidate(tokenizer.id_to_token(int(i)), int(i), float(p)) for p, i in zip(ps, ix, strict=True)]
        for ps, ix in zip(top.values, top.indices, strict=True)
    ]
