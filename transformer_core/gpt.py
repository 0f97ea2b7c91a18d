"""The GPT model: token + position embeddings, a stack of causal pre-norm blocks, a tied output head."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from .attention import KVCache
from .blocks import Block, ModelConfig, Stack, count_parameters
from .checkpoint import SavesToFile
from .efficient_attention import ATTENTION_KINDS, make_attention
from .hf_llama import convert_llama_state_dict, gpt_config_fields
from .layers import FeedForward, make_norm
from .positional import LearnedPositionalEmbedding, RotaryEmbedding, SinusoidalPositionalEncoding
from .sampling import check_sampling_args, sample_next_token
from .validation import check_choice, check_int, check_token_ids, is_number

__all__ = ["GPTConfig", "GPT"]


@dataclass
class GPTConfig(ModelConfig):
    """The shape of a GPT. ``d_ff`` defaults to ``4 * d_model``.

    Presets: :meth:`tiny` (trains in seconds on a laptop CPU) and :meth:`gpt2_small` (124M, GPT-2).
    """

    POSITIONALS: ClassVar[tuple[str, ...]] = ("learned", "sinusoidal", "rotary")

    # vocab_size, context_length, n_layer, n_head, d_model, d_ff, dropout, activation, norm,
    # norm_first, positional: ModelConfig's
    bias: bool = True
    tie_weights: bool = True
    layer_norm_eps: float = 1e-5
    n_kv_head: int | None = None
    rope_base: float = 10000.0  # RoPE's θ: pair i of a head turns by position · rope_base^(-2i/head_dim)
    attention: str = "full"  # or "sliding_window" (needs window) or "linear": chapter 14
    window: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if check_int("n_kv_head", self.n_kv_head, optional=True) and self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}")
        if self.positional == "rotary" and (self.d_model // self.n_head) % 2:
            raise ValueError("rotary positions need an even head width d_model // n_head")
        if not is_number(self.rope_base) or not self.rope_base > 1:
            raise ValueError(f"rope_base must be a finite number > 1, got {self.rope_base!r}")
        check_choice("attention", self.attention, ATTENTION_KINDS)
        if self.attention == "sliding_window":
            if self.window is None:
                raise ValueError("attention='sliding_window' needs window=... (how many keys each query sees)")
            check_int("window", self.window)
        elif self.window is not None:
            raise ValueError(f"window={self.window!r} is only used with attention='sliding_window', not {self.attention!r}")

    @classmethod
    def tiny(cls, vocab_size: int = 96, context_length: int = 64, **overrides) -> GPTConfig:
        """2 layers, 4 heads, width 64: about 0.1M parameters plus embeddings, trains in seconds."""
        return cls(**{"vocab_size": vocab_size, "context_length": context_length, "n_layer": 2,
                      "n_head": 4, "d_model": 64, **overrides})

    @classmethod
    def gpt2_small(cls, **overrides) -> GPTConfig:
        """GPT-2 small: 12 layers, 12 heads, width 768, 124,439,808 parameters with the tied head."""
        return cls(**{"vocab_size": 50257, "context_length": 1024, "n_layer": 12, "n_head": 12,
                      "d_model": 768, "activation": "gelu_tanh", **overrides})


class GPT(SavesToFile, nn.Module):
    """A decoder-only Transformer language model.

    ``model(idx)`` maps token ids ``(B, T)`` to next-token logits ``(B, T, vocab_size)``;
    ``model(idx, return_attention=True)`` also returns the attention weights of every layer,
    ``(n_layer, B, n_head, T, T)``, whose rows sum to 1 (future positions are exactly 0).
    """

    config_class = GPTConfig

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = c = self.checked_config(config)
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        rotary = None
        if c.positional == "learned":
            self.pos_emb: nn.Module | None = LearnedPositionalEmbedding(c.context_length, c.d_model)
        elif c.positional == "sinusoidal":
            self.pos_emb = SinusoidalPositionalEncoding(c.d_model, c.context_length)
        else:
            self.pos_emb = None
            rotary = RotaryEmbedding(c.head_dim, c.context_length, base=c.rope_base)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = Stack(
            Block(
                make_attention(c.attention, c.d_model, c.n_head, c.window, c.dropout, c.bias, c.n_kv_head, rotary),
                self.feed_forward(),
                causal=True, norm=c.norm, norm_first=c.norm_first, dropout=c.dropout, eps=c.layer_norm_eps,
                bias=c.bias,
            )
            for _ in range(c.n_layer)
        )
        # pre-norm stacks need a final norm: the residual stream itself was never normalised
        self.ln_f = make_norm(c.norm, c.d_model, c.layer_norm_eps, c.bias) if c.norm_first else nn.Identity()
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.reset_parameters()
        if c.tie_weights:
            self.lm_head.weight = self.tok_emb.weight  # one matrix reads tokens in and writes them out

    def feed_forward(self) -> nn.Module:
        """The feed-forward part of each block: a :class:`FeedForward` (an MoEGPT's is a mixture of experts)."""
        c = self.config
        return FeedForward(c.d_model, c.d_ff, c.activation, c.dropout, c.bias)

    def reset_parameters(self) -> None:
        """GPT-2's initialisation: N(0, 0.02), and residual projections scaled by 1/√(2·n_layer).

        (PyTorch's default N(0, 1) embedding, tied to the head, gives huge initial logits, and on a
        CPU the denormal floats that follow slow training down several times.)
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.out_proj.weight, std=residual_std)
            for ffn in block.mlp.modules():  # the block's FeedForward, or each expert of a mixture
                if isinstance(ffn, FeedForward):
                    nn.init.normal_(ffn.fc2.weight, std=residual_std)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Count each parameter once (the tied head shares the embedding's matrix)."""
        return count_parameters(self, non_embedding)

    def _run(
        self, idx: Tensor, caches: list[KVCache] | None = None, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor | None]]:
        offset = 0 if caches is None else caches[0].length
        x = self.tok_emb(idx)  # (B, T, D)
        if self.pos_emb is not None:
            x = self.pos_emb(x, offset=offset)
        x, weights = self.blocks(self.drop(x), caches=caches, need_weights=need_weights)
        return self.lm_head(self.ln_f(x)), weights  # (B, T, vocab_size)

    def forward(self, idx: Tensor, return_attention: bool = False):
        """``idx`` ``(B, T)`` int64 -> logits ``(B, T, vocab_size)`` [, attention ``(L, B, H, T, T)``]."""
        check_token_ids(idx, self.config.vocab_size, self.config.context_length)
        logits, weights = self._run(idx, need_weights=return_attention)
        if return_attention:
            return logits, torch.stack(weights)
        return logits

    def loss(self, idx: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy of predicting ``targets`` ``(B, T)`` (usually ``idx`` shifted by one)."""
        check_token_ids(targets, self.config.vocab_size, name="targets")
        if targets.shape != idx.shape:
            raise ValueError(f"targets shape {tuple(targets.shape)} must equal idx shape {tuple(idx.shape)}")
        logits = self(idx)
        return nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Extend ``idx`` ``(B, T)`` by ``max_new_tokens`` tokens; returns ``(B, T + max_new_tokens)``.

        With ``use_cache`` the keys and values of earlier positions are kept (a KV cache), so each step
        runs the model on one new token; the tokens are the same as without the cache. Once the text
        outgrows ``context_length``, the model sees only the last ``context_length`` tokens (positions
        are then recomputed, so the cache is rebuilt each step). Pass a seeded ``torch.Generator`` for
        reproducible sampling. The model runs in eval mode (no dropout) and is restored afterwards.
        """
        ctx = self.config.context_length
        check_token_ids(idx, self.config.vocab_size, values=True)  # once per call: no step is checked again
        check_int("max_new_tokens", max_new_tokens, minimum=0)
        if not greedy:
            check_sampling_args(temperature, top_k, top_p, self.config.vocab_size)
        was_training = self.training
        self.eval()
        try:
            out, caches = idx, None
            for _ in range(max_new_tokens):
                if use_cache and out.shape[1] <= ctx:
                    if caches is None:  # prefill: run the whole prompt once, filling the caches
                        room = min(idx.shape[1] + max_new_tokens, ctx)  # the most the caches will hold
                        caches = [KVCache(capacity=room) for _ in self.blocks]
                        logits, _ = self._run(out, caches)
                    else:  # one new token, attending to everything cached
                        logits, _ = self._run(out[:, -1:], caches)
                else:
                    caches = None
                    logits, _ = self._run(out[:, -ctx:])
                nxt = sample_next_token(logits[:, -1], temperature, top_k, top_p, greedy, generator)
                out = torch.cat([out, nxt], dim=1)
            return out
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ GPT-2 weights
    @classmethod
    def from_hf_gpt2(cls, model_or_state_dict, n_head: int | None = None) -> GPT:
        """Build a GPT with the weights of a Hugging Face ``GPT2LMHeadModel`` (or its state dict).

        From a model the config is read off ``model.config``. A bare state dict does not say how many
        heads it has: give ``n_head``, or it is taken from GPT-2's published sizes
        (768 -> 12, 1024 -> 16, 1280 -> 20, 1600 -> 25). Nothing is downloaded here; to load the real
        weights, a reader with internet passes ``GPT2LMHeadModel.from_pretrained("gpt2")``.
        """
        hf_config = getattr(model_or_state_dict, "config", None)
        if hf_config is not None:
            sd = model_or_state_dict.state_dict()
            act = getattr(hf_config, "activation_function", "gelu_new")
            activations = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
            if act not in activations:
                raise ValueError(f"unsupported GPT-2 activation_function {act!r}")
            if getattr(hf_config, "scale_attn_by_inverse_layer_idx", False):
                raise ValueError("scale_attn_by_inverse_layer_idx=True is not supported")
            n_head = hf_config.n_head
            eps = hf_config.layer_norm_epsilon
            activation = activations[act]
        elif isinstance(model_or_state_dict, Mapping):
            sd, eps, activation = model_or_state_dict, 1e-5, "gelu_tanh"
        else:
            raise TypeError(
                f"from_hf_gpt2 takes a GPT2LMHeadModel or its state_dict, got {type(model_or_state_dict).__name__}"
            )
        sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
        for key in ("wte.weight", "wpe.weight", "ln_f.weight"):
            if key not in sd:
                raise ValueError(f"not a GPT-2 state dict: key 'transformer.{key}' is missing")
        vocab_size, d_model = sd["wte.weight"].shape
        n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("h."))
        if n_head is None:
            n_head = {768: 12, 1024: 16, 1280: 20, 1600: 25}.get(d_model)
            if n_head is None:
                raise ValueError(f"cannot infer n_head for width {d_model}; pass n_head=...")
        cfg = GPTConfig(
            vocab_size=vocab_size, context_length=sd["wpe.weight"].shape[0], n_layer=n_layer,
            n_head=n_head, d_model=d_model, d_ff=sd["h.0.mlp.c_fc.weight"].shape[1],
            activation=activation, layer_norm_eps=eps,
        )
        head = sd.get("lm_head.weight")
        if head is not None and not torch.equal(head, sd["wte.weight"]):
            raise ValueError("lm_head.weight differs from wte.weight: this GPT ties them, as GPT-2 does")
        dtype = sd["wte.weight"].dtype  # copy exactly: a float64 (or float16) GPT-2 stays so
        model = cls(cfg).to(dtype)
        model.load_state_dict(_convert_gpt2_state_dict(sd, n_layer, dtype))
        return model

    # ------------------------------------------------------------------ Llama weights
    @classmethod
    def from_hf_llama(cls, model_or_state_dict, config=None) -> GPT:
        """Build the modern GPT (RMSNorm, SwiGLU, RoPE, no biases) with a Hugging Face Llama's weights.

        Pass a ``LlamaForCausalLM``, or its state dict together with ``config=`` (its ``LlamaConfig``
        or that config's ``to_dict()``): unlike GPT-2's, a Llama state dict does not say how many
        heads it has, nor its RoPE θ or its norm's ε. Grouped-query attention, ``rms_norm_eps``,
        RoPE's θ, ``intermediate_size`` and tied embeddings carry over; what this GPT cannot compute
        (RoPE scaling, biases, another activation, a head width other than ``hidden_size //
        num_attention_heads``) is refused with a ``ValueError`` naming the field. Hugging Face rotates
        the two halves of a head, pairs ``(i, i + d/2)``; the book's RoPE rotates ``(2i, 2i + 1)``:
        the query and key rows of each head are permuted to match (see :mod:`transformer_core.hf_llama`).
        Nothing is downloaded here.
        """
        hf_config = getattr(model_or_state_dict, "config", None)
        if hf_config is not None and not isinstance(model_or_state_dict, Mapping):
            if config is not None:
                raise ValueError("config= is only for a bare state dict: a model brings its own config")
            sd, config = model_or_state_dict.state_dict(), hf_config
        elif isinstance(model_or_state_dict, Mapping):
            if config is None:
                raise ValueError(
                    "a Llama state dict does not say its number of heads, RoPE θ or norm ε: "
                    "pass config=model.config (a LlamaConfig, or its to_dict())"
                )
            sd = model_or_state_dict
        else:
            raise TypeError(
                f"from_hf_llama takes a LlamaForCausalLM or its state_dict, got {type(model_or_state_dict).__name__}"
            )
        cfg = GPTConfig(**gpt_config_fields(config))
        converted = convert_llama_state_dict(sd, cfg)
        model = cls(cfg).to(converted["tok_emb.weight"].dtype)  # copy exactly: a float64 Llama stays so
        model.load_state_dict(converted)
        return model


def _convert_gpt2_state_dict(sd: Mapping[str, Tensor], n_layer: int, dtype: torch.dtype) -> dict[str, Tensor]:
    """Rename GPT-2's keys to ours. GPT-2's ``Conv1D`` stores weights as (in, out): transpose them."""
    out = {
        "tok_emb.weight": sd["wte.weight"],
        "lm_head.weight": sd["wte.weight"],
        "pos_emb.weight": sd["wpe.weight"],
        "ln_f.weight": sd["ln_f.weight"],
        "ln_f.bias": sd["ln_f.bias"],
    }
    for i in range(n_layer):
        h, b = f"h.{i}.", f"blocks.{i}."
        w_q, w_k, w_v = sd[h + "attn.c_attn.weight"].t().chunk(3, dim=0)  # each (D, D)
        b_q, b_k, b_v = sd[h + "attn.c_attn.bias"].chunk(3)
        out.update({
            b + "ln_1.weight": sd[h + "ln_1.weight"], b + "ln_1.bias": sd[h + "ln_1.bias"],
            b + "ln_2.weight": sd[h + "ln_2.weight"], b + "ln_2.bias": sd[h + "ln_2.bias"],
            b + "attn.q_proj.weight": w_q, b + "attn.q_proj.bias": b_q,
            b + "attn.k_proj.weight": w_k, b + "attn.k_proj.bias": b_k,
            b + "attn.v_proj.weight": w_v, b + "attn.v_proj.bias": b_v,
            b + "attn.out_proj.weight": sd[h + "attn.c_proj.weight"].t(),
            b + "attn.out_proj.bias": sd[h + "attn.c_proj.bias"],
            b + "mlp.fc1.weight": sd[h + "mlp.c_fc.weight"].t(), b + "mlp.fc1.bias": sd[h + "mlp.c_fc.bias"],
            b + "mlp.fc2.weight": sd[h + "mlp.c_proj.weight"].t(), b + "mlp.fc2.bias": sd[h + "mlp.c_proj.bias"],
        })
    return {k: v.detach().to(dtype).contiguous() for k, v in out.items()}
