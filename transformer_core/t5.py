"""A T5-style encoder-decoder (Raffel et al., 2020): what changed in the encoder-decoder since 2017.

Beside the paper's :class:`~transformer_core.Transformer` it differs in four places:

* **pre-norm RMSNorm without a bias** (T5's ``T5LayerNorm``) before every sublayer, and one at the end
  of each stack;
* **no position embeddings**: a learned bias per head and per *relative position bucket* is added to
  the attention scores, computed once per stack and shared by all its layers. The encoder's buckets
  are bidirectional (a key 3 to the left and one 3 to the right differ); the decoder's are causal
  (every future key falls in bucket 0, and is masked anyway). Near offsets get a bucket each, far
  ones share logarithmically wider buckets up to ``max_distance``;
* **no 1/√d scaling** inside the attention (T5 folds it into the initialisation of the queries:
  :meth:`T5.reset_parameters`);
* a ReLU feed-forward network and projections without biases; one embedding for source, target and
  output, the decoder's output scaled by ``d_model**-0.5`` before the tied output projection.

:meth:`T5.from_hf_t5` (also :meth:`Transformer.from_hf_t5 <transformer_core.Transformer.from_hf_t5>`)
copies a Hugging Face ``T5ForConditionalGeneration`` exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .attention import KVCache, MultiHeadAttention, scaled_dot_product_attention
from .blocks import Block, Stack
from .layers import FeedForward, RMSNorm
from .validation import Config, check_int, check_model_shape, check_token_ids

__all__ = [
    "T5Config",
    "T5",
    "T5Attention",
    "RelativePositionBias",
    "relative_position_bucket",
    "span_corruption",
]


@dataclass
class T5Config(Config):
    """The shape of a T5. The defaults are t5-small's (but for its 32,128-token vocabulary)."""

    vocab_size: int
    d_model: int = 512
    num_buckets: int = 32  # relative position buckets, per direction in the encoder
    max_distance: int = 128  # offsets beyond it share the last bucket
    n_head: int = 8
    d_ff: int = 2048
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    dropout: float = 0.1
    layer_norm_eps: float = 1e-6
    tie_weights: bool = True
    scale_output: bool = True  # the decoder's output times d_model**-0.5 (T5; not T5 v1.1)
    pad_id: int = 0  # also the decoder's start token
    eos_id: int = 1

    def __post_init__(self) -> None:
        check_model_shape(
            self,
            "vocab_size",
            "d_model",
            "n_head",
            "n_encoder_layers",
            "n_decoder_layers",
            "num_buckets",
            "max_distance",
        )
        if self.num_buckets < 4 or self.max_distance <= self.num_buckets // 2:
            raise ValueError(
                f"need num_buckets >= 4 and max_distance > num_buckets // 2, got "
                f"{self.num_buckets}, {self.max_distance}"
            )
        ids = (self.pad_id, self.eos_id)
        if ids[0] == ids[1] or min(ids) < 0 or max(ids) >= self.vocab_size:
            raise ValueError(f"pad_id and eos_id must be distinct ids of the vocabulary, got {ids}")


def relative_position_bucket(
    relative: Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> Tensor:
    """T5's bucket of each ``relative = key position - query position`` (an int tensor).

    Bidirectional: half the buckets for keys to the right. Causal: keys to the right share bucket 0.
    Of the rest, half are exact offsets ``0, 1, ...``; the others widen logarithmically up to
    ``max_distance``, beyond which everything shares the last bucket.
    """
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:
        distance = (-relative).clamp(min=0)
    exact = num_buckets // 2
    far = (
        exact
        + (
            torch.log(distance.float() / exact)
            / math.log(max_distance / exact)
            * (num_buckets - exact)
        ).long()
    )
    far = far.clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    """A learned bias per head and bucket: ``bias(T_q, T_k)`` -> float mask ``(1, H, T_q, T_k)``.

    The queries are the last ``T_q`` of the ``T_k`` positions (decoding with a KV cache)."""

    def __init__(
        self, n_head: int, num_buckets: int, max_distance: int, bidirectional: bool
    ) -> None:
        super().__init__()
        self.bidirectional, self.num_buckets, self.max_distance = (
            bidirectional,
            num_buckets,
            max_distance,
        )
        self.emb = nn.Embedding(num_buckets, n_head)

    def buckets(self, t_q: int, t_k: int) -> Tensor:
        device = self.emb.weight.device
        q_pos = torch.arange(t_k - t_q, t_k, device=device)[:, None]
        k_pos = torch.arange(t_k, device=device)[None, :]
        return relative_position_bucket(
            k_pos - q_pos, self.bidirectional, self.num_buckets, self.max_distance
        )

    def forward(self, t_q: int, t_k: int) -> Tensor:
        return self.emb(self.buckets(t_q, t_k)).permute(2, 0, 1)[None]  # (1, H, T_q, T_k)


class T5Attention(MultiHeadAttention):
    """Multi-head attention without the 1/√d scaling of the scores (T5's)."""

    def attend(
        self, q, k, v, attn_mask=None, key_padding_mask=None, is_causal=False, need_weights=False
    ):
        p = self.dropout if self.training else 0.0
        return scaled_dot_product_attention(
            q, k, v, attn_mask, key_padding_mask, is_causal, p, need_weights, scale=1.0
        )


class T5(nn.Module):
    """``model(src, tgt)`` -> logits ``(B, T, vocab_size)``; ``src`` positions holding ``pad_id`` are
    padding. ``tgt`` is the decoder's input, starting with ``pad_id`` (T5's start token)."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = c = config
        self.shared = nn.Embedding(c.vocab_size, c.d_model)
        self.encoder_bias = RelativePositionBias(
            c.n_head, c.num_buckets, c.max_distance, bidirectional=True
        )
        self.decoder_bias = RelativePositionBias(
            c.n_head, c.num_buckets, c.max_distance, bidirectional=False
        )

        def block(decoder: bool) -> Block:
            def attn() -> T5Attention:
                return T5Attention(c.d_model, c.n_head, c.dropout, bias=False)

            return Block(
                attn(),
                FeedForward(c.d_model, c.d_ff, "relu", c.dropout, bias=False),
                cross_attn=attn() if decoder else None,
                causal=decoder,
                norm="rmsnorm",
                norm_first=True,
                dropout=c.dropout,
                eps=c.layer_norm_eps,
                bias=False,
            )

        self.encoder = Stack(block(False) for _ in range(c.n_encoder_layers))
        self.decoder = Stack(block(True) for _ in range(c.n_decoder_layers))
        self.encoder_norm, self.decoder_norm = (
            RMSNorm(c.d_model, c.layer_norm_eps),
            RMSNorm(c.d_model, c.layer_norm_eps),
        )
        self.drop = nn.Dropout(c.dropout)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.shared.weight
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """T5's initialisation (Mesh TensorFlow's, as Hugging Face's ``T5PreTrainedModel`` does it).

        Every matrix is drawn with the standard deviation of 1/√(its input width), except the query
        projection, which also takes the 1/√(head size) the attention no longer applies:
        N(0, (d_model · head size)^-1/2). Embeddings N(0, 1), norms 1.
        """
        c = self.config
        head = c.d_model // c.n_head
        nn.init.normal_(self.shared.weight, std=1.0)
        if not c.tie_weights:
            nn.init.normal_(self.lm_head.weight, std=1.0)
        for bias in (self.encoder_bias, self.decoder_bias):
            nn.init.normal_(bias.emb.weight, std=c.d_model**-0.5)
        for module in self.modules():
            if isinstance(module, T5Attention):
                nn.init.normal_(module.q_proj.weight, std=(c.d_model * head) ** -0.5)
                for proj in (module.k_proj, module.v_proj, module.out_proj):
                    nn.init.normal_(proj.weight, std=proj.in_features**-0.5)
            elif isinstance(module, FeedForward):
                nn.init.normal_(module.fc1.weight, std=c.d_model**-0.5)
                nn.init.normal_(module.fc2.weight, std=c.d_ff**-0.5)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """``src`` ``(B, S)`` -> memory ``(B, S, D)`` and its padding ``(B, S)``."""
        check_token_ids(src, self.config.vocab_size, name="src")
        pad = src == self.config.pad_id
        S = src.shape[1]
        x, _ = self.encoder(
            self.drop(self.shared(src)), attn_mask=self.encoder_bias(S, S), key_padding_mask=pad
        )
        return self.drop(self.encoder_norm(x)), pad

    def decode(
        self, tgt: Tensor, memory: Tensor, src_pad: Tensor, caches: list[KVCache] | None = None
    ) -> Tensor:
        """Logits ``(B, T, V)`` for ``tgt`` ``(B, T)`` (the new tokens, with ``caches``)."""
        T = tgt.shape[1]
        past = 0 if caches is None else caches[0].length
        x, _, _ = self.decoder(
            self.drop(self.shared(tgt)),
            caches=caches,
            memory=memory,
            attn_mask=self.decoder_bias(T, past + T),
            memory_key_padding_mask=src_pad,
        )
        h = self.drop(self.decoder_norm(x))
        return self.lm_head(h * self.config.d_model**-0.5 if self.config.scale_output else h)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        memory, src_pad = self.encode(src)
        check_token_ids(tgt, self.config.vocab_size, name="tgt")
        if src.shape[0] != tgt.shape[0]:
            raise ValueError(f"src and tgt batch sizes differ: {src.shape[0]} vs {tgt.shape[0]}")
        return self.decode(tgt, memory, src_pad)

    @torch.no_grad()
    def generate(self, src: Tensor, max_new_tokens: int = 20, use_cache: bool = True) -> Tensor:
        """Greedy decoding: ``(B, 1 + n)``, the start token (pad), the tokens, EOS, then padding;
        it stops when every row has ended (Hugging Face's ``generate(do_sample=False)``)."""
        check_int("max_new_tokens", max_new_tokens)
        was_training = self.training
        self.eval()
        try:
            c = self.config
            memory, src_pad = self.encode(src)
            out = torch.full((src.shape[0], 1), c.pad_id, dtype=torch.long, device=src.device)
            done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
            caches = [KVCache() for _ in self.decoder] if use_cache else None
            for _ in range(max_new_tokens):
                logits = self.decode(out[:, -1:] if use_cache else out, memory, src_pad, caches)
                nxt = logits[:, -1].argmax(dim=-1).masked_fill(done, c.pad_id)
                out = torch.cat([out, nxt[:, None]], dim=1)
                done |= nxt == c.eos_id
                if done.all():
                    break
            return out
        finally:
            self.train(was_training)

    @classmethod
    def from_hf_t5(cls, model_or_state_dict, config=None) -> T5:
        """A copy of a Hugging Face ``T5ForConditionalGeneration`` (or its state dict, with its
        ``T5Config`` as ``config``): the same logits and the same greedy output."""
        if isinstance(model_or_state_dict, Mapping):
            if config is None:
                raise ValueError("a T5 state dict needs config=... (the T5Config it was made with)")
            sd = model_or_state_dict
        else:
            sd, config = model_or_state_dict.state_dict(), model_or_state_dict.config
        get = config.get if isinstance(config, Mapping) else lambda k, d=None: getattr(config, k, d)
        if get("feed_forward_proj", "relu") != "relu":
            raise ValueError(
                f"feed_forward_proj={get('feed_forward_proj')!r}: only T5's 'relu' is mapped"
            )
        if get("d_kv") * get("num_heads") != get("d_model"):
            raise ValueError(
                "d_kv * num_heads must equal d_model: the book's heads split the width"
            )
        # transformers 5 always ties and says whether to scale in scale_decoder_outputs; 4.x scaled iff tied
        tie = bool(get("tie_word_embeddings", True))
        scale = bool(get("scale_decoder_outputs", tie))
        model = cls(
            T5Config(
                vocab_size=get("vocab_size"),
                d_model=get("d_model"),
                num_buckets=get("relative_attention_num_buckets"),
                max_distance=get("relative_attention_max_distance"),
                n_head=get("num_heads"),
                d_ff=get("d_ff"),
                n_encoder_layers=get("num_layers"),
                n_decoder_layers=get("num_decoder_layers") or get("num_layers"),
                dropout=get("dropout_rate"),
                layer_norm_eps=get("layer_norm_epsilon"),
                tie_weights=tie,
                scale_output=scale,
                pad_id=get("pad_token_id", 0),
                eos_id=get("eos_token_id", 1),
            )
        )
        if get("decoder_start_token_id", 0) != model.config.pad_id:
            raise ValueError("the decoder must start with the pad token, as T5's does")
        model.to(sd["shared.weight"].dtype).load_state_dict(_convert(sd, model), strict=True)
        return model


def _convert(sd: Mapping[str, Tensor], model: T5) -> dict[str, Tensor]:
    """Hugging Face's T5 keys -> ours; every weight must be used."""
    used: set[str] = set()

    def take(key: str) -> Tensor:
        used.add(key)
        try:
            return sd[key]
        except KeyError:
            raise ValueError(f"not a T5 state dict for this config: no {key!r}") from None

    out = {
        "shared.weight": take("shared.weight"),
        "encoder_norm.weight": take("encoder.final_layer_norm.weight"),
        "decoder_norm.weight": take("decoder.final_layer_norm.weight"),
    }
    bias = "block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    out["encoder_bias.emb.weight"], out["decoder_bias.emb.weight"] = (
        take("encoder." + bias),
        take("decoder." + bias),
    )
    used |= {k for k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight") if k in sd}
    if model.config.tie_weights:
        used.add("lm_head.weight")
        out["lm_head.weight"] = out["shared.weight"]
    else:
        out["lm_head.weight"] = take("lm_head.weight")
    for side, stack in (("encoder", model.encoder), ("decoder", model.decoder)):
        for i in range(len(stack)):
            h, b = f"{side}.block.{i}.layer.", f"{side}.{i}."
            sublayers = [("attn", "0.SelfAttention", "ln_1")]
            if side == "decoder":
                sublayers.append(("cross_attn", "1.EncDecAttention", "ln_cross"))
            for ours, theirs, norm in sublayers:
                for a, z in (("q", "q"), ("k", "k"), ("v", "v"), ("out", "o")):
                    out[f"{b}{ours}.{a}_proj.weight"] = take(f"{h}{theirs}.{z}.weight")
                out[f"{b}{norm}.weight"] = take(f"{h}{theirs[0]}.layer_norm.weight")
            ff = str(len(sublayers))
            out[b + "ln_2.weight"] = take(f"{h}{ff}.layer_norm.weight")
            out[b + "mlp.fc1.weight"], out[b + "mlp.fc2.weight"] = (
                take(f"{h}{ff}.DenseReluDense.wi.weight"),
                take(f"{h}{ff}.DenseReluDense.wo.weight"),
            )
    left = sorted(set(sd) - used)
    if left:
        raise ValueError(f"the T5 state dict has weights this T5 has no place for: {left[:5]}")
    return {k: v.detach().contiguous() for k, v in out.items()}


# ------------------------------------------------------------ span corruption
def _random_segmentation(n_items: int, n_segments: int, generator: torch.Generator | None) -> Tensor:
    """Lengths of ``n_segments`` non-empty segments that add up to ``n_items``, chosen uniformly."""
    starts = torch.zeros(n_items - 1, dtype=torch.long)
    starts[: n_segments - 1] = 1
    starts = starts[torch.randperm(n_items - 1, generator=generator)]
    segment_of = torch.cat([torch.zeros(1, dtype=torch.long), starts.cumsum(0)])
    return torch.bincount(segment_of, minlength=n_segments)


def span_corruption(
    ids: Tensor | list[int],
    sentinels: list[int] | tuple[int, ...],
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """T5's pre-training objective on one sequence: ``(inputs, targets)``, both 1-D.

    About ``noise_density`` of the tokens, in spans of ``mean_span_length`` on average, are dropped
    from the input; each dropped span becomes one sentinel token (``sentinels[0]``, ``sentinels[1]``,
    ...), and the target lists the spans, each after its sentinel, ending with one more sentinel:

        ids      the  cat  sat  on   the  mat
        inputs   the  <0>  on   the  <1>
        targets  <0>  cat  sat  <1>  mat  <2>

    As in T5 (``random_spans_noise_mask``), the number of spans is fixed by the density and the mean
    length, the cut points are random, and kept and dropped runs alternate, starting with kept tokens
    (so the sequence ends with a dropped span). Append the EOS yourself if the model needs one.
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() != 1 or ids.numel() < 2:
        raise ValueError(f"ids must be one sequence of at least 2 token ids, got shape {tuple(ids.shape)}")
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density must be in (0, 1), got {noise_density!r}")
    if not isinstance(mean_span_length, (int, float)) or mean_span_length < 1:
        raise ValueError(f"mean_span_length must be a number >= 1, got {mean_span_length!r}")
    n = ids.numel()
    n_noise = min(max(round(n * noise_density), 1), n - 1)
    n_spans = min(max(round(n_noise / mean_span_length), 1), n - n_noise)  # each span after kept ones
    if len(sentinels) < n_spans + 1:
        raise ValueError(
            f"a sequence of {n} tokens needs {n_spans + 1} sentinels at this density and span "
            f"length, got {len(sentinels)}: pass more sentinel ids (T5 reserves 100)"
        )
    noise = _random_segmentation(n_noise, n_spans, generator)
    kept = _random_segmentation(n - n_noise, n_spans, generator)
    inputs, targets, start = [], [], 0
    for s, (k, z) in enumerate(zip(kept.tolist(), noise.tolist(), strict=True)):
        inputs += ids[start : start + k].tolist() + [sentinels[s]]
        targets += [sentinels[s]] + ids[start + k : start + k + z].tolist()
        start += k + z
    return torch.tensor(inputs), torch.tensor(targets + [sentinels[n_spans]])
