"""Auto-checks for chapter 15, *Mixture of experts*.

Each check runs the reader's function on small inputs, compares it with the package's answer
(:mod:`transformer_core.moe`) and, when they differ, recognises the usual mistakes (gates that are not
renormalised, a balance loss without its factor ``n_experts`` or with the probabilities where the
counts belong, a parameter count that forgets the router or the biases, a dispatch that runs every
expert on every token) and says which. The checks use their own random numbers
(``torch.random.fork_rng``): running one does not change the reader's random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from transformer_core.layers import FeedForward
from transformer_core.moe import load_balancing_loss, route_top_k

from ._checker import Feedback
from ._checker import run_seeded_check as _check
from ._measured import check_measured

__all__ = [
    "check_top_k_gates",
    "check_balance_loss",
    "check_moe_parameters",
    "check_dispatch",
    "check_capacity_needed",
    "moe_parameters",
]


def _close(a: Tensor, b: Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol, rtol=rtol)


# ------------------------------------------------------------------------------------ top-k gates
def _pair(out: object, what: str) -> tuple[Tensor, Tensor]:
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)):
        raise Feedback(f"{what} should return a pair of tensors (gates, expert_index), got {type(out).__name__}.")
    return out  # type: ignore[return-value]


def check_top_k_gates(top_k_gates: Callable[[Tensor, int], tuple[Tensor, Tensor]]) -> bool:
    """Check ``top_k_gates(logits, k) -> (gates, expert_index)``, renormalised, best expert first."""

    def body() -> None:
        g = torch.Generator().manual_seed(15)
        logits = torch.randn(6, 5, generator=g) * 2  # (N, E)
        k = 2
        before = logits.clone()
        gates, index = _pair(top_k_gates(logits, k), "top_k_gates")
        if not torch.equal(logits, before):
            raise Feedback("top_k_gates changed the logits in place; compute new tensors instead.")
        if index.is_floating_point() and gates.dtype in (torch.int64, torch.int32):
            raise Feedback("you returned (expert_index, gates); return the gates first: (gates, expert_index).")
        if gates.shape != (6, k) or index.shape != (6, k):
            raise Feedback(
                f"for logits of shape (6, 5) and k={k} both outputs should have shape (6, {k}), one entry per "
                f"token and chosen expert; got {tuple(gates.shape)} and {tuple(index.shape)}. Take the top k "
                "along the last axis (the experts)."
            )
        if index.is_floating_point():
            raise Feedback("expert_index should hold integer expert numbers (the indices topk returns), not floats.")
        probs, want_gates, want_index = route_top_k(logits, k, normalize=True)
        if not torch.equal(index.long(), want_index):
            if torch.equal(index.long(), want_index.flip(-1)):
                raise Feedback("you listed the chosen experts worst first; list the best expert first (topk does).")
            if torch.equal(index.long(), (-logits).topk(k, dim=-1).indices):
                raise Feedback("you chose the k *least* likely experts; the router picks the k largest logits.")
            if torch.equal(index.long(), logits.softmax(dim=0).topk(k, dim=-1).indices):
                raise Feedback("your softmax went over the tokens (dim 0); each token's softmax is over the experts, dim=-1.")
            raise Feedback(
                f"token 0 should go to experts {want_index[0].tolist()} (its {k} largest logits), yours went to "
                f"{index[0].tolist()}."
            )
        top_p = torch.gather(probs, -1, want_index)
        mistakes = [
            (top_p, "your gates are the raw probabilities of the chosen experts; renormalise them so that each "
                    "token's k gates sum to 1: divide by their sum (GShard, Mixtral)."),
            (torch.gather(logits, -1, want_index), "your gates are the raw logits; turn them into weights that sum "
                                                    "to 1: a softmax over the k chosen logits."),
            (torch.gather(logits.softmax(dim=0), -1, want_index),
             "your softmax went over the tokens (dim 0); each token's softmax is over the experts, dim=-1."),
        ]
        if not _close(gates, want_gates):
            for candidate, message in mistakes:
                if _close(gates, candidate):
                    raise Feedback(message)
            raise Feedback(
                f"the experts are right, the gates are not: token 0 should weigh them "
                f"{[round(v, 4) for v in want_gates[0].tolist()]}, yours {[round(v, 4) for v in gates[0].tolist()]}."
            )
        # k = 1, and any leading shape
        gates1, _ = _pair(top_k_gates(logits, 1), "top_k_gates with k=1")
        if not _close(gates1, torch.ones(6, 1)):
            raise Feedback("with k=1 a renormalised gate is exactly 1; use the argument k, not a fixed number.")
        logits3 = torch.randn(2, 3, 4, generator=g)
        gates3, index3 = _pair(top_k_gates(logits3, 3), "top_k_gates on (B, T, E) logits")
        _, want3, want_i3 = route_top_k(logits3, 3, normalize=True)
        if gates3.shape != (2, 3, 3) or not (_close(gates3, want3) and torch.equal(index3.long(), want_i3)):
            raise Feedback("right for (N, E) logits, but not for (B, T, E): work on the last axis (dim=-1) only.")

    return _check("top_k_gates", body)


# ----------------------------------------------------------------------------------- balance loss
def check_balance_loss(balance_loss: Callable[[Tensor, Tensor, int], Tensor]) -> bool:
    """Check ``balance_loss(router_probs, expert_index, n_experts)`` against the Switch Transformer's loss."""

    def value(probs: Tensor, index: Tensor, E: int) -> Tensor:
        out = balance_loss(probs, index, E)
        if out is None:
            raise Feedback("balance_loss returned None: did you forget the `return`?")
        if not isinstance(out, Tensor):
            raise Feedback(
                f"return a tensor (a scalar with a gradient), got {type(out).__name__}; .item() or float() "
                "would cut the router off from the loss."
            )
        if out.numel() != 1:
            raise Feedback(f"return one number (a scalar tensor), got shape {tuple(out.shape)}: sum over the experts.")
        return out.reshape(())

    def body() -> None:
        g = torch.Generator().manual_seed(16)
        E, N, k = 4, 10, 2
        logits = (torch.randn(N, E, generator=g) * 1.5).requires_grad_()
        probs = logits.softmax(-1)
        index = probs.topk(k, dim=-1).indices  # (N, k)
        got = value(probs, index, E)
        want = load_balancing_loss(probs, index, E)
        f = torch.bincount(index.flatten(), minlength=E).float() / index.numel()
        P = probs.mean(0)
        if not _close(got, want):
            mistakes = [
                (want / E, "you left out the factor n_experts: the loss is n_experts · Σ f_i · P_i, so that "
                           "perfectly even routing gives 1."),
                (E * (P * P).sum(), "you used the probabilities twice (Σ P_i · P_i). f_i is a count: the fraction "
                                    "of assignments sent to expert i (bincount of expert_index)."),
                (E * (f * f).sum(), "you used the counts twice (Σ f_i · f_i): that has no gradient. The second "
                                    "factor is P_i, the mean router probability of expert i over the tokens."),
                (want * k, f"your f_i sums to k = {k}: divide the counts by the number of assignments, "
                           "N · k (expert_index.numel()), not by N."),
                (E * (f * probs.sum(0)).sum(), "P_i is the *mean* probability over the tokens, not the sum: "
                                               "router_probs.mean(dim=0)."),
            ]
            for candidate, message in mistakes:
                if _close(got, candidate):
                    raise Feedback(message)
            raise Feedback(
                f"expected {float(want.detach()):.4f}, got {float(got.detach()):.4f}. The recipe: f = bincount(expert_index) "
                f"/ expert_index.numel(), P = router_probs.mean(dim=0), loss = n_experts · (f · P).sum()."
            )
        if not got.requires_grad:
            raise Feedback(
                "the value is right but it has no gradient: P_i must come from router_probs (not detached, "
                "not via .item()), or the router cannot learn to balance."
            )
        (grad,) = torch.autograd.grad(got, logits, retain_graph=True)
        (want_grad,) = torch.autograd.grad(want, logits, retain_graph=True)
        if not _close(grad, want_grad):
            raise Feedback("the value is right but its gradient is not: f_i should be a plain count, P_i the mean "
                           "of router_probs.")
        # even routing gives 1, collapse gives about n_experts
        even = torch.full((4, 4), 0.25)
        if not math.isclose(float(value(even, torch.arange(4)[:, None], 4).detach()), 1.0, rel_tol=1e-5):
            raise Feedback("perfectly even routing (4 tokens, each to its own expert, all probabilities 1/4) should give 1.")
        sure = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).repeat(5, 1)
        if not math.isclose(float(value(sure, torch.zeros(5, 1, dtype=torch.long), 4).detach()), 4 * 0.97, rel_tol=1e-5):
            raise Feedback("every token on expert 0 with probability 0.97 should give 4 · 0.97 = 3.88.")

    return _check("balance_loss", body)


# ----------------------------------------------------------------------------------- parameters
def moe_parameters(d_model: int, d_ff: int, n_experts: int, top_k: int) -> tuple[int, int]:
    """(total, active) parameters of one MoE layer: GELU experts with biases, a router without bias."""
    expert = d_model * d_ff + d_ff + d_ff * d_model + d_model  # fc1 (weight, bias), fc2 (weight, bias)
    router = d_model * n_experts
    return n_experts * expert + router, top_k * expert + router


def check_moe_parameters(reader: Callable[[int, int, int, int], tuple[int, int]]) -> bool:
    """Check ``moe_parameters(d_model, d_ff, n_experts, top_k) -> (total, active)``."""

    def counts(*args: int) -> tuple[int, int]:
        out = reader(*args)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise Feedback(f"return a pair (total, active), got {type(out).__name__}.")
        vals = []
        for v in out:
            if isinstance(v, Tensor) and v.numel() == 1:
                v = v.item()
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
                raise Feedback(f"parameter counts are whole numbers, got {v!r}.")
            vals.append(int(v))
        return vals[0], vals[1]

    def body() -> None:
        args = (12, 40, 6, 2)  # d_model, d_ff, n_experts, top_k: all different
        total, active = counts(*args)
        layer_total = sum(p.numel() for p in _reference_layer(*args).parameters())
        want_total, want_active = moe_parameters(*args)
        assert layer_total == want_total
        d, ff, E, k = args
        expert = 2 * d * ff + ff + d
        router = d * E
        if total != want_total:
            diagnoses = [
                (want_total - router, "the total forgets the router: a d_model × n_experts matrix (no bias)."),
                (want_total + E, "the router has no bias in this layer (nn.Linear(d_model, n_experts, bias=False))."),
                (want_total - E * (ff + d), "each expert has biases too: d_ff in fc1 and d_model in fc2."),
                (want_total - E * (ff + d) - router, "two things missing: the experts' biases and the router."),
                (expert + router, "the total holds every expert: n_experts copies of the feed-forward network."),
                (k * expert + router, "that is the active count; the total holds all n_experts experts."),
            ]
            for candidate, message in diagnoses:
                if total == candidate:
                    raise Feedback(message)
            raise Feedback(f"for {args} the layer holds {want_total:,} parameters, you counted {total:,}.")
        if active != want_active:
            diagnoses = [
                (want_active - router, "the router runs for every token: count it among the active parameters."),
                (expert + router, "a token uses top_k experts, not one: k · expert + router."),
                (want_total, "active parameters are those one token uses: top_k experts and the router, not all of them."),
                (k * (2 * d * ff) + router, "each active expert brings its biases too (d_ff + d_model)."),
            ]
            for candidate, message in diagnoses:
                if active == candidate:
                    raise Feedback(message)
            raise Feedback(f"for {args} one token uses {want_active:,} parameters, you counted {active:,}.")
        for other in ((8, 32, 4, 1), (16, 64, 8, 8)):
            if counts(*other) != moe_parameters(*other):
                raise Feedback(f"right for {args} but not for {other}: use every argument.")

    return _check("moe_parameters", body)


def _reference_layer(d_model: int, d_ff: int, n_experts: int, top_k: int) -> nn.Module:
    from transformer_core.moe import MoEFeedForward

    return MoEFeedForward(d_model, d_ff, n_experts, top_k)


# --------------------------------------------------------------------------------------- dispatch
class _CountingExpert(nn.Module):
    """A FeedForward that counts the rows (tokens) it is run on."""

    def __init__(self, ffn: FeedForward) -> None:
        super().__init__()
        self.ffn = ffn
        self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += x.reshape(-1, x.shape[-1]).shape[0]
        return self.ffn(x)


def check_dispatch(dispatch: Callable[[Tensor, Tensor, Tensor, nn.ModuleList], Tensor]) -> bool:
    """Check ``dispatch(x, expert_index, gates, experts)``: ``(N, D)`` tokens, ``(N, k)`` routes -> ``(N, D)``."""

    def run(x: Tensor, index: Tensor, gates: Tensor, E: int) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """The reader's output, the loop's output, the loop's without gates, and the rows each expert saw."""
        torch.manual_seed(1)
        ffns = [FeedForward(x.shape[-1], 12, "gelu") for _ in range(E)]
        experts = nn.ModuleList(_CountingExpert(f) for f in ffns)
        with torch.no_grad():
            out = dispatch(x, index, gates, experts)
            want, ungated = torch.zeros_like(x), torch.zeros_like(x)
            for t in range(x.shape[0]):
                for slot in range(index.shape[1]):
                    y = ffns[int(index[t, slot])](x[t])
                    want[t] += gates[t, slot] * y
                    ungated[t] += y
        if out is None:
            raise Feedback("dispatch returned None: did you forget the `return`?")
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise Feedback(f"dispatch should return a tensor shaped like x, {tuple(x.shape)}; got {got}.")
        return out, want, ungated, [e.rows for e in experts]

    def body() -> None:
        g = torch.Generator().manual_seed(17)
        N, D, E = 9, 6, 4
        x = torch.randn(N, D, generator=g)
        # top-1 first: expert 3 gets no token at all
        index1 = torch.tensor([[0], [1], [0], [2], [1], [0], [2], [1], [0]])
        gates1 = torch.rand(N, 1, generator=g) * 0.5 + 0.5
        out, want, ungated, rows = run(x, index1, gates1, E)
        counts = torch.bincount(index1.flatten(), minlength=E).tolist()
        if not _close(out, want):
            if _close(out, ungated):
                raise Feedback("the experts' outputs are not multiplied by their gates: y = gate · expert(x).")
            raise Feedback("for top-1 routing the output differs from a loop over tokens, in which token t gets "
                           "gates[t, 0] · experts[expert_index[t, 0]](x[t]).")
        if rows != counts:
            if all(r == N for r in rows):
                raise Feedback(
                    "right output, but every expert ran on all 9 tokens: that is the dense cost times n_experts. "
                    "Gather each expert's own tokens (x[token_ids]) and run it on those only."
                )
            raise Feedback(f"right output, but the experts ran on {rows} tokens; routing asked for {counts}.")
        # top-2: a token's two contributions must add up, not overwrite each other
        index2 = torch.stack([index1[:, 0], (index1[:, 0] + 1) % E], dim=1)  # (N, 2)
        gates2 = torch.rand(N, 2, generator=g)
        gates2 = gates2 / gates2.sum(-1, keepdim=True)
        out, want, _, rows = run(x, index2, gates2, E)
        if not _close(out, want):
            raise Feedback(
                "right for top-1, wrong for top-2: a token sent to two experts gets the sum of both gated "
                "outputs. Add into the output (out.index_add_(0, tokens, y), or out[tokens] += y), don't "
                "assign (out[tokens] = y keeps only one of them)."
            )
        if rows != torch.bincount(index2.flatten(), minlength=E).tolist():
            raise Feedback(f"right output, but the experts ran on {rows} tokens; routing asked for "
                           f"{torch.bincount(index2.flatten(), minlength=E).tolist()}.")

    return _check("dispatch", body)


# --------------------------------------------------------------------------------------------------
# Exercise 5 (an experiment): how much capacity does the trained router need?
# --------------------------------------------------------------------------------------------------

# Measured with `python scripts/experiment_ranges.py ch15`: the chapter's MoE GPT (word tokens,
# 2 layers, 8 experts of width 64, top-2, balance loss 0.01) trained as the chapter trains it (200
# steps), then run on its 64 validation sequences (generator seed 5) with the capacity factor of
# both layers raised from 1.00 in steps of 0.01 until neither drops an assignment. Seeds 0, 1, 2
# (initial weights and training batches) gave 1.43, 1.59 and 1.23. Accepted: that range widened by
# 0.05 on each side (a reader's CPU trains a slightly different router). The models trained
# without the balance loss need 1.71, 2.13 and 1.83.
CAPACITY_NEEDED = (1.18, 1.64)


def check_capacity_needed(capacity_needed: Callable[[], object]) -> bool:
    """The reader's ``capacity_needed()`` returns the capacity factor they found."""
    low, high = CAPACITY_NEEDED
    return check_measured(
        "capacity_needed",
        capacity_needed,
        low,
        high,
        too_low=(
            "At that factor the busiest expert of the trained model still overflows. Did you set "
            "the factor on every MoE layer (model.moe_layers()), count the drops of both layers "
            "in model.routing(), and run the whole x_val (64 sequences of 32 tokens) after each "
            "change?"
        ),
        too_high=(
            "A smaller factor already drops nothing. Step the factor by 0.01, not coarser, and use "
            "runs['MoE', 0], the model trained with the balance loss: the model without it leans "
            "harder on its busiest expert and needs more."
        ),
    )
