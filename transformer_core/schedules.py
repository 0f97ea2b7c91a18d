"""Learning-rate schedules: linear warm-up + cosine decay (GPT-style) and the paper's "Noam" schedule.

Both are plain functions of the step number, so the same function can

* be plotted (``[warmup_cosine(s, 100, 1000, 3e-4, 3e-5) for s in range(1001)]``),
* drive :class:`~transformer_core.training.Trainer` (which sets the learning rate of update ``k`` to
  ``schedule(k)``, counting updates from 1), or
* become a factor for :class:`torch.optim.lr_scheduler.LambdaLR` (whose factors multiply the
  optimizer's base learning rate)::

      opt = torch.optim.AdamW(model.parameters(), lr=1.0)        # base lr 1: the factor *is* the lr
      sched = LambdaLR(opt, lambda s: noam_schedule(s, d_model=512, warmup_steps=4000))

Why warm up at all: at step 1 Adam's second-moment estimate comes from a single gradient, so its
steps are large and noisy; a small learning rate for the first few hundred updates keeps them from
throwing the freshly initialised weights somewhere they cannot recover from (post-norm models, as in
the 2017 paper, need this most).
"""

from __future__ import annotations

import math

__all__ = ["warmup_cosine", "warmup_constant", "noam_schedule"]


def _check_step(step: int) -> None:
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, max_lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up from 0 to ``max_lr`` over ``warmup_steps``, then a cosine down to ``min_lr``.

    ::

        step:   0 ........ warmup_steps ................ max_steps ..........
        lr:     0  (line)  max_lr        (half a cosine)  min_lr   (stays)

    ``warmup_cosine(warmup_steps, ...) == max_lr`` (the peak) and
    ``warmup_cosine(max_steps, ...) == min_lr``; beyond ``max_steps`` the rate stays at ``min_lr``.
    With ``max_lr=1.0, min_lr=r`` it is a :class:`~torch.optim.lr_scheduler.LambdaLR` factor that
    ends at ``r`` times the base rate.
    """
    _check_step(step)
    if warmup_steps < 0 or max_steps < warmup_steps:
        raise ValueError(f"need 0 <= warmup_steps <= max_steps, got {warmup_steps} and {max_steps}")
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= max_steps:
        return min_lr if max_steps > warmup_steps else max_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)  # 0 -> 1 over the decay
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def warmup_constant(step: int, warmup_steps: int, max_lr: float) -> float:
    """Linear warm-up to ``max_lr``, then constant (handy for short runs and comparisons)."""
    _check_step(step)
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    return max_lr * step / warmup_steps if step < warmup_steps else max_lr


def noam_schedule(step: int, d_model: int, warmup_steps: int = 4000, factor: float = 1.0) -> float:
    """The learning rate of "Attention Is All You Need" (section 5.3):

        lrate = d_model^-0.5 · min(step^-0.5, step · warmup_steps^-1.5)

    It rises linearly for ``warmup_steps`` steps, peaks at ``d_model^-0.5 · warmup_steps^-0.5``
    (about 7e-4 for the base model: d_model 512, 4000 warm-up steps), then decays as 1/√step.
    ``factor`` scales the whole curve (the Annotated Transformer uses it to tune small models).
    At ``step == 0`` the formula gives 0 (the paper counts steps from 1).
    """
    _check_step(step)
    if d_model < 1 or warmup_steps < 1:
        raise ValueError(f"need d_model >= 1 and warmup_steps >= 1, got {d_model} and {warmup_steps}")
    if step == 0:
        return 0.0
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)
