"""The chapter 15 exercise checks: a right answer passes, each usual mistake gets its own hint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attention_book.exercises import ch15
from transformer_core.moe import load_balancing_loss, route_top_k


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize(
    "check",
    [ch15.check_top_k_gates, ch15.check_balance_loss, ch15.check_moe_parameters, ch15.check_dispatch],
)
def test_stub_is_not_attempted(check, capsys):
    ok, out = verdict(check, stub, capsys)
    assert not ok and "not attempted yet" in out


@pytest.mark.parametrize(
    "check",
    [ch15.check_top_k_gates, ch15.check_balance_loss, ch15.check_moe_parameters, ch15.check_dispatch],
)
def test_checks_leave_the_readers_random_state_alone(check, capsys):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check(stub)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------------ top-k gates
def gates_right(logits, k):
    probs = logits.softmax(dim=-1)
    top_p, index = probs.topk(k, dim=-1)
    return top_p / top_p.sum(dim=-1, keepdim=True), index


def gates_mixtral(logits, k):
    top_logits, index = logits.topk(k, dim=-1)
    return top_logits.softmax(dim=-1), index


def test_top_k_gates_right(capsys):
    for fn in (gates_right, gates_mixtral, lambda logits, k: route_top_k(logits, k, normalize=True)[1:]):
        ok, out = verdict(ch15.check_top_k_gates, fn, capsys)
        assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda logits, k: logits.softmax(-1).topk(k, dim=-1), "raw probabilities"),
        (lambda logits, k: logits.topk(k, dim=-1), "raw logits"),
        (lambda logits, k: gates_right(logits, k)[::-1], "return the gates first"),
        (lambda logits, k: tuple(t.flip(-1) for t in gates_right(logits, k)), "worst first"),
        (lambda logits, k: gates_right(-logits, k), "least"),
        (lambda logits, k: logits.softmax(0).topk(k, dim=-1), "over the tokens"),
        (lambda logits, k: gates_right(logits, 2), "use the argument k"),
        (lambda logits, k: gates_right(logits.view(-1, logits.shape[-1]), k), "(B, T, E)"),
        (lambda logits, k: gates_right(logits, k)[0], "pair of tensors"),
        (lambda logits, k: (gates_right(logits, k)[0], gates_right(logits, k)[1].float()), "integer"),
        (lambda logits, k: gates_right(logits.mul_(1.5), k), "in place"),
    ],
)
def test_top_k_gates_mistakes(fn, words, capsys):
    ok, out = verdict(ch15.check_top_k_gates, fn, capsys)
    assert not ok and words in out, out


# ----------------------------------------------------------------------------------- balance loss
def balance_right(router_probs, expert_index, n_experts):
    f = torch.bincount(expert_index.flatten(), minlength=n_experts).float() / expert_index.numel()
    return n_experts * (f * router_probs.mean(dim=0)).sum()


def test_balance_loss_right(capsys):
    for fn in (balance_right, load_balancing_loss):
        ok, out = verdict(ch15.check_balance_loss, fn, capsys)
        assert ok and out.startswith("✓"), out


def f_of(index, E, per=None):
    return torch.bincount(index.flatten(), minlength=E).float() / (index.numel() if per is None else per)


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda p, i, E: (f_of(i, E) * p.mean(0)).sum(), "factor n_experts"),
        (lambda p, i, E: E * (p.mean(0) * p.mean(0)).sum(), "probabilities twice"),
        (lambda p, i, E: E * (f_of(i, E) * f_of(i, E)).sum(), "counts twice"),
        (lambda p, i, E: E * (f_of(i, E, i.shape[0]) * p.mean(0)).sum(), "divide the counts"),
        (lambda p, i, E: E * (f_of(i, E) * p.sum(0)).sum(), "*mean* probability"),
        (lambda p, i, E: E * (f_of(i, E) * p.mean(0)), "one number"),
        (lambda p, i, E: balance_right(p, i, E).detach().item(), "cut the router off"),
        (lambda p, i, E: balance_right(p.detach(), i, E), "no gradient"),
        (lambda p, i, E: None, "forget the `return`"),
        (lambda p, i, E: E * (f_of(i, E) * p.mean(0)).sum() + 0.1, "expected"),
    ],
)
def test_balance_loss_mistakes(fn, words, capsys):
    ok, out = verdict(ch15.check_balance_loss, fn, capsys)
    assert not ok and words in out, out


# ----------------------------------------------------------------------------------- parameters
def test_moe_parameters_right(capsys):
    ok, out = verdict(ch15.check_moe_parameters, ch15.moe_parameters, capsys)
    assert ok and out.startswith("✓"), out


def expert(d, ff):
    return 2 * d * ff + ff + d


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda d, ff, E, k: (E * expert(d, ff), k * expert(d, ff) + d * E), "forgets the router"),
        (lambda d, ff, E, k: (E * expert(d, ff) + d * E + E, k * expert(d, ff) + d * E), "no bias"),
        (lambda d, ff, E, k: (E * 2 * d * ff + d * E, k * 2 * d * ff + d * E), "biases too"),
        (lambda d, ff, E, k: (E * 2 * d * ff, k * 2 * d * ff), "two things missing"),
        (lambda d, ff, E, k: (expert(d, ff) + d * E, expert(d, ff) + d * E), "every expert"),
        (lambda d, ff, E, k: (k * expert(d, ff) + d * E,) * 2, "that is the active count"),
        (lambda d, ff, E, k: (E * expert(d, ff) + d * E, k * expert(d, ff)), "the router runs for every token"),
        (lambda d, ff, E, k: (E * expert(d, ff) + d * E, expert(d, ff) + d * E), "top_k experts, not one"),
        (lambda d, ff, E, k: (E * expert(d, ff) + d * E,) * 2, "not all of them"),
        (lambda d, ff, E, k: (E * expert(d, ff) + d * E, k * 2 * d * ff + d * E), "its biases too"),
        (lambda d, ff, E, k: (E * expert(d, ff) + d * E, 2 * expert(d, ff) + d * E), "use every argument"),
        (lambda d, ff, E, k: E * expert(d, ff) + d * E, "pair (total, active)"),
        (lambda d, ff, E, k: (E * expert(d, ff) + d * E + 0.5, 1), "whole numbers"),
    ],
)
def test_moe_parameters_mistakes(fn, words, capsys):
    ok, out = verdict(ch15.check_moe_parameters, fn, capsys)
    assert not ok and words in out, out


# --------------------------------------------------------------------------------------- dispatch
def dispatch_right(x, expert_index, gates, experts):
    out = torch.zeros_like(x)
    N, k = expert_index.shape
    token_of = torch.arange(N).repeat_interleave(k)
    expert_of, gate_of = expert_index.flatten(), gates.flatten()
    for e, expert in enumerate(experts):
        mine = (expert_of == e).nonzero().flatten()
        if mine.numel():
            out.index_add_(0, token_of[mine], gate_of[mine, None] * expert(x[token_of[mine]]))
    return out


def dispatch_every_expert(x, expert_index, gates, experts):
    out = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        y = expert(x)  # all tokens
        weight = (gates * (expert_index == e)).sum(-1, keepdim=True)
        out += weight * y
    return out


def dispatch_no_gates(x, expert_index, gates, experts):
    return dispatch_right(x, expert_index, torch.ones_like(gates), experts)


def dispatch_assign(x, expert_index, gates, experts):
    out = torch.zeros_like(x)
    for slot in range(expert_index.shape[1]):
        for e, expert in enumerate(experts):
            tokens = (expert_index[:, slot] == e).nonzero().flatten()
            if tokens.numel():
                out[tokens] = gates[tokens, slot, None] * expert(x[tokens])
    return out


def dispatch_one_by_one(x, expert_index, gates, experts):
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for slot in range(expert_index.shape[1]):
            out[t] += gates[t, slot] * experts[int(expert_index[t, slot])](x[t : t + 1])[0]
    return out


def test_dispatch_right(capsys):
    for fn in (dispatch_right, dispatch_one_by_one):
        ok, out = verdict(ch15.check_dispatch, fn, capsys)
        assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (dispatch_every_expert, "every expert ran on all 9 tokens"),
        (dispatch_no_gates, "not multiplied by their gates"),
        (dispatch_assign, "don't assign"),
        (lambda x, i, g, e: x, "differs from a loop over tokens"),
        (lambda x, i, g, e: None, "forget the `return`"),
        (lambda x, i, g, e: x[:, :2], "shaped like x"),
    ],
)
def test_dispatch_mistakes(fn, words, capsys):
    ok, out = verdict(ch15.check_dispatch, fn, capsys)
    assert not ok and words in out, out


def test_dispatch_extra_expert_calls_are_noticed(capsys):
    def with_warmup(x, expert_index, gates, experts):
        for expert in experts:  # one extra call per expert on a single token
            expert(x[:1])
        return dispatch_right(x, expert_index, gates, experts)

    ok, out = verdict(ch15.check_dispatch, with_warmup, capsys)
    assert not ok and "routing asked for" in out, out


def test_reference_parameter_count_matches_the_layer():
    from transformer_core.moe import MoEFeedForward

    for args in ((12, 40, 6, 2), (8, 32, 4, 1)):
        layer = MoEFeedForward(*args)
        assert sum(p.numel() for p in layer.parameters()) == ch15.moe_parameters(*args)[0]
        assert isinstance(layer.router, nn.Linear) and layer.router.bias is None


# --------------------------------------------------------------------- capacity_needed (experiment)
def test_capacity_needed_accepts_the_measured_range(capsys):
    for found in (1.43, ch15.CAPACITY_NEEDED[0], ch15.CAPACITY_NEEDED[1]):
        ok, out = verdict(ch15.check_capacity_needed, lambda found=found: found, capsys)
        assert ok is True, out
        assert out.startswith("✓ capacity_needed")


@pytest.mark.parametrize(
    ("answer", "message", "hint"),
    [(1.0, "is too low", "every MoE layer"), (2.13, "is too high", "without it leans")],
)
def test_capacity_needed_explains_a_wrong_answer(answer, message, hint, capsys):
    ok, out = verdict(ch15.check_capacity_needed, lambda: answer, capsys)
    assert ok is False
    assert out.startswith("✗ capacity_needed")
    assert message in out and hint in out, out
    assert "1.18 to 1.64" in out


def test_capacity_needed_not_attempted(capsys):
    ok, out = verdict(ch15.check_capacity_needed, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out
