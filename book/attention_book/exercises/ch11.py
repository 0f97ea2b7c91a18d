"""Auto-checks for chapter 11, *The modern Transformer*.

Each check runs the reader's function on small inputs, compares it with the package's answer and, when
they differ, recognises the usual mistakes (subtracting the mean in an RMSNorm, gating the wrong branch
of SwiGLU, forgetting that a KV cache holds keys *and* values, tiling key/value heads with ``repeat``
instead of grouping them with ``repeat_interleave``) and says which. The checks use their own random
numbers (``torch.random.fork_rng``): running one does not change the reader's random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from transformer_core.layers import RMSNorm

from ._checker import Feedback, need_number
from ._checker import run_seeded_check as _check
from ._measured import check_measured

__all__ = [
    "check_rms_norm",
    "check_swiglu",
    "check_gqa_kv_cache_bytes",
    "check_expand_kv",
    "check_steps_to_catch_up",
    "gqa_kv_cache_bytes",
]


def _close(a: Tensor, b: Tensor, atol: float = 1e-4, rtol: float = 1e-3) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True)


def _as_tensor(out: object, what: str, shape: tuple[int, ...]) -> Tensor:
    if not isinstance(out, Tensor):
        raise Feedback(f"{what} should return a torch.Tensor, got {type(out).__name__}. Did you forget `return`?")
    if tuple(out.shape) != shape:
        raise Feedback(f"{what} returned shape {tuple(out.shape)}, expected {shape}.")
    return out


def _first_match(out: Tensor, mistakes: list[tuple[Tensor, str]]) -> None:
    for candidate, message in mistakes:
        if _close(out, candidate):
            raise Feedback(message)


# ------------------------------------------------------------------------------------------ RMSNorm
def _rms_input() -> Tensor:
    """(2, 3, 8): rows with means far from 0 (so centring shows) and one nearly-zero row (so eps shows)."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, 8, generator=g) * torch.tensor([0.5, 2.0, 4.0])[:, None]
    x = x + torch.tensor([1.5, -2.0, 0.5])[:, None]
    x[1, 2] = 1e-3 * torch.randn(8, generator=g)  # mean square ~1e-6, the size of eps: eps matters here
    return x


def check_rms_norm(rms_norm: Callable[..., Tensor]) -> bool:
    """Check ``rms_norm(x, weight, eps=1e-6)`` against :class:`transformer_core.RMSNorm`."""

    def body() -> None:
        x = _rms_input()
        D = x.shape[-1]
        g = torch.Generator().manual_seed(12)
        w = 1.0 + 0.5 * torch.randn(D, generator=g)
        eps = 1e-6
        x_before = x.clone()
        out = rms_norm(x, w, eps=eps)
        if isinstance(out, Tensor) and out.shape == (2, 3, 1):
            raise Feedback(
                "you returned the root mean square itself, shape (..., 1). Divide x by it and multiply by "
                "the weight: x / sqrt(mean(x²) + eps) * weight."
            )
        out = _as_tensor(out, "rms_norm", tuple(x.shape))
        if not torch.equal(x, x_before):
            raise Feedback("rms_norm changed its input x in place; compute a new tensor instead.")
        norm = RMSNorm(D, eps=eps)
        with torch.no_grad():
            norm.weight.copy_(w)
            want = norm(x)
        if _close(out, want):
            return
        if not torch.isfinite(out).all():
            raise Feedback("your output holds NaN or inf: add eps to the mean square before the square root.")
        ms = x.pow(2).mean(-1, keepdim=True)
        centred = x - x.mean(-1, keepdim=True)
        mistakes = [
            (centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * w,
             "you subtracted the mean: that's LayerNorm (without its bias). RMSNorm does not centre x; it "
             "divides x itself by its root mean square, sqrt(mean(x²) + eps)."),
            (F.layer_norm(x, (D,), eps=eps) * w,
             "that's LayerNorm (it subtracts the mean and divides by the standard deviation). RMSNorm "
             "does not centre x: x / sqrt(mean(x²) + eps) * weight."),
            (x / torch.sqrt(x.var(-1, keepdim=True) + eps) * w,
             "you divided by the variance's square root (torch.var subtracts the mean). RMSNorm uses the "
             "mean of the squares of x itself: x.pow(2).mean(-1, keepdim=True)."),
            (x / (ms.sqrt() + eps) * w,
             "eps belongs inside the square root: x / sqrt(mean(x²) + eps), not / (sqrt(mean(x²)) + eps). "
             "The difference shows on rows whose mean square is near eps."),
            (x / (ms + eps) * w,
             "you divided by the mean square; divide by its square root, sqrt(mean(x²) + eps)."),
            (x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * w,
             "you summed the squares; take their mean (divide by D): x.pow(2).mean(-1, keepdim=True)."),
            (x / torch.sqrt(x.abs().mean(-1, keepdim=True) + eps) * w,
             "square the entries before averaging: mean(x²), not mean(|x|)."),
            (x / torch.sqrt(x.mean(-1, keepdim=True).pow(2) + eps) * w,
             "you squared the mean; RMSNorm takes the mean of the squares, x.pow(2).mean(-1, keepdim=True)."),
            (x / torch.sqrt(ms + eps),
             "the normalisation is right, but the gain is missing: multiply by weight at the end."),
            (x / torch.sqrt(x.pow(2).mean(0, keepdim=True) + eps) * w,
             "you averaged over the batch axis (dim 0). Each position is normalised on its own: dim=-1."),
            (x / torch.sqrt(x.pow(2).mean(1, keepdim=True) + eps) * w,
             "you averaged over the sequence axis (dim 1). Each position is normalised on its own: dim=-1."),
            (x / torch.sqrt(x.pow(2).mean((1, 2), keepdim=True) + eps) * w,
             "you averaged over the whole sequence at once. Each position gets its own root mean square: "
             "dim=-1 only."),
        ]
        _first_match(out, mistakes)
        err = float((out - want).abs().max())
        raise Feedback(
            f"your output differs from transformer_core.RMSNorm by up to {err:.3g}. The recipe: "
            "x / sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight."
        )

    return _check("rms_norm", body)


# ------------------------------------------------------------------------------------------- SwiGLU
def check_swiglu(swiglu: Callable[..., Tensor]) -> bool:
    """Check ``swiglu(x, w_act, w_gate, w_out)`` == ``(silu(x w_actᵀ) * (x w_gateᵀ)) w_outᵀ``."""

    def body() -> None:
        D, d_ff = 8, 12
        g = torch.Generator().manual_seed(13)
        x = torch.randn(2, 5, D, generator=g)
        w_act = torch.randn(d_ff, D, generator=g) / math.sqrt(D)
        w_gate = torch.randn(d_ff, D, generator=g) / math.sqrt(D)
        w_out = torch.randn(D, d_ff, generator=g) / math.sqrt(d_ff)
        x_before = x.clone()
        out = _as_tensor(swiglu(x, w_act, w_gate, w_out), "swiglu", tuple(x.shape))
        if not torch.equal(x, x_before):
            raise Feedback("swiglu changed its input x in place; compute new tensors instead.")
        a, b = x @ w_act.T, x @ w_gate.T  # (B, T, d_ff) each
        want = (F.silu(a) * b) @ w_out.T
        if _close(out, want):
            # and for inputs of any rank: one position alone
            one = _as_tensor(swiglu(x[0, 0], w_act, w_gate, w_out), "swiglu on a (D,) vector", (D,))
            if not _close(one, want[0, 0]):
                raise Feedback("right for (B, T, D) inputs, but a single (D,) vector gives another answer.")
            return
        mistakes = [
            ((a * F.silu(b)) @ w_out.T,
             "you gated the wrong branch: SiLU goes on x @ w_act.T, and x @ w_gate.T stays linear. "
             "(silu(x w_actᵀ) ⊙ x w_gateᵀ) w_outᵀ."),
            ((torch.sigmoid(a) * b) @ w_out.T,
             "you used sigmoid: that's the original GLU. SwiGLU uses SiLU (Swish), silu(a) = a · sigmoid(a): "
             "F.silu."),
            ((a * torch.sigmoid(b)) @ w_out.T,
             "two slips: the activation is SiLU (a · sigmoid(a), F.silu), not sigmoid, and it goes on the "
             "w_act branch, not the gate."),
            ((F.gelu(a) * b) @ w_out.T,
             "you used GELU: that's GeGLU, a sibling of SwiGLU. SwiGLU uses SiLU: F.silu."),
            ((F.relu(a) * b) @ w_out.T,
             "you used ReLU: that's ReGLU. SwiGLU uses SiLU: F.silu."),
            (F.silu(a) @ w_out.T,
             "the gate is missing: multiply silu(x @ w_act.T) elementwise by x @ w_gate.T before w_out."),
            (F.silu(a * b) @ w_out.T,
             "SiLU goes on the w_act branch alone, before the product: silu(x @ w_act.T) * (x @ w_gate.T)."),
            ((F.silu(a) + b) @ w_out.T,
             "the two branches are multiplied elementwise (the gate scales each unit), not added."),
            (F.silu((a * b) @ w_out.T),
             "the activation goes on the w_act branch, not on the output."),
            ((F.silu(a) * b) @ w_out.T + x,
             "you added x back: the residual connection belongs to the block, not to the feed-forward network."),
        ]
        _first_match(out, mistakes)
        err = float((out - want).abs().max())
        raise Feedback(
            f"your output differs from (silu(x @ w_act.T) * (x @ w_gate.T)) @ w_out.T by up to {err:.3g}. "
            "The weights are stored as nn.Linear stores them, (out_features, in_features): multiply by "
            "their transpose."
        )

    return _check("swiglu", body)


# -------------------------------------------------------------------------------- KV cache bytes
def gqa_kv_cache_bytes(
    n_layer: int,
    n_head: int,
    n_kv_head: int,
    head_dim: int,
    seq_len: int,
    batch_size: int = 1,
    bytes_per_value: int = 2,
) -> int:
    """Bytes of a grouped-query model's KV cache: keys and values, every layer, every key/value head."""
    return 2 * n_layer * batch_size * n_kv_head * seq_len * head_dim * bytes_per_value


_KV_ARGS = ("n_layer", "n_head", "n_kv_head", "head_dim", "seq_len", "batch_size", "bytes_per_value")


def check_gqa_kv_cache_bytes(reader: Callable[..., int]) -> bool:
    """Check ``gqa_kv_cache_bytes(n_layer, n_head, n_kv_head, head_dim, seq_len, batch_size=1, bytes_per_value=2)``."""

    def value(**kwargs) -> float:
        out = reader(**kwargs)
        if out is None:
            raise Feedback("gqa_kv_cache_bytes returned None: did you forget the `return`?")
        return need_number(out, "gqa_kv_cache_bytes")

    def body() -> None:
        # every factor different (and n_head != n_kv_head), so that each slip gives its own answer
        base = {"n_layer": 3, "n_head": 35, "n_kv_head": 7, "head_dim": 9, "seq_len": 11, "batch_size": 13,
                "bytes_per_value": 4}
        got = value(**base)
        want = gqa_kv_cache_bytes(**base)
        if got != want:
            group = base["n_head"] / base["n_kv_head"]
            diagnoses = [
                (want / 2, "half the right size: the cache holds the keys *and* the values, so multiply by 2."),
                (want * group,
                 "you counted n_head key/value heads. With grouped-query attention only n_kv_head heads of keys "
                 "and values are computed and cached; the query heads share them. Use n_kv_head."),
                (want * group / 2,
                 "two slips: the cache holds keys *and* values (a factor 2), and only n_kv_head heads of them "
                 "(not n_head)."),
                (want / group,
                 "you divided by the group size n_head / n_kv_head as well; n_kv_head heads are cached, each of "
                 "width head_dim: 2 · n_layer · batch · n_kv_head · seq_len · head_dim · bytes."),
                (want / base["bytes_per_value"],
                 "that is the number of values, not bytes: multiply by bytes_per_value (2 for float16 or "
                 "bfloat16, 4 for float32)."),
                (want / base["n_layer"], "every layer keeps its own keys and values: multiply by n_layer."),
                (want / base["batch_size"], "every sequence of the batch has its own cache: multiply by batch_size."),
                (want / base["head_dim"], "each head caches a vector of head_dim numbers per position: multiply by head_dim."),
                (want / base["seq_len"], "the cache holds every position: multiply by seq_len."),
            ]
            for candidate, message in diagnoses:
                if math.isclose(got, candidate, rel_tol=1e-9):
                    raise Feedback(message)
        # probe one argument at a time: the size is proportional to each (n_head aside)
        for name in _KV_ARGS:
            if name == "n_head":
                continue
            doubled = dict(base, **{name: base[name] * 2})
            ratio = value(**doubled) / got if got else math.nan
            if name == "bytes_per_value" and ratio == 1.0:
                raise Feedback(
                    "your answer ignores bytes_per_value: use the argument (2 for float16 or bfloat16, "
                    "4 for float32) rather than a fixed number of bytes."
                )
            if not math.isclose(ratio, 2.0, rel_tol=1e-3):
                raise Feedback(f"doubling {name} should double the size, but it multiplied it by {ratio:.3g}.")
        if got != want:
            raise Feedback(
                f"for {base} the cache holds {want:,} bytes, you computed {got:,.0f}: "
                "2 (keys and values) × n_layer × batch_size × n_kv_head × seq_len × head_dim × bytes_per_value."
            )
        same = value(**dict(base, n_head=24))
        if same != got:
            raise Feedback(
                "your answer changes with n_head. It shouldn't: the number of query heads does not change "
                "what is cached, only n_kv_head does."
            )
        default = value(n_layer=1, n_head=2, n_kv_head=1, head_dim=4, seq_len=3)
        if default == 2 * gqa_kv_cache_bytes(1, 2, 1, 4, 3):
            raise Feedback(
                "right when bytes_per_value is given, but its default should be 2 (16-bit numbers, how large "
                "models are usually run), not 4."
            )
        if default != gqa_kv_cache_bytes(1, 2, 1, 4, 3):
            raise Feedback(
                f"with the defaults (batch_size=1, bytes_per_value=2) expected {gqa_kv_cache_bytes(1, 2, 1, 4, 3)} "
                f"bytes, got {default:g}."
            )

    return _check("gqa_kv_cache_bytes", body)


# ------------------------------------------------------------------------------------- expand_kv
def check_expand_kv(expand_kv: Callable[[Tensor, int], Tensor]) -> bool:
    """Check ``expand_kv(kv, n_head)``: ``(B, H_kv, T, hd)`` -> ``(B, H, T, hd)``, head h gets h // (H / H_kv)."""

    def body() -> None:
        B, n_kv, T, hd, H = 2, 3, 4, 5, 6
        # every entry different, so that any misplaced head shows
        kv = torch.arange(B * n_kv * T * hd, dtype=torch.float32).view(B, n_kv, T, hd)
        kv_before = kv.clone()
        out = expand_kv(kv, H)
        if isinstance(out, Tensor) and out.shape == kv.shape:
            raise Feedback(
                f"you returned shape {tuple(out.shape)}, the input's: each of the {n_kv} key/value heads must "
                f"appear once for every query head of its group, giving {H} heads on dim 1."
            )
        if isinstance(out, Tensor) and out.shape == (B, n_kv, T * (H // n_kv), hd):
            raise Feedback("you repeated along the sequence axis (dim 2); repeat the heads, dim=1.")
        if isinstance(out, Tensor) and out.shape == (B, n_kv * H, T, hd):
            raise Feedback(
                f"you repeated every head n_head = {H} times. Each key/value head serves a group of "
                f"n_head // n_kv_head = {H // n_kv} query heads: repeat by that."
            )
        out = _as_tensor(out, "expand_kv", (B, H, T, hd))
        if not torch.equal(kv, kv_before):
            raise Feedback("expand_kv changed its input in place; return a new tensor.")
        want = kv.repeat_interleave(H // n_kv, dim=1)
        if torch.equal(out, want):
            same = expand_kv(kv, n_kv)
            if not (isinstance(same, Tensor) and torch.equal(same, kv)):
                raise Feedback("with n_head == n_kv_head (ordinary multi-head attention) return the heads unchanged.")
            mqa = expand_kv(kv[:, :1], H)
            if not (isinstance(mqa, Tensor) and torch.equal(mqa, kv[:, :1].expand(B, H, T, hd))):
                raise Feedback("with one key/value head (multi-query attention) every query head should get it.")
            return
        if torch.equal(out, kv.repeat(1, H // n_kv, 1, 1)):
            raise Feedback(
                "you used .repeat, which tiles the heads: kv0 kv1 kv2 kv0 kv1 kv2. Query heads 0 and 1 form a "
                "group and must both read kv0: kv0 kv0 kv1 kv1 kv2 kv2. Use repeat_interleave(n_head // "
                "n_kv_head, dim=1) (or kv[:, :, None].expand(...) then reshape)."
            )
        heads_out = [int(out[0, h, 0, 0].item()) for h in range(H)]
        heads_in = [int(kv[0, j, 0, 0].item()) for j in range(n_kv)]
        if sorted(set(heads_out)) == sorted(heads_in):
            got = [heads_in.index(v) for v in heads_out]
            raise Feedback(
                f"query heads 0..{H - 1} read key/value heads {got}; they should read "
                f"{[h // (H // n_kv) for h in range(H)]} (head h reads h // (n_head // n_kv_head))."
            )
        raise Feedback(
            "the values in your output are not the input's heads, repeated. Copy whole heads: "
            "kv.repeat_interleave(n_head // kv.shape[1], dim=1)."
        )

    return _check("expand_kv", body)


# --------------------------------------------------------------------------------------------------
# Exercise 5 (an experiment): how many steps are rotary positions worth?
# --------------------------------------------------------------------------------------------------

# Measured with `python scripts/experiment_ranges.py ch11`: the chapter's two-layer character GPT,
# train_briefly's AdamW (lr 3e-3, batch 16), the GPT-2 recipe evaluated every 25 steps on the
# chapter's 10 validation batches against GPT-2 + rotary after 150 steps from the same seed. Seeds
# 0, 1, 2 (initial weights and order of batches) gave 325, 275 and 275 steps. Accepted: that range
# widened by one step of the grid, 25, on each side (a reader's CPU rounds the runs differently).
STEPS_TO_CATCH_UP = (250, 350)


def check_steps_to_catch_up(steps_to_catch_up: Callable[[], object]) -> bool:
    """The reader's ``steps_to_catch_up()`` returns the step they found."""
    low, high = STEPS_TO_CATCH_UP
    return check_measured(
        "steps_to_catch_up",
        steps_to_catch_up,
        low,
        high,
        unit=" steps",
        too_low=(
            "At that step the GPT-2 recipe is still above the rotary model's loss after 150 steps "
            "(at 150 steps it is about 0.5 nats above). Do you compare the validation loss, on "
            "the chapter's 10 validation batches (generator seed 2, drawn afresh at every "
            "evaluation), with val_losses['GPT-2 + rotary'][0], and train configs['GPT-2 recipe'], "
            "the learned table, not the rotary model?"
        ),
        too_high=(
            "The GPT-2 recipe catches up sooner. Return the first multiple of 25 at which its "
            "validation loss is at or below the target, and train as train_briefly does: "
            "torch.manual_seed(0) before building the model, the batches from a generator seeded "
            "1, lr 3e-3, batch 16, the validation loss rather than a training batch's."
        ),
    )
