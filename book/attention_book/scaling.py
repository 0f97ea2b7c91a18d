"""Scaling laws fitted the way Chinchilla fitted them (Hoffmann et al. 2022, approach 3).

The law: the loss of a model with ``N`` parameters trained on ``D`` tokens is

    L(N, D) = E + A / N**alpha + B / D**beta

``E`` is the loss no model size and no amount of data can remove: the entropy of the text itself,
if the model family can express the text's distribution at all. On the story corpus that entropy
is known (:mod:`attention_book.floor`), so here a fitted ``E`` can be checked against the truth.

How it is fitted (as in the paper): the five numbers are written as ``E = exp(e)``, ``A = exp(a)``,
``B = exp(b)``, so that ``log L = logsumexp(a - alpha log N, b - beta log D, e)``; the objective is
the Huber loss (``delta = 1e-3``: nearly the absolute error, so one odd run cannot pull the fit) of
``log L`` predicted against measured, summed over runs; L-BFGS minimises it. The objective has
several local minima, so the fit starts from many points: every point of a grid of starting values
is scored at once, and L-BFGS runs from the best few.

What a reader should notice: the law is fitted to *finite* runs and extrapolated to ``N, D -> inf``;
``E`` is the least constrained of the five numbers, so it comes with an interval
(:func:`bootstrap_chinchilla`), and the interval says how far the grid lets us see.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from transformer_core import GPTConfig
from transformer_core.training import TrainConfig

__all__ = ["RECIPE", "ChinchillaFit", "PowerLawFit", "bootstrap_chinchilla", "fit_chinchilla", "fit_power_law",
           "grid_model_config", "grid_train_config", "read_grid"]

# The grid's recipe: scripts/scaling_grid.py trains its GPTs with it, chapter 12a one more. Chapter 07's
# recipe otherwise: the byte-level BPE saturated at 803 tokens, AdamW at lr 1e-2, clipping at 1.
RECIPE = dict(bpe_vocab_size=803, n_layer=2, head_width=16, context_length=64, batch_size=32, lr=1e-2)


def grid_model_config(d_model: int, vocab_size: int = RECIPE["bpe_vocab_size"]) -> GPTConfig:
    """The grid's GPT of width ``d_model``: 2 layers, heads of width 16, context 64, no dropout."""
    if not isinstance(d_model, int) or d_model < RECIPE["head_width"] or d_model % RECIPE["head_width"]:
        raise ValueError(f"d_model must be a positive multiple of the head width {RECIPE['head_width']}, got {d_model!r}")
    return GPTConfig(vocab_size=vocab_size, context_length=RECIPE["context_length"], n_layer=RECIPE["n_layer"],
                     n_head=d_model // RECIPE["head_width"], d_model=d_model, dropout=0.0)


def grid_train_config(updates: int, seed: int) -> TrainConfig:
    """The grid's run of ``updates`` updates: warm-up for a tenth of it (at most 100 updates), then
    cosine decay to lr/10 at the run's own end (as Chinchilla's runs: a schedule per budget)."""
    if not isinstance(updates, int) or updates < 1:
        raise ValueError(f"updates must be a positive int, got {updates!r}")
    return TrainConfig(max_steps=updates, batch_size=RECIPE["batch_size"], lr=RECIPE["lr"],
                       warmup_steps=min(100, updates // 10), grad_clip=1.0, eval_interval=0,
                       log_interval=max(1, updates), seed=seed, progress=False)

_INT_FIELDS = ("d_model", "n_layer", "n_params_non_embedding", "n_params_total", "updates", "tokens_seen",
               "chars_seen", "seed")


def read_grid(path: str | Path) -> list[dict]:
    """The rows of a scaling-grid table (``scripts/scaling_grid.py`` writes it): counts as ints, the rest floats."""
    with Path(path).open(newline="") as f:
        return [{k: int(v) if k in _INT_FIELDS else float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@dataclass(frozen=True)
class ChinchillaFit:
    """``L(N, D) = E + A / N**alpha + B / D**beta``, fitted; ``objective`` is the Huber loss it reached."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float
    objective: float

    def predict(self, N, D):
        """The law's loss at ``N`` parameters and ``D`` tokens (floats or tensors)."""
        return self.E + self.A / N**self.alpha + self.B / D**self.beta

    def compute_optimal(self, C: float, flops_per_param_token: float = 6.0) -> tuple[float, float]:
        """``(N, D)`` that minimise the law under the budget ``C = 6 N D`` FLOPs.

        Setting the derivative along ``D = C / (6N)`` to zero gives ``alpha A / N**alpha = beta B / D**beta``,
        hence ``N_opt = G (C/6)**(beta / (alpha + beta))`` with ``G = (alpha A / (beta B))**(1 / (alpha + beta))``.
        """
        if not C > 0:
            raise ValueError(f"the compute budget C must be > 0 FLOPs, got {C!r}")
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        n = g * (C / flops_per_param_token) ** (self.beta / (self.alpha + self.beta))
        return n, C / (flops_per_param_token * n)

    def __str__(self) -> str:
        return (f"L(N, D) = {self.E:.4g} + {self.A:.4g} / N^{self.alpha:.3g} + {self.B:.4g} / D^{self.beta:.3g}")


@dataclass(frozen=True)
class PowerLawFit:
    """``L(N) = E + A / N**alpha`` at one fixed ``D``; its ``E`` is the loss of an unlimited model on that data."""

    E: float
    A: float
    alpha: float
    objective: float

    def predict(self, N):
        return self.E + self.A / N**self.alpha

    def __str__(self) -> str:
        return f"L(N) = {self.E:.4g} + {self.A:.4g} / N^{self.alpha:.3g}"


def _as_log(values, name: str) -> torch.Tensor:
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    if x.numel() == 0 or not bool((x > 0).all()) or not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite positive numbers, got {values!r}")
    return x.log()


class _LogSumExpLaw:
    """``log L = logsumexp(e, c_1 - x_1 log X_1, ..., c_m - x_m log X_m)`` and the Huber loss of its misfit.

    ``theta`` ``(S, 1 + 2m)`` holds ``S`` parameter vectors ``(e, c_1..c_m, x_1..x_m)``; the value and
    its gradient are computed together, in closed form (a fit evaluates them hundreds of times, and
    autograd's bookkeeping would cost more than the arithmetic).
    """

    def __init__(self, log_x: torch.Tensor, log_l: torch.Tensor, delta: float, weight: torch.Tensor | None = None) -> None:
        # (m, runs) and (runs,) for one data set; (S, 1, m, runs) and (S, 1, runs) for one per row;
        # weight (like log_l): how often each run counts
        self.log_x, self.log_l, self.delta = log_x, log_l, delta
        self.weight = torch.ones_like(log_l) if weight is None else weight.to(log_l.dtype)

    def rows(self, idx: torch.Tensor) -> _LogSumExpLaw:
        """The objective of the parameter rows ``idx`` alone: the same data, or, with one data set
        per row, those rows' data sets."""
        if self.log_l.dim() == 1:
            return self
        return _LogSumExpLaw(self.log_x[idx], self.log_l[idx], self.delta, self.weight[idx])

    def __call__(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``theta`` ``(..., P)`` -> value ``(...)``, gradient ``(..., P)``."""
        m, runs = self.log_x.shape[-2:]
        e, c, x = theta[..., :1], theta[..., 1 : 1 + m], theta[..., 1 + m :]
        lead = torch.broadcast_shapes(theta.shape[:-1], self.log_l.shape[:-1])
        terms = torch.cat([e[..., None].expand(*lead, 1, runs),
                           (c[..., None] - x[..., None] * self.log_x).expand(*lead, m, runs)], dim=-2)  # (..., 1 + m, runs)
        pred = torch.logsumexp(terms, dim=-2)  # (..., runs): log of the predicted loss
        r = pred - self.log_l
        huber = torch.where(r.abs() <= self.delta, 0.5 * r**2, self.delta * (r.abs() - 0.5 * self.delta))
        value = (self.weight * huber).sum(-1)
        dr = self.weight * r.clamp(-self.delta, self.delta)  # d value / d pred
        gw = torch.exp(terms - pred[..., None, :]) * dr[..., None, :]  # d value / d term
        grad = torch.cat([gw[..., 0, :].sum(-1, keepdim=True), gw[..., 1:, :].sum(-1),
                          -(gw[..., 1:, :] * self.log_x).sum(-1)], -1)
        return value, grad


def _bfgs(objective: _LogSumExpLaw, theta: torch.Tensor, max_iter: int = 300, tol: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``objective`` from every row of ``theta`` ``(S, P)`` at once: BFGS, batched.

    Each row keeps its own inverse-Hessian estimate; the line search tries the step sizes
    16, 8, ..., 2**-30 along each row's direction in one evaluation and keeps the longest that
    lowers the value enough (Armijo's rule). A row stops when no step lowers it. L-BFGS, which
    Hoffmann et al. used, is this method with a limited memory; with five numbers the full
    ``(P, P)`` matrix costs nothing, and batching lets many fits (starts, bootstrap resamples) run
    as one. Returns the end points and their values.
    """
    S, P = theta.shape
    theta = theta.clone()  # updated in place, row by row
    eye = torch.eye(P, dtype=theta.dtype)
    H = eye.repeat(S, 1, 1)
    f, g = (t[:, 0].clone() for t in objective(theta[:, None]))  # the objective sees (S, K, P): K = 1 here
    steps = 2.0 ** -torch.arange(-4, 31, dtype=theta.dtype)  # (K,)
    active = torch.isfinite(f)
    for _ in range(max_iter):
        idx = active.nonzero()[:, 0]  # only the rows still going: a converged fit costs nothing more
        if idx.numel() == 0:
            break
        obj = objective.rows(idx)
        th, fa, ga, Ha = theta[idx], f[idx], g[idx], H[idx]
        p = -(Ha @ ga[:, :, None])[:, :, 0]
        slope = (ga * p).sum(-1)
        uphill = slope >= 0  # a stale estimate: start again from steepest descent
        if bool(uphill.any()):
            Ha[uphill] = eye
            p[uphill] = -ga[uphill]
            slope = (ga * p).sum(-1)
        cand = th[:, None] + steps[None, :, None] * p[:, None]  # (S_active, K, P)
        fc, gc = obj(cand)
        ok = torch.isfinite(fc) & (fc <= fa[:, None] + 1e-4 * steps * slope[:, None])
        moved = ok.any(-1)
        if not bool(moved.any()):
            break
        k = ok.int().argmax(-1)  # the longest step that is good enough
        rows = torch.arange(len(idx))
        new_theta, new_f, new_g = cand[rows, k], fc[rows, k], gc[rows, k]
        s_, y = new_theta - th, new_g - ga
        sy = (s_ * y).sum(-1)
        upd = moved & (sy > 1e-20)
        rho = torch.where(upd, 1 / sy.clamp_min(1e-20), 0.0)[:, None, None]
        left = eye - rho * s_[:, :, None] * y[:, None, :]
        H_new = left @ Ha @ left.transpose(1, 2) + rho * s_[:, :, None] * s_[:, None, :]
        H[idx] = torch.where(upd[:, None, None], H_new, Ha)
        done = moved & ((fa - new_f).abs() <= tol * (1 + fa.abs()))
        theta[idx] = torch.where(moved[:, None], new_theta, th)
        f[idx] = torch.where(moved, new_f, fa)
        g[idx] = torch.where(moved[:, None], new_g, ga)
        active[idx] = moved & ~done
    return theta, f


def _minimise(objective: _LogSumExpLaw, starts: torch.Tensor, keep: int) -> tuple[torch.Tensor, float]:
    """Score every start at once, run BFGS from the ``keep`` best, return the best end point."""
    scores = objective(starts[:, None])[0][:, 0]  # (n_starts,)
    scores = torch.where(torch.isfinite(scores), scores, torch.inf)
    theta, values = _bfgs(objective, starts[scores.argsort()[:keep]])
    values = torch.where(torch.isfinite(values), values, torch.inf)
    best = int(values.argmin())
    if not math.isfinite(float(values[best])):
        raise RuntimeError("the fit found no finite optimum from any start")
    return theta[best], float(values[best])


# Starting values: the paper's grid (alpha, beta in 0..2, e in -1..1, a, b in 0..25) with fewer steps;
# e reaches lower because losses in nats per character are small.
_GRID_E = (-2.0, -1.5, -1.0, -0.5, 0.0)
_GRID_AB = (0.0, 2.5, 5.0, 10.0, 15.0, 25.0)
_GRID_EXP = (0.1, 0.25, 0.5, 1.0, 2.0)


def fit_chinchilla(N: Sequence[float], D: Sequence[float], L: Sequence[float], delta: float = 1e-3,
                   keep: int = 8, start: ChinchillaFit | None = None) -> ChinchillaFit:
    """Fit ``L(N, D) = E + A/N**alpha + B/D**beta`` to runs with ``N`` parameters, ``D`` tokens, loss ``L``.

    One entry per run (several seeds of one cell are several runs). ``start``: begin from that fit
    alone instead of the grid of starting values (what a bootstrap does, for speed).
    """
    log_n, log_d, log_l = _as_log(N, "N"), _as_log(D, "D"), _as_log(L, "L")
    if not log_n.numel() == log_d.numel() == log_l.numel():
        raise ValueError(f"N, D and L must have one value per run, got {log_n.numel()}, {log_d.numel()}, {log_l.numel()}")
    if log_n.numel() < 5:
        raise ValueError(f"five numbers need at least five runs, got {log_n.numel()}")
    objective = _LogSumExpLaw(torch.stack([log_n, log_d]), log_l, delta)
    if start is None:
        starts = torch.tensor([(e, a, b, al, be) for e, a, b, al, be in itertools.product(
            _GRID_E, _GRID_AB, _GRID_AB, _GRID_EXP, _GRID_EXP)], dtype=torch.float64)
    else:
        starts = torch.tensor([[math.log(start.E), math.log(start.A), math.log(start.B), start.alpha, start.beta]],
                              dtype=torch.float64)
    theta, value = _minimise(objective, starts, keep=min(keep, len(starts)))
    e, a, b, alpha, beta = theta.tolist()
    return ChinchillaFit(math.exp(e), math.exp(a), alpha, math.exp(b), beta, value)


def fit_power_law(N: Sequence[float], L: Sequence[float], delta: float = 1e-3, keep: int = 8) -> PowerLawFit:
    """Fit ``L(N) = E + A/N**alpha`` (runs at one ``D``), with the same loss, optimiser and starts."""
    log_n, log_l = _as_log(N, "N"), _as_log(L, "L")
    if log_n.numel() != log_l.numel() or log_n.numel() < 3:
        raise ValueError("N and L need one value per run, and three numbers at least three runs")

    objective = _LogSumExpLaw(log_n[None], log_l, delta)
    starts = torch.tensor(list(itertools.product(_GRID_E, _GRID_AB, _GRID_EXP)), dtype=torch.float64)
    theta, value = _minimise(objective, starts, keep=keep)
    e, a, alpha = theta.tolist()
    return PowerLawFit(math.exp(e), math.exp(a), alpha, value)


def bootstrap_chinchilla(N, D, L, groups: Sequence | None = None, n_boot: int = 200, seed: int = 0,
                         fit: ChinchillaFit | None = None, delta: float = 1e-3) -> list[ChinchillaFit]:
    """Refit on ``n_boot`` resamples of the runs (a bootstrap over grid points): as many groups as
    there are, drawn with replacement, each with all its runs. ``groups`` names each run's group (a
    cell of the grid, so that the seeds of one cell stay together); ``None``: every run alone. Each
    refit starts from ``fit`` (default: the fit to all runs)."""
    N, D, L = (torch.as_tensor(x, dtype=torch.float64).flatten() for x in (N, D, L))
    groups = list(range(len(N))) if groups is None else list(groups)
    if not len(groups) == len(N) == len(D) == len(L):
        raise ValueError("groups, N, D and L need one entry per run")
    fit = fit or fit_chinchilla(N, D, L, delta)
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    cells = list(members.values())
    gen = torch.Generator().manual_seed(seed)
    resamples = []
    for _ in range(n_boot):
        picked = torch.randint(len(cells), (len(cells),), generator=gen).tolist()
        resamples.append(torch.tensor([i for c in picked for i in cells[c]]))
    width = max(len(r) for r in resamples)
    # a resample shorter than the longest is padded with copies of a run whose misfit counts zero
    idx = torch.stack([torch.cat([r, r[:1].repeat(width - len(r))]) for r in resamples])  # (n_boot, width)
    weight = torch.stack([torch.arange(width) < len(r) for r in resamples])
    log_x = torch.stack([N.log()[idx], D.log()[idx]], dim=1)[:, None]  # (n_boot, 1, 2, width)
    log_l = L.log()[idx][:, None]  # (n_boot, 1, width)
    objective = _LogSumExpLaw(log_x, log_l, delta, weight[:, None])
    start = torch.tensor([math.log(fit.E), math.log(fit.A), math.log(fit.B), fit.alpha, fit.beta], dtype=torch.float64)
    theta, values = _bfgs(objective, start.repeat(n_boot, 1))
    return [ChinchillaFit(math.exp(e), math.exp(a), alpha, math.exp(b), beta, float(v))
            for (e, a, b, alpha, beta), v in zip(theta.tolist(), values.tolist(), strict=True)]
