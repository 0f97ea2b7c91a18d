"""From a Hugging Face Llama to the book's modern GPT: the config and the weights.

:meth:`transformer_core.GPT.from_hf_llama` is the way in; this module holds its two halves.

The one step that is more than renaming is RoPE. Both rotate a head's vector pair by pair, pair ``i``
by ``position · θ^(-2i/d)``, but they pair different coordinates: the book (chapter 11) turns
``(x[2i], x[2i+1])``, neighbours; Hugging Face's ``rotate_half`` turns ``(x[i], x[i + d/2])``, one from
each half. The two agree after a fixed reordering of each head's coordinates,
``[0, d/2, 1, d/2 + 1, ...]``. Reordering the rows of ``q_proj`` and ``k_proj`` head by head does
it; a query-key dot product does not change when both vectors are reordered the same way, and the
values (``v_proj``) are left as they are, so the attention and the outputs are Llama's exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["gpt_config_fields", "convert_llama_state_dict", "halves_to_pairs"]


def _field(config, name: str, default=None):
    if isinstance(config, Mapping):
        return config.get(name, default)
    return getattr(config, name, default)


def _refuse(name: str, value, why: str) -> None:
    raise ValueError(f"Llama config {name}={value!r} cannot be represented: {why}")


def gpt_config_fields(config) -> dict:
    """The ``GPTConfig`` fields of a ``LlamaConfig`` (or its ``to_dict()``); refuses what GPT lacks."""
    model_type = _field(config, "model_type", "llama")
    if model_type != "llama":
        _refuse("model_type", model_type, "only Llama's architecture is mapped")
    act = _field(config, "hidden_act", "silu")
    if act != "silu":
        _refuse("hidden_act", act, "the book's SwiGLU gates with silu")
    for name, why in (("attention_bias", "the GPT's attention here has no biases (bias=False)"),
                      ("mlp_bias", "the GPT's SwiGLU here has no biases (bias=False)")):
        if _field(config, name, False):
            _refuse(name, True, why)
    d_model, n_head = _field(config, "hidden_size"), _field(config, "num_attention_heads")
    head_dim = _field(config, "head_dim") or d_model // n_head
    if head_dim * n_head != d_model:
        _refuse("head_dim", head_dim, f"the GPT's heads are hidden_size // num_attention_heads = {d_model // n_head} wide")
    # RoPE: transformers 5 keeps θ and any scaling in rope_parameters (rope_scaling is an alias of it);
    # 4.x had rope_theta and rope_scaling (None unless scaled)
    rope = {**(_field(config, "rope_scaling") or {}), **(_field(config, "rope_parameters") or {})}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        _refuse("rope_scaling", rope, f"rope_type {rope_type!r}: the book's RoPE has no scaling, only 'default'")
    partial = rope.get("partial_rotary_factor", _field(config, "partial_rotary_factor", 1.0))
    if partial != 1.0:
        _refuse("partial_rotary_factor", partial, "the book's RoPE turns the whole head")
    theta = rope.get("rope_theta", _field(config, "rope_theta", 10000.0))
    n_kv = _field(config, "num_key_value_heads") or n_head
    return dict(
        vocab_size=_field(config, "vocab_size"),
        context_length=_field(config, "max_position_embeddings"),
        n_layer=_field(config, "num_hidden_layers"),
        n_head=n_head,
        d_model=d_model,
        d_ff=_field(config, "intermediate_size"),
        activation="swiglu",
        norm="rmsnorm",
        positional="rotary",
        bias=False,
        tie_weights=bool(_field(config, "tie_word_embeddings", False)),
        layer_norm_eps=float(_field(config, "rms_norm_eps", 1e-6)),
        n_kv_head=None if n_kv == n_head else n_kv,
        rope_base=float(theta),
    )


def halves_to_pairs(weight: Tensor, n_heads: int, head_dim: int) -> Tensor:
    """Reorder each head's rows of a q or k projection ``(n_heads·head_dim, D)`` from Hugging Face's
    RoPE layout (pairs ``(i, i + d/2)``) to the book's (pairs ``(2i, 2i + 1)``)."""
    perm = torch.arange(head_dim).view(2, head_dim // 2).t().flatten()  # [0, d/2, 1, d/2 + 1, ...]
    return weight.view(n_heads, head_dim, -1)[:, perm].reshape(n_heads * head_dim, -1)


def convert_llama_state_dict(sd: Mapping[str, Tensor], cfg) -> dict[str, Tensor]:
    """Rename a ``LlamaForCausalLM`` state dict to the GPT's keys (``nn.Linear`` on both sides: no
    transposes), permuting the query and key rows for the book's RoPE. Every key must be used."""
    sd = {("model." + k if not k.startswith(("model.", "lm_head.")) else k): v for k, v in sd.items()}
    used: set[str] = set()

    def take(key: str) -> Tensor:
        if key not in sd:
            raise ValueError(f"not a Llama state dict for this config: key {key!r} is missing")
        used.add(key)
        return sd[key]

    emb = take("model.embed_tokens.weight")
    out = {"tok_emb.weight": emb, "ln_f.weight": take("model.norm.weight")}
    if cfg.tie_weights:
        head = sd.get("lm_head.weight")
        if head is not None:
            used.add("lm_head.weight")
            if not torch.equal(head, emb):
                raise ValueError("tie_word_embeddings=True but lm_head.weight differs from embed_tokens.weight")
        out["lm_head.weight"] = emb
    else:
        out["lm_head.weight"] = take("lm_head.weight")
    hd, n_kv = cfg.head_dim, cfg.n_kv_head or cfg.n_head
    for i in range(cfg.n_layer):
        h, b = f"model.layers.{i}.", f"blocks.{i}."
        out.update({
            b + "ln_1.weight": take(h + "input_layernorm.weight"),
            b + "ln_2.weight": take(h + "post_attention_layernorm.weight"),
            b + "attn.q_proj.weight": halves_to_pairs(take(h + "self_attn.q_proj.weight"), cfg.n_head, hd),
            b + "attn.k_proj.weight": halves_to_pairs(take(h + "self_attn.k_proj.weight"), n_kv, hd),
            b + "attn.v_proj.weight": take(h + "self_attn.v_proj.weight"),
            b + "attn.out_proj.weight": take(h + "self_attn.o_proj.weight"),
            # Llama: down(silu(gate(x)) * up(x)); the book: fc2(silu(fc1(x)) * gate(x))
            b + "mlp.fc1.weight": take(h + "mlp.gate_proj.weight"),
            b + "mlp.gate.weight": take(h + "mlp.up_proj.weight"),
            b + "mlp.fc2.weight": take(h + "mlp.down_proj.weight"),
        })
    left = sorted(k for k in sd if k not in used and not k.endswith("rotary_emb.inv_freq"))
    if left:
        raise ValueError(f"the Llama state dict has weights this GPT has no place for: {left[:5]}"
                         + (f" and {len(left) - 5} more" if len(left) > 5 else ""))
    dtype = emb.dtype
    return {k: v.detach().to(dtype).contiguous() for k, v in out.items()}
