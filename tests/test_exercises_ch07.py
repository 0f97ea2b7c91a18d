"""The chapter 07 exercise checks: a right answer passes, each usual mistake gets its own hint."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attention_book.exercises import ch07
from transformer_core.schedules import warmup_cosine


def verdict(check, fn, capsys) -> tuple[bool, str]:
    ok = check(fn)
    return ok, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------------ warm-up + cosine
def cosine_right(step, warmup_steps, max_steps, max_lr, min_lr):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


def cosine_le(step, warmup_steps, max_steps, max_lr, min_lr):  # <= at the peak: the same values
    if step <= warmup_steps:
        return max_lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (max_steps - warmup_steps))
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


def cosine_variant(warm="right", progress="right", to_zero=False, clamp=True, linear=False):
    def f(step, warmup_steps, max_steps, max_lr, min_lr):
        lo = 0.0 if to_zero else min_lr
        if step < warmup_steps:
            if warm == "plus_one":
                return max_lr * (step + 1) / warmup_steps
            if warm == "minus_one":
                return max_lr * min(1.0, step / (warmup_steps - 1))
            if warm == "late":
                return max_lr * step / (warmup_steps + 1)
            return max_lr * step / warmup_steps
        if warm == "late" and step == warmup_steps:
            return max_lr * step / (warmup_steps + 1)
        if progress == "right":
            p = (step - warmup_steps) / (max_steps - warmup_steps)
        elif progress == "plus_one":
            p = (step - warmup_steps + 1) / (max_steps - warmup_steps)
        elif progress == "from_zero":
            p = step / max_steps
        else:  # "over_max_steps"
            p = (step - warmup_steps) / max_steps
        if clamp:
            p = min(p, 1.0)
        if linear:
            return max_lr - (max_lr - lo) * p
        return lo + 0.5 * (max_lr - lo) * (1 + math.cos(math.pi * p))

    return f


@pytest.mark.parametrize("fn", [cosine_right, cosine_le, warmup_cosine])
def test_warmup_cosine_right(fn, capsys):
    ok, out = verdict(ch07.check_warmup_cosine, fn, capsys)
    assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (cosine_variant(warm="plus_one"), "one step ahead"),
        (cosine_variant(warm="minus_one"), "one step early"),
        (cosine_variant(warm="late"), "one step late"),
        (cosine_variant(progress="plus_one"), "decay starts one step early"),
        (cosine_variant(progress="from_zero"), "counts from step 0"),
        (cosine_variant(progress="over_max_steps"), "does not finish"),
        (cosine_variant(to_zero=True), "your rate is 0"),
        (cosine_variant(clamp=False), "goes back up"),
        (cosine_variant(linear=True), "straight line"),
        (lambda s, w, m, a, b: None, "returned None"),
        (lambda s, w, m, a, b: "lr", "should return a number"),
        (lambda s, w, m, a, b: 1.0, "at step 0 the rate should be 0"),
    ],
)
def test_warmup_cosine_mistakes(fn, words, capsys):
    ok, out = verdict(ch07.check_warmup_cosine, fn, capsys)
    assert not ok and words in out, out


def test_warmup_cosine_stub(capsys):
    ok, out = verdict(ch07.check_warmup_cosine, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------ weight decay groups
def groups_right(model, weight_decay):
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if id(p) in linear and id(p) not in embeddings else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def groups_by_name(model, weight_decay):  # another right answer: by name and shape
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_matrix = p.dim() == 2 and not name.startswith(("tok_emb", "pos_emb"))
        (decay if is_matrix else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def groups_by_dim(model, weight_decay):  # nanoGPT's rule: every matrix, embeddings included
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def groups_by_module(model, weight_decay):  # finds the tied head twice
    decay, no_decay = [], []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            decay.append(m.weight)
            if m.bias is not None:
                no_decay.append(m.bias)
        elif isinstance(m, nn.Embedding):
            no_decay.append(m.weight)
        elif isinstance(m, nn.LayerNorm):
            no_decay += [m.weight, m.bias]
    no_decay.append(model.pos_emb.weight)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def groups_decay_norms(model, weight_decay):
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and not n.startswith(("tok_", "pos_"))]
    no_decay = [p for n, p in model.named_parameters() if not (n.endswith("weight") and not n.startswith(("tok_", "pos_")))]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def groups_decay_biases(model, weight_decay):
    norms = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    emb = {id(model.tok_emb.weight), id(model.pos_emb.weight)}
    decay = [p for p in model.parameters() if id(p) not in norms | emb]
    no_decay = [p for p in model.parameters() if id(p) in norms | emb]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def groups_decay_nothing(model, weight_decay):
    return [{"params": list(model.parameters()), "weight_decay": 0.0}]


def groups_forget_norms(model, weight_decay):
    groups = groups_right(model, weight_decay)
    norms = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    groups[1]["params"] = [p for p in groups[1]["params"] if id(p) not in norms]
    return groups


def groups_no_weight_decay_key(model, weight_decay):
    groups = groups_right(model, weight_decay)
    del groups[1]["weight_decay"]
    return groups


@pytest.mark.parametrize("fn", [groups_right, groups_by_name])
def test_weight_decay_groups_right(fn, capsys):
    ok, out = verdict(ch07.check_weight_decay_groups, fn, capsys)
    assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (groups_by_dim, "rare tokens shrink"),
        (groups_by_module, "appears in both groups"),
        (groups_decay_norms, "neutral value is 1"),
        (groups_decay_biases, "Biases go in the no-decay group"),
        (groups_decay_nothing, "should be decayed"),
        (groups_forget_norms, "in no group"),
        (groups_no_weight_decay_key, "explicitly"),
        (lambda model, wd: None, "returned None"),
        (lambda model, wd: {"params": list(model.parameters())}, "list of dicts"),
        (lambda model, wd: [{"params": list(model.parameters()), "weight_decay": wd}], "decay every parameter"),
    ],
)
def test_weight_decay_groups_mistakes(fn, words, capsys):
    ok, out = verdict(ch07.check_weight_decay_groups, fn, capsys)
    assert not ok and words in out, out


def test_weight_decay_groups_stub(capsys):
    ok, out = verdict(ch07.check_weight_decay_groups, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------ gradient accumulation
def lm_loss(model, x, y):
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def accumulate_right(model, micro_batches):
    total = 0.0
    for x, y in micro_batches:
        loss = lm_loss(model, x, y) / len(micro_batches)
        loss.backward()
        total += loss.item()
    return total


def accumulate_variant(divide=1, zero_inside=False, returns="mean"):
    def f(model, micro_batches):
        k = len(micro_batches)
        losses = []
        for x, y in micro_batches:
            if zero_inside:
                model.zero_grad()
            loss = lm_loss(model, x, y)
            (loss / k**divide).backward()
            losses.append(loss.item())
        return {"mean": sum(losses) / k, "sum": sum(losses), "last": losses[-1]}[returns]

    return f


def test_accumulate_right(capsys):
    ok, out = verdict(ch07.check_accumulate_gradients, accumulate_right, capsys)
    assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (accumulate_variant(divide=0), "Divide each micro-batch's loss by the number of micro-batches (4)"),
        (accumulate_variant(divide=2), "divided twice"),
        (accumulate_variant(zero_inside=True), "only the last micro-batch"),
        (accumulate_variant(divide=0, zero_inside=True), "only the last micro-batch"),
        (accumulate_variant(returns="sum"), "the *sum*"),
        (accumulate_variant(returns="last"), "return the mean loss"),
        (lambda model, mb: lm_loss(model, *mb[0]).backward(), "gradients differ"),
        (lambda model, mb: 1.0, "no .grad"),
    ],
)
def test_accumulate_mistakes(fn, words, capsys):
    ok, out = verdict(ch07.check_accumulate_gradients, fn, capsys)
    assert not ok and words in out, out


def test_accumulate_stub(capsys):
    ok, out = verdict(ch07.check_accumulate_gradients, stub, capsys)
    assert not ok and "not attempted" in out


# ------------------------------------------------------------------------------ clip by global norm
def clip_right(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.sqrt(sum((g**2).sum() for g in grads))
    factor = min(1.0, max_norm / float(total))
    for g in grads:
        g.mul_(factor)
    return total


def clip_per_parameter(parameters, max_norm):
    total = 0.0
    for p in parameters:
        n = float(p.grad.norm())
        total += n**2
        if n > max_norm:
            p.grad.mul_(max_norm / n)
    return math.sqrt(total)


def clip_value(parameters, max_norm):
    total = math.sqrt(sum(float((p.grad**2).sum()) for p in parameters))
    for p in parameters:
        p.grad.clamp_(-max_norm, max_norm)
    return total


def clip_always_scale(parameters, max_norm):
    total = math.sqrt(sum(float((p.grad**2).sum()) for p in parameters))
    for p in parameters:
        p.grad.mul_(max_norm / total)
    return total


def clip_sum_of_norms(parameters, max_norm):
    total = sum(float(p.grad.norm()) for p in parameters)
    for p in parameters:
        p.grad.mul_(min(1.0, max_norm / total))
    return total


def clip_returns_after(parameters, max_norm):
    clip_right(parameters, max_norm)
    return math.sqrt(sum(float((p.grad**2).sum()) for p in parameters))


def clip_not_in_place(parameters, max_norm):
    grads = [p.grad for p in parameters]
    total = math.sqrt(sum(float((g**2).sum()) for g in grads))
    return [g * min(1.0, max_norm / total) for g in grads]


def clip_forgets(parameters, max_norm):
    return math.sqrt(sum(float((p.grad**2).sum()) for p in parameters))


@pytest.mark.parametrize("fn", [clip_right, torch.nn.utils.clip_grad_norm_])
def test_clip_right(fn, capsys):
    ok, out = verdict(ch07.check_clip_grad_norm, fn, capsys)
    assert ok and out.startswith("✓"), out


@pytest.mark.parametrize(
    "fn, words",
    [
        (clip_per_parameter, "each parameter's gradient on its own"),
        (clip_value, "clip_grad_value_"),
        (clip_always_scale, "*up*"),
        (clip_sum_of_norms, "add up the parameters' norms"),
        (clip_returns_after, "norm after clipping"),
        (clip_not_in_place, "unchanged (you seem to return new ones"),
        (clip_forgets, "the gradients are unchanged"),
        (lambda params, m: clip_right(params, m) * 0 + 3.0, "return the global norm before clipping"),
    ],
)
def test_clip_mistakes(fn, words, capsys):
    ok, out = verdict(ch07.check_clip_grad_norm, fn, capsys)
    assert not ok and words in out, out


def test_clip_stub(capsys):
    ok, out = verdict(ch07.check_clip_grad_norm, stub, capsys)
    assert not ok and "not attempted" in out


def test_checks_leave_the_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    ch07.check_accumulate_gradients(accumulate_right)
    ch07.check_clip_grad_norm(clip_right)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------------- memorising_step (experiment)
def test_memorising_step_accepts_the_measured_range(capsys):
    for found in (24, *ch07.MEMORISING_STEP):
        ok, out = verdict(ch07.check_memorising_step, lambda found=found: found, capsys)
        assert ok is True, out
        assert out.startswith("✓ memorising_step")


@pytest.mark.parametrize(
    ("answer", "message", "hint"),
    [(10, "is too low", "still falling"), (80, "is too high", "rising for a while")],
)
def test_memorising_step_explains_a_wrong_answer(answer, message, hint, capsys):
    ok, out = verdict(ch07.check_memorising_step, lambda: answer, capsys)
    assert ok is False
    assert out.startswith("✗ memorising_step")
    assert message in out and hint in out, out
    assert "19 to 26" in out


def test_memorising_step_not_attempted(capsys):
    ok, out = verdict(ch07.check_memorising_step, stub, capsys)
    assert ok is False
    assert "not attempted yet" in out
