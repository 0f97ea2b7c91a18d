"""attention_book.scaling: the Chinchilla fit recovers a law it is given, and its optimum is one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from attention_book.scaling import (
    ChinchillaFit,
    bootstrap_chinchilla,
    fit_chinchilla,
    fit_power_law,
    read_grid,
)

TRUE = ChinchillaFit(E=0.30, A=6.0, alpha=0.5, B=60.0, beta=0.4, objective=0.0)
SIZES = (6_592, 25_472, 56_640, 100_096, 223_872, 396_800)
TOKENS = (307_200, 819_200, 2_048_000)
GRID = Path(__file__).resolve().parents[1] / "chapters" / "data" / "12_scaling_grid.csv"


def runs(noise: float = 0.0, seeds: int = 1):
    gen = torch.Generator().manual_seed(0)
    N, D, L, cells = [], [], [], []
    for n in SIZES:
        for d in TOKENS:
            for _ in range(seeds):
                N.append(n)
                D.append(d)
                L.append(TRUE.predict(n, d) * (1 + noise * float(torch.randn((), generator=gen))))
                cells.append((n, d))
    return N, D, L, cells


def test_fit_recovers_an_exact_law():
    fit = fit_chinchilla(*runs()[:3])
    assert fit.E == pytest.approx(TRUE.E, rel=1e-3)
    assert fit.alpha == pytest.approx(TRUE.alpha, rel=1e-2)
    assert fit.beta == pytest.approx(TRUE.beta, rel=1e-2)
    N, D, L, _ = runs()
    assert max(abs(fit.predict(n, d) / loss - 1) for n, d, loss in zip(N, D, L, strict=True)) < 1e-3


def test_bootstrap_interval_holds_the_truth_and_has_width():
    N, D, L, cells = runs(noise=0.003, seeds=2)
    fit = fit_chinchilla(N, D, L)
    fits = bootstrap_chinchilla(N, D, L, cells, n_boot=30, seed=0, fit=fit)
    es = sorted(f.E for f in fits)
    assert len(es) == 30 and es[-1] - es[0] > 1e-4  # resampling the grid points moves E
    assert es[0] - 0.02 < TRUE.E < es[-1] + 0.02
    # the same seed gives the same resamples; groups=None resamples single runs
    again = bootstrap_chinchilla(N, D, L, cells, n_boot=3, seed=0, fit=fit)
    assert [f.E for f in again] == [f.E for f in fits[:3]]
    assert len(bootstrap_chinchilla(N, D, L, n_boot=2, fit=fit)) == 2
    with pytest.raises(ValueError, match="one entry per run"):
        bootstrap_chinchilla(N, D, L, cells[:-1], n_boot=2, fit=fit)


def test_compute_optimal_is_the_minimum_on_its_iso_flop_line():
    C = 5e11
    n, d = TRUE.compute_optimal(C)
    assert 6 * n * d == pytest.approx(C)
    best = TRUE.predict(n, d)
    for factor in (0.5, 0.8, 1.25, 2.0):  # other splits of the same budget do worse
        assert TRUE.predict(n * factor, d / factor) > best
    # the closed form: N_opt grows as C ** (beta / (alpha + beta))
    n2, _ = TRUE.compute_optimal(10 * C)
    assert math.log10(n2 / n) == pytest.approx(TRUE.beta / (TRUE.alpha + TRUE.beta))
    with pytest.raises(ValueError, match="budget"):
        TRUE.compute_optimal(0.0)


def test_power_law_at_fixed_data_recovers_its_asymptote():
    d = TOKENS[-1]
    fit = fit_power_law(SIZES, [TRUE.predict(n, d) for n in SIZES])
    assert fit.E == pytest.approx(TRUE.E + TRUE.B / d**TRUE.beta, rel=1e-3)
    assert fit.alpha == pytest.approx(TRUE.alpha, rel=1e-2)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="positive"):
        fit_chinchilla([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 0, 4, 5])
    with pytest.raises(ValueError, match="one value per run"):
        fit_chinchilla([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="at least five"):
        fit_chinchilla([1, 2], [1, 2], [1, 2])


def test_the_committed_grid_is_the_one_the_script_describes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("scaling_grid", GRID.parents[2] / "scripts" / "scaling_grid.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = read_grid(GRID)
    assert list(rows[0]) == script.FIELDS
    assert {r["d_model"] for r in rows} == set(script.WIDTHS)
    assert {r["updates"] for r in rows} == set(script.STEPS)
    for r in rows:
        assert r["tokens_seen"] == r["updates"] * script.RECIPE["batch_size"] * script.RECIPE["context_length"]
        assert 0.25 < r["val_nats_per_char"] < 3.0 and r["cpu_seconds"] > 0
    # every cell with the grid's seed, once; other seeds only as repeats of the shortest runs
    runs = [(r["d_model"], r["updates"], r["seed"]) for r in rows]
    expected = {(d, s, seed) for d in script.WIDTHS for s in script.STEPS for seed in script.SEEDS}
    assert len(set(runs)) == len(runs) and expected <= set(runs)
    assert all(s == min(script.STEPS) for _, s, seed in set(runs) - expected)


def test_the_recipe_builds_the_grid_models():
    """attention_book.scaling's recipe (which chapter 12a trains with) gives the grid's parameter counts."""
    from attention_book.scaling import grid_model_config, grid_train_config
    from transformer_core import GPT

    for r in read_grid(GRID):
        if r["updates"] == 150 and r["seed"] == 0:
            model = GPT(grid_model_config(r["d_model"]))
            assert model.num_parameters(True) == r["n_params_non_embedding"]
            assert model.num_parameters() == r["n_params_total"]
    cfg = grid_train_config(2500, seed=3)
    assert (cfg.max_steps, cfg.warmup_steps, cfg.seed) == (2500, 100, 3)
    with pytest.raises(ValueError, match="multiple of the head width"):
        grid_model_config(40)
    with pytest.raises(ValueError, match="positive int"):
        grid_train_config(0, seed=0)
