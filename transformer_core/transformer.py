"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al., 2017).

Post-norm, as in the paper, by default (``norm_first=True`` gives the pre-norm variant); sinusoidal
positions; embeddings scaled by √d_model; the target embedding shared with the output projection
(and with the source embedding when both vocabularies have the same size, as with the paper's joint
BPE vocabulary). Decoding: greedy, and beam search with the paper's length penalty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import KVCache
from .blocks import DecoderLayer, EncoderLayer, Stack
from .checkpoint import SavesToFile
from .layers import make_norm
from .positional import SinusoidalPositionalEncoding
from .validation import (
    Config,
    check_fraction,
    check_int,
    check_model_shape,
    check_token_ids,
    is_int,
)

__all__ = ["TransformerConfig", "Transformer", "TransformerAttention", "label_smoothed_cross_entropy"]


@dataclass
class TransformerConfig(Config):
    """The shape of an encoder-decoder Transformer. Presets :meth:`base` and :meth:`big` are Table 3's."""

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 512
    n_head: int = 8
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1
    activation: str = "relu"
    norm_first: bool = False
    context_length: int = 512  # the longest source or target sequence
    share_embeddings: bool = True
    label_smoothing: float = 0.1
    layer_norm_eps: float = 1e-5
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        check_model_shape(self, "src_vocab_size", "tgt_vocab_size", "d_model", "n_head", "n_encoder_layers",
                          "n_decoder_layers", "context_length")
        if self.d_model % 2:
            raise ValueError("sinusoidal positions need an even d_model")
        check_fraction("label_smoothing", self.label_smoothing)
        special = (self.pad_id, self.bos_id, self.eos_id)
        if len(set(special)) != 3 or min(special) < 0 or max(special) >= self.tgt_vocab_size:
            raise ValueError(f"pad_id, bos_id, eos_id must be distinct ids of the target vocabulary, got {special}")

    @classmethod
    def base(cls, src_vocab_size: int = 37000, tgt_vocab_size: int = 37000, **overrides) -> TransformerConfig:
        """The paper's base model: N=6, d_model=512, d_ff=2048, h=8, dropout 0.1 (Table 3: 65M).

        With the paper's shared 37,000-token vocabulary this counts 63.1M parameters: the paper does
        not say exactly which vocabulary its 65M refers to.
        """
        return cls(src_vocab_size, tgt_vocab_size, **overrides)

    @classmethod
    def big(cls, src_vocab_size: int = 37000, tgt_vocab_size: int = 37000, **overrides) -> TransformerConfig:
        """The paper's big model: N=6, d_model=1024, d_ff=4096, h=16, dropout 0.3 (Table 3: 213M)."""
        params = {"d_model": 1024, "d_ff": 4096, "n_head": 16, "dropout": 0.3, **overrides}
        return cls(src_vocab_size, tgt_vocab_size, **params)


class TransformerAttention(NamedTuple):
    """Attention weights of every layer: ``encoder`` ``(L_enc, B, H, S, S)``, ``decoder`` (causal
    self-attention) ``(L_dec, B, H, T, T)`` and ``cross`` ``(L_dec, B, H, T, S)``."""

    encoder: Tensor
    decoder: Tensor
    cross: Tensor


def label_smoothed_cross_entropy(
    logits: Tensor, target: Tensor, smoothing: float = 0.1, ignore_index: int | None = None
) -> Tensor:
    """Cross-entropy against a target distribution with ``1 - smoothing`` on the right token and
    ``smoothing`` spread evenly over the whole vocabulary; positions equal to ``ignore_index`` (padding)
    do not count. Same as ``F.cross_entropy(..., label_smoothing=smoothing)``.

    ``logits`` ``(N, V)`` or ``(B, T, V)``; ``target`` of the matching leading shape.
    """
    logits = logits.reshape(-1, logits.shape[-1])
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # half precision: compute the loss in float32 (float64 stays float64)
    target = target.reshape(-1)
    logp = F.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, target.clamp(min=0)[:, None]).squeeze(-1)  # -log p(right token)
    uniform = -logp.mean(dim=-1)  # cross-entropy against the uniform distribution
    loss = (1 - smoothing) * nll + smoothing * uniform
    if ignore_index is not None:
        keep = target != ignore_index
        return loss[keep].sum() / keep.sum().clamp(min=1)
    return loss.mean()


class Transformer(SavesToFile, nn.Module):
    """The paper's encoder-decoder. ``model(src, tgt)`` -> logits ``(B, T_tgt, tgt_vocab_size)``.

    ``src`` ``(B, S)`` and ``tgt`` ``(B, T)`` are int64 ids; positions holding ``config.pad_id`` are
    padding and are masked out of every attention. ``tgt`` is the decoder's input (starting with BOS);
    the logits at position ``t`` predict ``tgt``'s token ``t + 1``.
    """

    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = c = self.checked_config(config)
        share_src = c.share_embeddings and c.src_vocab_size == c.tgt_vocab_size
        self.tgt_emb = nn.Embedding(c.tgt_vocab_size, c.d_model)
        self.src_emb = self.tgt_emb if share_src else nn.Embedding(c.src_vocab_size, c.d_model)
        self.pos = SinusoidalPositionalEncoding(c.d_model, c.context_length)
        self.drop = nn.Dropout(c.dropout)
        layer_args = (c.d_model, c.n_head, c.d_ff, c.dropout, c.activation, "layernorm", c.norm_first,
                      c.layer_norm_eps)
        self.encoder = Stack(EncoderLayer(*layer_args) for _ in range(c.n_encoder_layers))
        self.decoder = Stack(DecoderLayer(*layer_args) for _ in range(c.n_decoder_layers))
        # pre-norm stacks end with a norm; post-norm layers already end normalised
        final = (lambda: make_norm("layernorm", c.d_model, c.layer_norm_eps)) if c.norm_first else nn.Identity
        self.encoder_norm = final()
        self.decoder_norm = final()
        self.out_proj = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        self.reset_parameters()
        if c.share_embeddings:
            self.out_proj.weight = self.tgt_emb.weight

    @classmethod
    def from_hf_t5(cls, model_or_state_dict, config=None):
        """A Hugging Face ``T5ForConditionalGeneration`` as a :class:`~transformer_core.t5.T5` (its own
        class: relative position bias, RMSNorm, no scaling): :meth:`T5.from_hf_t5 <transformer_core.t5.T5.from_hf_t5>`."""
        from .t5 import T5

        return T5.from_hf_t5(model_or_state_dict, config)

    def reset_parameters(self) -> None:
        """Glorot-uniform matrices; embeddings N(0, 1/d_model), so that after the √d_model scale
        they have unit size like the positional encodings they are added to."""
        for name, p in self.named_parameters():
            if "emb" in name:
                nn.init.normal_(p, std=self.config.d_model**-0.5)
            elif p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _embed(self, emb: nn.Embedding, ids: Tensor, offset: int = 0) -> Tensor:
        x = emb(ids) * math.sqrt(self.config.d_model)  # (B, T, D)
        return self.drop(self.pos(x, offset=offset))

    def encode(self, src: Tensor, need_weights: bool = False) -> tuple[Tensor, list[Tensor | None]]:
        """``src`` ``(B, S)`` -> memory ``(B, S, D)`` and the encoder's self-attention weights."""
        check_token_ids(src, self.config.src_vocab_size, self.config.context_length, name="src")
        x, weights = self.encoder(self._embed(self.src_emb, src), key_padding_mask=src == self.config.pad_id,
                                  need_weights=need_weights)
        return self.encoder_norm(x), weights

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        src_pad: Tensor,
        caches: list[KVCache] | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor | None], list[Tensor | None]]:
        """Decoder logits ``(B, T, V)`` for ``tgt`` ``(B, T)`` given the encoder's ``memory``."""
        offset = 0 if caches is None else caches[0].length
        tgt_pad = None
        if caches is None and (tgt == self.config.pad_id).any():
            tgt_pad = tgt == self.config.pad_id
        x, self_w, cross_w = self.decoder(
            self._embed(self.tgt_emb, tgt, offset), caches=caches, need_weights=need_weights, memory=memory,
            key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad,
        )
        return self.out_proj(self.decoder_norm(x)), self_w, cross_w

    def forward(self, src: Tensor, tgt: Tensor, return_attention: bool = False):
        memory, enc_w = self.encode(src, need_weights=return_attention)  # checks src
        check_token_ids(tgt, self.config.tgt_vocab_size, self.config.context_length, name="tgt")
        if src.shape[0] != tgt.shape[0]:
            raise ValueError(f"src and tgt batch sizes differ: {src.shape[0]} vs {tgt.shape[0]}")
        logits, self_w, cross_w = self.decode(tgt, memory, src == self.config.pad_id, need_weights=return_attention)
        if return_attention:
            return logits, TransformerAttention(torch.stack(enc_w), torch.stack(self_w), torch.stack(cross_w))
        return logits

    def loss(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Label-smoothed loss of predicting ``tgt[:, 1:]`` from ``tgt[:, :-1]`` (teacher forcing)."""
        logits = self(src, tgt[:, :-1])
        return label_smoothed_cross_entropy(
            logits, tgt[:, 1:], self.config.label_smoothing, ignore_index=self.config.pad_id
        )

    # ------------------------------------------------------------------ decoding
    def _check_max_len(self, max_len: int) -> None:
        if not is_int(max_len) or not 2 <= max_len <= self.config.context_length:
            raise ValueError(f"max_len must be an int in [2, {self.config.context_length}], got {max_len!r}")

    def _no_specials(self, logits: Tensor) -> Tensor:
        """A decoder must never emit padding or a second BOS: remove them from the choice."""
        logits = logits.clone()
        logits[..., [self.config.pad_id, self.config.bos_id]] = float("-inf")
        return logits

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, max_len: int = 64) -> Tensor:
        """Most likely token at each step. Returns ``(B, L)``: BOS, the tokens, EOS, then padding."""
        self._check_max_len(max_len)
        was_training = self.training
        self.eval()
        try:
            c = self.config
            memory, _ = self.encode(src)
            src_pad = src == c.pad_id
            B = src.shape[0]
            out = torch.full((B, 1), c.bos_id, dtype=torch.long, device=src.device)
            done = torch.zeros(B, dtype=torch.bool, device=src.device)
            caches = [KVCache() for _ in self.decoder]
            while out.shape[1] < max_len and not done.all():
                logits, _, _ = self.decode(out[:, -1:], memory, src_pad, caches)
                nxt = self._no_specials(logits[:, -1]).argmax(dim=-1)
                nxt = torch.where(done, torch.full_like(nxt, c.pad_id), nxt)
                out = torch.cat([out, nxt[:, None]], dim=1)
                done |= nxt == c.eos_id
            return out
        finally:
            self.train(was_training)

    @torch.no_grad()
    def beam_search(
        self, src: Tensor, beam_size: int = 4, max_len: int = 64, length_penalty: float = 0.6
    ) -> Tensor:
        """Beam search with the length penalty ``((5 + len) / 6) ** alpha`` the paper used (α = 0.6).

        Keeps the ``beam_size`` best partial outputs at each step; a hypothesis ending in EOS is set
        aside; the search stops when ``beam_size`` hypotheses have finished or at ``max_len``. At
        ``max_len`` the beams still alive (cut off, without EOS) compete with the finished ones, scored
        by the same length-normalised log-probability.
        Returns ``(B, L)`` like :meth:`greedy_decode`. ``beam_size=1`` is greedy decoding.
        """
        self._check_max_len(max_len)
        check_token_ids(src, self.config.src_vocab_size, self.config.context_length, name="src")
        check_int("beam_size", beam_size)
        was_training = self.training
        self.eval()
        try:
            results = [self._beam_one(src[i : i + 1], beam_size, max_len, length_penalty) for i in range(src.shape[0])]
        finally:
            self.train(was_training)
        width = max(len(r) for r in results)
        out = torch.full((len(results), width), self.config.pad_id, dtype=torch.long, device=src.device)
        for i, r in enumerate(results):
            out[i, : len(r)] = torch.tensor(r, device=src.device)
        return out

    def _beam_one(self, src: Tensor, k: int, max_len: int, alpha: float) -> list[int]:
        c = self.config
        memory, _ = self.encode(src)  # (1, S, D)
        memory = memory.expand(k, -1, -1)
        src_pad = (src == c.pad_id).expand(k, -1)
        seqs = torch.full((k, 1), c.bos_id, dtype=torch.long, device=src.device)
        dtype = torch.promote_types(memory.dtype, torch.float32)  # scores in float32, or float64 for a float64 model
        scores = torch.full((k,), float("-inf"), device=src.device, dtype=dtype)
        scores[0] = 0.0  # all beams start identical: expand only the first
        caches = [KVCache() for _ in self.decoder]
        finished: list[tuple[float, list[int]]] = []

        def penalty(length: int) -> float:
            return ((5 + length) / 6) ** alpha

        while seqs.shape[1] < max_len and len(finished) < k:
            logits, _, _ = self.decode(seqs[:, -1:], memory, src_pad, caches)
            logp = F.log_softmax(self._no_specials(logits[:, -1].to(dtype)), dim=-1)  # (k, V)
            cand = (scores[:, None] + logp).flatten()  # (k * V,)
            top_scores, top_idx = cand.topk(min(2 * k, cand.numel()))
            V = logp.shape[-1]
            keep_beam, keep_tok, keep_score = [], [], []
            for s, i in zip(top_scores.tolist(), top_idx.tolist(), strict=True):
                beam, tok = divmod(i, V)
                if s == float("-inf"):
                    break
                if tok == c.eos_id:
                    hyp = seqs[beam].tolist() + [tok]
                    finished.append((s / penalty(len(hyp) - 1), hyp))
                else:
                    keep_beam.append(beam)
                    keep_tok.append(tok)
                    keep_score.append(s)
                if len(keep_beam) == k:
                    break
            if not keep_beam:
                break
            while len(keep_beam) < k:  # too few live candidates: pad with dead beams
                keep_beam.append(keep_beam[0])
                keep_tok.append(keep_tok[0])
                keep_score.append(float("-inf"))
            index = torch.tensor(keep_beam, device=src.device)
            for cache in caches:
                cache.reorder(index)
            seqs = torch.cat([seqs[index], torch.tensor(keep_tok, device=src.device)[:, None]], dim=1)
            scores = torch.tensor(keep_score, device=src.device, dtype=dtype)
        if seqs.shape[1] >= max_len or not finished:
            # Out of room: the live beams are hypotheses too, cut off at max_len. They compete with the
            # finished ones under the same length penalty (a short weak finished one must not win just
            # because it ended), as they would have had they been allowed to end here.
            finished += [
                (s / penalty(seqs.shape[1] - 1), seqs[b].tolist())
                for b, s in enumerate(scores.tolist())
                if s > float("-inf")
            ]
        return max(finished, key=lambda f: f[0])[1]
