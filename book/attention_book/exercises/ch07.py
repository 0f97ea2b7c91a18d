"""Auto-checks for chapter 07, *Training*.

Each check runs the reader's function on small inputs, compares it with the package's answer and, when
they differ, recognises the usual mistakes and says which: a warm-up that peaks one step early or late,
a cosine that ends at 0 instead of ``min_lr``, weight decay on LayerNorm gains, biases or embeddings (or
on the tied head twice), micro-batch losses that are not divided by the number of micro-batches, a
gradient clipped parameter by parameter instead of by the global norm. The checks use their own random
numbers (``torch.random.fork_rng``): running one does not change the reader's random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer_core.gpt import GPT, GPTConfig
from transformer_core.schedules import warmup_cosine
from transformer_core.training import configure_optimizer

from ._checker import Feedback, need_number
from ._checker import run_seeded_check as _check
from ._measured import check_measured

__all__ = [
    "check_warmup_cosine",
    "check_weight_decay_groups",
    "check_accumulate_gradients",
    "check_clip_grad_norm",
    "check_memorising_step",
]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


# ------------------------------------------------------------------------------ warm-up + cosine
def _schedule_case(schedule: Callable, warmup: int, max_steps: int, max_lr: float, min_lr: float) -> None:
    """One run of the warm-up + cosine check; raises Feedback on the first wrong value."""
    args = f"warmup_steps={warmup}, max_steps={max_steps}, max_lr={max_lr:g}, min_lr={min_lr:g}"

    def lr(step: int) -> float:
        return need_number(schedule(step, warmup, max_steps, max_lr, min_lr), "your schedule")

    start, peak, end = lr(0), lr(warmup), lr(max_steps)
    if not _close(start, 0.0):
        if _close(start, max_lr / warmup):
            raise Feedback(
                f"at step 0 you give max_lr / warmup_steps = {start:.4g} ({args}): the warm-up is one "
                "step ahead. It starts at 0 and reaches max_lr exactly at step warmup_steps: "
                "max_lr * step / warmup_steps."
            )
        raise Feedback(f"at step 0 the rate should be 0 (the start of the warm-up), you give {start:.4g} ({args}).")
    if _close(lr(warmup - 1), max_lr):
        raise Feedback(
            f"you reach max_lr at step {warmup - 1}, one step before warmup_steps = {warmup} ({args}): "
            "the warm-up ends one step early. It is max_lr * step / warmup_steps, which is max_lr at "
            "step = warmup_steps and not before."
        )
    if not _close(peak, max_lr):
        if lr(warmup + 1) > peak:
            raise Feedback(
                f"at step warmup_steps = {warmup} you give {peak:.4g}, and the rate still rises after "
                f"it ({args}): the peak comes one step late. The warm-up is max_lr * step / "
                "warmup_steps, which is max_lr at step = warmup_steps."
            )
        if _close(peak, warmup_cosine(warmup + 1, warmup, max_steps, max_lr, min_lr)):
            raise Feedback(
                f"at step warmup_steps = {warmup} you give {peak:.4g}, the value of step {warmup + 1} "
                f"({args}): the decay starts one step early. Its progress is (step - warmup_steps) / "
                "(max_steps - warmup_steps), which is 0 at the peak."
            )
        from_zero = min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * warmup / max_steps))
        if _close(peak, from_zero):
            raise Feedback(
                f"at step warmup_steps = {warmup} you give {peak:.4g} instead of max_lr ({args}): the "
                "cosine's progress counts from step 0, so the decay is already under way at the peak. "
                "Count it from the end of the warm-up: (step - warmup_steps) / (max_steps - warmup_steps)."
            )
        raise Feedback(
            f"at step warmup_steps = {warmup} the rate should be max_lr = {max_lr:g} (the peak), you "
            f"give {peak:.4g} ({args})."
        )
    mid_warmup = warmup // 2
    if not _close(lr(mid_warmup), max_lr * mid_warmup / warmup):
        raise Feedback(
            f"during the warm-up the rate should grow linearly: max_lr * step / warmup_steps = "
            f"{max_lr * mid_warmup / warmup:.4g} at step {mid_warmup}, you give {lr(mid_warmup):.4g} ({args})."
        )
    if not _close(end, min_lr):
        if _close(end, 0.0):
            raise Feedback(
                f"at step max_steps = {max_steps} your rate is 0, but it should have come down to "
                f"min_lr = {min_lr:g} ({args}). The cosine runs from max_lr to min_lr: "
                "min_lr + 0.5 * (max_lr - min_lr) * (1 + cos(pi * progress))."
            )
        if end > min_lr:
            raise Feedback(
                f"at step max_steps = {max_steps} your rate is {end:.4g}, still above min_lr = "
                f"{min_lr:g} ({args}): the cosine does not finish. Count progress over the decay "
                "only: progress = (step - warmup_steps) / (max_steps - warmup_steps) goes from 0 "
                "to 1."
            )
        raise Feedback(
            f"at step max_steps = {max_steps} the rate should be min_lr = {min_lr:g}, you give "
            f"{end:.4g} ({args})."
        )
    for after in (max_steps + 1, max_steps + max_steps // 2, 2 * max_steps):
        got = lr(after)
        if not _close(got, min_lr):
            raise Feedback(
                f"after max_steps the rate should stay at min_lr = {min_lr:g}; at step {after} you "
                f"give {got:.4g} ({args}). A cosine goes back up if you let its progress pass 1."
            )
    half = warmup + (max_steps - warmup) // 2
    quarter = warmup + (max_steps - warmup) // 4
    for step in (half, quarter):
        want = warmup_cosine(step, warmup, max_steps, max_lr, min_lr)
        got = lr(step)
        if not _close(got, want):
            progress = (step - warmup) / (max_steps - warmup)
            linear = max_lr - (max_lr - min_lr) * progress
            if _close(got, linear):
                raise Feedback(
                    f"at step {step} you give {got:.4g}, on a straight line from max_lr to min_lr "
                    f"({args}). The decay should follow half a cosine: min_lr + 0.5 * (max_lr - min_lr) "
                    f"* (1 + cos(pi * progress)) = {want:.4g}."
                )
            raise Feedback(
                f"at step {step} (progress {progress:.2f} through the decay) the rate should be "
                f"{want:.4g}, you give {got:.4g} ({args})."
            )
    for step in range(0, 2 * max_steps + 1):
        want = warmup_cosine(step, warmup, max_steps, max_lr, min_lr)
        if not _close(lr(step), want):
            raise Feedback(f"at step {step} the rate should be {want:.6g}, you give {lr(step):.6g} ({args}).")


def check_warmup_cosine(schedule: Callable[[int, int, int, float, float], float]) -> bool:
    """Check ``schedule(step, warmup_steps, max_steps, max_lr, min_lr)`` against
    :func:`transformer_core.schedules.warmup_cosine` on every step of a few runs, and past their end."""

    def body() -> None:
        for warmup, max_steps, max_lr, min_lr in [(10, 50, 1e-3, 1e-4), (4, 20, 0.5, 0.05), (100, 1000, 3e-4, 0.0)]:
            _schedule_case(schedule, warmup, max_steps, max_lr, min_lr)

    return _check("warmup_cosine", body)


# ------------------------------------------------------------------------------ weight decay groups
def _kind(name: str, model: nn.Module) -> str:
    """What a parameter is, in words, for the hints."""
    module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    leaf = name.rsplit(".", 1)[-1]
    if isinstance(module, nn.Embedding) or name.startswith("pos_emb"):
        return "embedding"
    if isinstance(module, nn.LayerNorm):
        return "norm"
    if leaf == "bias":
        return "bias"
    if isinstance(module, nn.Linear):
        return "linear"
    return "other"


def check_weight_decay_groups(make_groups: Callable[[nn.Module, float], list]) -> bool:
    """Check ``make_groups(model, weight_decay)``: two AdamW parameter groups, the weight matrices of the
    ``nn.Linear`` layers decayed, everything else (biases, norms, embeddings, the tied head) not."""

    def body() -> None:
        for tie in (True, False):
            model = GPT(GPTConfig.tiny(vocab_size=30, context_length=16, tie_weights=tie))
            names = {id(p): n for n, p in model.named_parameters()}
            groups = make_groups(model, 0.1)
            if groups is None:
                raise Feedback("your function returned None: return the list of parameter groups.")
            if isinstance(groups, dict) or not isinstance(groups, Sequence) or not all(isinstance(g, dict) for g in groups):
                raise Feedback(
                    "return a list of dicts, the format torch.optim.AdamW takes: "
                    "[{'params': [...], 'weight_decay': weight_decay}, {'params': [...], 'weight_decay': 0.0}]."
                )
            decayed: list[str] = []
            not_decayed: list[str] = []
            seen: dict[int, int] = {}
            for g in groups:
                if "params" not in g:
                    raise Feedback("each group needs a 'params' entry: the list of its parameters.")
                wd = g.get("weight_decay")
                if wd is None:
                    raise Feedback(
                        "give each group its 'weight_decay' explicitly (0.0 for the group without decay): "
                        "a group without it gets AdamW's default of 0.01."
                    )
                for p in list(g["params"]):
                    if id(p) not in names:
                        raise Feedback("a group holds something that is not one of model.parameters().")
                    seen[id(p)] = seen.get(id(p), 0) + 1
                    (decayed if wd > 0 else not_decayed).append(names[id(p)])
            twice = [names[i] for i, k in seen.items() if k > 1]
            if twice:
                if tie and "tok_emb.weight" in twice:
                    raise Feedback(
                        "the tied head's weight appears in both groups: lm_head.weight *is* tok_emb.weight "
                        "(one Parameter), found once as an nn.Embedding and once as an nn.Linear weight. "
                        "Go over model.parameters() (which lists a shared Parameter once) and put it in the "
                        "no-decay group: it is an embedding. AdamW refuses a parameter in two groups."
                    )
                raise Feedback(f"these parameters appear in more than one group: {', '.join(sorted(twice))}.")
            missing = sorted(n for i, n in names.items() if i not in seen)
            if missing:
                raise Feedback(
                    f"these parameters are in no group, so the optimizer would never train them: "
                    f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}."
                )
            kinds = {n: _kind(n, model) for n in names.values()}
            if not not_decayed:
                raise Feedback(
                    "you decay every parameter. Weight decay is for the weight matrices of the nn.Linear "
                    "layers; biases, LayerNorm parameters and embeddings (the tied head too) go in a second "
                    "group with weight_decay 0.0."
                )
            wrong_decay = [n for n in decayed if kinds[n] != "linear"]
            for kind, why in [
                ("embedding", "an embedding row is decayed at every step but trained only when its token "
                              "occurs, so rare tokens shrink towards zero for no reason (the tied head is the "
                              "token embedding too). Leave embeddings and learned positions undecayed."),
                ("norm", "a LayerNorm gain's neutral value is 1, not 0: decaying it pulls every feature's "
                         "scale towards zero. Norm parameters go in the no-decay group."),
                ("bias", "a bias is one number per feature, with little to overfit; decaying it only "
                         "pulls the model's offsets to zero. Biases go in the no-decay group."),
            ]:
                hit = [n for n in wrong_decay if kinds[n] == kind]
                if hit:
                    raise Feedback(f"you decay {', '.join(hit[:3])}{' ...' if len(hit) > 3 else ''}: {why}")
            if wrong_decay:
                raise Feedback(f"you decay {', '.join(wrong_decay[:3])}; only nn.Linear weight matrices should be.")
            wrong_keep = [n for n in not_decayed if kinds[n] == "linear"]
            if wrong_keep:
                raise Feedback(
                    f"{', '.join(wrong_keep[:3])}{' ...' if len(wrong_keep) > 3 else ''} should be decayed: the "
                    "weight matrices of the nn.Linear layers are what weight decay is for."
                )
            for g in groups:
                if g["weight_decay"] > 0 and not math.isclose(g["weight_decay"], 0.1):
                    raise Feedback(f"the decayed group should use weight_decay = the argument (0.1), not {g['weight_decay']:g}.")
            reference = configure_optimizer(model, weight_decay=0.1).param_groups
            want = {names[id(p)] for p in reference[0]["params"]}
            if set(decayed) != want:  # pragma: no cover - the hints above cover every difference
                raise Feedback(f"decay exactly these parameters: {', '.join(sorted(want))}.")
            torch.optim.AdamW(groups, lr=1e-3)  # the optimizer accepts them

    return _check("weight_decay_groups", body)


# ------------------------------------------------------------------------------ gradient accumulation
def _lm_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def check_accumulate_gradients(accumulate: Callable[[nn.Module, list], object]) -> bool:
    """Check ``accumulate(model, micro_batches)``: afterwards ``p.grad`` holds the gradient of the mean
    loss over all micro-batches (as one big batch would give), and it returns that mean loss."""

    def body() -> None:
        torch.manual_seed(0)
        model = GPT(GPTConfig.tiny(vocab_size=20, context_length=16))
        x = torch.randint(20, (8, 12))
        y = torch.randint(20, (8, 12))
        model.zero_grad(set_to_none=True)
        loss_tensor = _lm_loss(model, x, y)
        loss_tensor.backward()
        big_loss = loss_tensor.item()
        want = {n: p.grad.clone() for n, p in model.named_parameters()}
        for k in (4, 2):
            model.zero_grad(set_to_none=True)
            micro = [(x[i : i + 8 // k], y[i : i + 8 // k]) for i in range(0, 8, 8 // k)]
            loss = accumulate(model, micro)
            got = {n: p.grad for n, p in model.named_parameters()}
            if any(g is None for g in got.values()):
                raise Feedback("after your function some parameters have no .grad: call loss.backward() for each micro-batch.")
            ref = want["tok_emb.weight"]
            g = got["tok_emb.weight"]
            ratio = float((g * ref).sum() / (ref * ref).sum())
            if all(torch.allclose(got[n], want[n], rtol=1e-4, atol=1e-7) for n in want):
                pass  # right: on to the returned loss
            elif math.isclose(ratio, k, rel_tol=1e-3):
                raise Feedback(
                    f"with {k} micro-batches your gradients are {k}× those of the full batch: each backward() "
                    f"adds to .grad, so the {k} gradients are summed. Divide each micro-batch's loss by the "
                    f"number of micro-batches ({k}) before backward(), and the sum becomes the mean."
                )
            elif math.isclose(ratio, 1 / k, rel_tol=1e-3):
                raise Feedback(
                    f"with {k} micro-batches your gradients are 1/{k} of the full batch's: the loss was divided "
                    "twice. Divide each micro-batch's loss by the number of micro-batches once."
                )
            else:
                model.zero_grad(set_to_none=True)
                mx, my = micro[-1]
                (_lm_loss(model, mx, my) / k).backward()
                last_scaled = {n: p.grad.clone() for n, p in model.named_parameters()}
                model.zero_grad(set_to_none=True)
                _lm_loss(model, mx, my).backward()
                last = {n: p.grad.clone() for n, p in model.named_parameters()}
                for cand in (last, last_scaled):
                    if all(torch.allclose(got[n], cand[n], rtol=1e-4, atol=1e-7) for n in want):
                        raise Feedback(
                            "only the last micro-batch's gradient is left in .grad: the earlier ones were "
                            "erased. Do not call zero_grad() between micro-batches -- accumulating is letting "
                            "backward() add them up; zero the gradients once, after the optimizer step."
                        )
                raise Feedback(
                    f"with {k} micro-batches your gradients differ from those of the same 8 rows as one batch. "
                    "For each micro-batch: loss = cross-entropy of model(x) and y, divided by the number of "
                    "micro-batches; loss.backward()."
                )
            value = need_number(loss, "your function")
            if math.isclose(value, k * big_loss, rel_tol=1e-4):
                raise Feedback(
                    f"the gradients are right, but you return {value:.4f}, the *sum* of the {k} micro-batch "
                    f"losses; return their mean ({big_loss:.4f}), the loss of the whole batch."
                )
            if not math.isclose(value, big_loss, rel_tol=1e-4):
                raise Feedback(
                    f"the gradients are right, but return the mean loss over the micro-batches, "
                    f"{big_loss:.4f}; you return {value:.4f}."
                )

    return _check("accumulate_gradients", body)


# ------------------------------------------------------------------------------ clipping
def _grads(seed: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (3,), (5, 4), (5,)]
    scales = [3.0, 0.1, 1.0, 0.5]  # one parameter's gradient dominates: per-parameter clipping shows
    return [s * torch.randn(shape, generator=g) for shape, s in zip(shapes, scales, strict=True)]


def check_clip_grad_norm(clip: Callable[[list, float], object]) -> bool:
    """Check ``clip(parameters, max_norm)`` against ``torch.nn.utils.clip_grad_norm_``: the gradients are
    scaled in place by one common factor so that their global norm is at most ``max_norm``; it returns
    the global norm from *before* clipping."""

    def body() -> None:
        for seed, max_norm in [(0, 1.0), (1, 0.5), (2, 100.0)]:
            grads = _grads(seed)
            params = [nn.Parameter(torch.zeros_like(g)) for g in grads]
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            total = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
            factor = min(1.0, max_norm / total)
            returned = clip(params, max_norm)
            got = [p.grad for p in params]
            if any(g is None for g in got):
                raise Feedback("after your function a parameter has no .grad: scale the gradients, do not remove them.")
            if all(torch.allclose(a, g, rtol=1e-5, atol=1e-8) for a, g in zip(got, grads, strict=True)) and factor < 1:
                if returned is not None and isinstance(returned, (list, tuple)) and len(returned) == len(grads):
                    raise Feedback(
                        "the gradients in p.grad are unchanged (you seem to return new ones instead). Clip "
                        "in place: p.grad.mul_(factor), so that the optimizer sees the clipped gradients."
                    )
                raise Feedback(
                    f"the global norm is {total:.3f} > max_norm = {max_norm:g}, but the gradients are unchanged. "
                    "Scale them in place: p.grad.mul_(max_norm / total_norm)."
                )
            want = [g * factor for g in grads]
            ok = all(torch.allclose(a, w, rtol=1e-4, atol=1e-7) for a, w in zip(got, want, strict=True))
            if not ok:
                per_param = [g * min(1.0, max_norm / float(torch.linalg.vector_norm(g))) for g in grads]
                if all(torch.allclose(a, w, rtol=1e-4, atol=1e-7) for a, w in zip(got, per_param, strict=True)):
                    raise Feedback(
                        "you clip each parameter's gradient on its own, so each has norm ≤ max_norm but together "
                        "they are still too large, and their relative sizes change: the update points another "
                        "way. Clip by the *global* norm, sqrt of the sum of every gradient's squared entries, and "
                        "scale all of them by the same factor max_norm / global_norm."
                    )
                if all(torch.allclose(a, g.clamp(-max_norm, max_norm), rtol=1e-4, atol=1e-7) for a, g in zip(got, grads, strict=True)):
                    raise Feedback(
                        "you clamp each entry to [-max_norm, max_norm] (that is clip_grad_value_). Clipping by "
                        "norm scales the whole gradient by max_norm / global_norm, which keeps its direction."
                    )
                scaled_up = [g * (max_norm / total) for g in grads]
                if factor == 1.0 and all(torch.allclose(a, w, rtol=1e-4, atol=1e-7) for a, w in zip(got, scaled_up, strict=True)):
                    raise Feedback(
                        f"the global norm ({total:.3f}) is already below max_norm = {max_norm:g}, and you scaled the "
                        "gradients *up* to max_norm. Clipping only shrinks: the factor is min(1, max_norm / norm)."
                    )
                sum_norms = sum(float(torch.linalg.vector_norm(g)) for g in grads)
                by_sum = [g * min(1.0, max_norm / sum_norms) for g in grads]
                if all(torch.allclose(a, w, rtol=1e-4, atol=1e-7) for a, w in zip(got, by_sum, strict=True)):
                    raise Feedback(
                        f"you add up the parameters' norms ({sum_norms:.3f}); the global norm is the norm of all "
                        f"entries together, sqrt(sum of each norm squared) = {total:.3f}."
                    )
                new_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(a) for a in got])))
                raise Feedback(
                    f"after clipping to max_norm = {max_norm:g} the gradients should be the originals times "
                    f"{factor:.4g} (global norm {min(total, max_norm):.4g}); yours have global norm {new_norm:.4g}."
                )
            value = need_number(returned, "your function")
            if factor < 1 and math.isclose(value, max_norm, rel_tol=1e-4):
                raise Feedback(
                    f"the gradients are clipped right, but you return the norm after clipping ({value:.4g}). "
                    f"Return the norm from before ({total:.4g}), as clip_grad_norm_ does: it is what a training "
                    "log should show, how large the gradient really was."
                )
            if not math.isclose(value, total, rel_tol=1e-4):
                raise Feedback(f"the gradients are clipped right; return the global norm before clipping, {total:.4g}, not {value:.4g}.")

    return _check("clip_grad_norm", body)


# --------------------------------------------------------------------------------------------------
# Exercise 5 (an experiment): when does learning turn into memorising?
# --------------------------------------------------------------------------------------------------

# Measured with `python scripts/experiment_ranges.py ch07`: section 2's loop (GPT 2 layers, width
# 64, context 64, AdamW lr 2e-3, one fixed batch of 8 windows, 80 steps, one thread), the loss on
# the 64 validation windows (generator seed 2) after every step; the step with the lowest. Seeds
# 0, 1, 2 (initial weights; the batch from generator seed 1 + seed; seed 0 is the chapter's run)
# gave 24, 24 and 21. Accepted: that range widened by 2 steps on each side (near its minimum the
# validation loss is flat, within about 0.02 nats over five steps, so the last bits of another
# CPU's arithmetic can move the lowest point by a step or two).
MEMORISING_STEP = (19, 26)


def check_memorising_step(memorising_step: Callable[[], object]) -> bool:
    """The reader's ``memorising_step()`` returns the step they found."""
    low, high = MEMORISING_STEP
    return check_measured(
        "memorising_step",
        memorising_step,
        low,
        high,
        too_low=(
            "At that step the validation loss is still falling. Do you measure it after every step "
            "(not every 5 or 10) on section 2's validation batch, and return the step of the lowest "
            "value, not the first step at which it rose once?"
        ),
        too_high=(
            "By that step the validation loss has been rising for a while. Is it measured on the "
            "validation batch (x_new, y_new), not on the training batch, whose loss falls all the "
            "way? And did you start from a fresh GPT(cfg) after torch.manual_seed(0)?"
        ),
    )
