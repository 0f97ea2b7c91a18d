"""Tests of the training loop: schedules, weight-decay groups, accumulation, clipping, mixed precision,
exact resume from checkpoints, callbacks."""

from __future__ import annotations

import math
import os
import random

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from transformer_core import GPT, GPTConfig, Transformer, TransformerConfig
from transformer_core.data import get_batch
from transformer_core.distributed import shard_batch
from transformer_core.schedules import noam_schedule, warmup_constant, warmup_cosine
from transformer_core.training import TrainConfig, Trainer, configure_optimizer, train
from transformer_core.viz import LiveLossPlot, plot_history

TEXT = "the cat sat on the mat. the dog ran to the cat. a bird sang in the tree. " * 40
CHARS = sorted(set(TEXT))
IDS = torch.tensor([CHARS.index(ch) for ch in TEXT])


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """A Trainer seeds the global generator and flushes denormals: give other tests their world back.

    One thread: these models are too small to gain from two, and on a busy machine threads that wait
    for each other cost several times the work itself.
    """
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_rng_state(state)
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.tiny(vocab_size=len(CHARS), context_length=32, **overrides))


def quiet(**overrides) -> TrainConfig:
    base = dict(max_steps=10, batch_size=4, lr=3e-3, warmup_steps=2, eval_interval=0, log_interval=1,
                progress=False)
    return TrainConfig(**{**base, **overrides})


def spy_on_gradients(trainer: Trainer) -> list[list[torch.Tensor]]:
    """Record the gradients each optimizer step sees (after accumulation and clipping)."""
    seen: list[list[torch.Tensor]] = []
    step = trainer.optimizer.step

    def spy(*args, **kwargs):
        seen.append([p.grad.detach().clone() for p in trainer.model.parameters()])
        return step(*args, **kwargs)

    trainer.optimizer.step = spy
    return seen


# --------------------------------------------------------------------------- schedules
def test_warmup_cosine_rises_linearly_peaks_and_ends_at_min_lr():
    lrs = [warmup_cosine(s, warmup_steps=10, max_steps=100, max_lr=1e-3, min_lr=1e-4) for s in range(121)]
    assert lrs[0] == 0.0
    for s in range(11):  # a straight line through 0 and the peak
        assert lrs[s] == pytest.approx(1e-3 * s / 10)
    assert max(lrs) == lrs[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:101], lrs[11:101], strict=False))  # decays monotonically
    assert lrs[55] == pytest.approx((1e-3 + 1e-4) / 2)  # halfway through the cosine: the midpoint
    assert lrs[100] == pytest.approx(1e-4)
    assert lrs[120] == pytest.approx(1e-4)  # and stays there


def test_warmup_constant_and_errors():
    assert [warmup_constant(s, 4, 2.0) for s in (0, 2, 4, 9)] == [0.0, 1.0, 2.0, 2.0]
    with pytest.raises(ValueError):
        warmup_cosine(-1, 10, 100, 1.0)
    with pytest.raises(ValueError):
        warmup_cosine(5, 10, 5, 1.0)


def test_noam_schedule_matches_the_paper_formula():
    d, w = 512, 4000
    for step in (1, 10, 1000, 3999, 4000, 4001, 10_000, 100_000):
        expected = d**-0.5 * min(step**-0.5, step * w**-1.5)
        assert noam_schedule(step, d, w) == pytest.approx(expected, rel=1e-12)
    assert noam_schedule(0, d, w) == 0.0
    peak = max(range(1, 10_000), key=lambda s: noam_schedule(s, d, w))
    assert peak == w
    assert noam_schedule(w, d, w) == pytest.approx(7e-4, rel=0.01)  # the base model's peak


def test_schedules_work_as_lambdalr_factors():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.5)
    sched = LambdaLR(opt, lambda s: warmup_cosine(s, 2, 6, max_lr=1.0, min_lr=0.1))
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    cosine = [0.1 + 0.45 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3)]
    assert lrs == pytest.approx([0.0, 0.25, 0.5] + [0.5 * c for c in cosine] + [0.05])


def test_trainer_uses_the_schedule_for_update_k():
    trainer = Trainer(tiny_gpt(), IDS, config=quiet(max_steps=6, warmup_steps=2, lr=1e-3, min_lr=1e-4))
    history = trainer.fit()
    assert [r["lr"] for r in history] == pytest.approx([warmup_cosine(k, 2, 6, 1e-3, 1e-4) for k in range(1, 7)])
    noam = Trainer(tiny_gpt(), IDS, config=quiet(max_steps=3, schedule="noam", lr=2.0, warmup_steps=2))
    assert [r["lr"] for r in noam.fit()] == pytest.approx([2.0 * noam_schedule(k, 64, 2) for k in (1, 2, 3)])


# --------------------------------------------------------------------------- weight decay
@pytest.mark.parametrize("make", [
    lambda: tiny_gpt(),
    lambda: tiny_gpt(positional="rotary", norm="rmsnorm", activation="swiglu", tie_weights=False),
    lambda: Transformer(TransformerConfig(12, 12, d_model=32, n_head=4, n_encoder_layers=1,
                                          n_decoder_layers=1, d_ff=64)),
])
def test_weight_decay_groups(make):
    model = make()
    opt = configure_optimizer(model, lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(grouped) == len(set(grouped))  # each parameter exactly once (the tied head too)
    assert set(grouped) == {id(p) for p in model.parameters()}
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    for name in decayed:  # only the weight matrices of Linear layers
        assert name.endswith("weight") and "emb" not in name and "ln" not in name and "norm" not in name, name
    assert all(p.dim() == 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"] if names[id(p)].endswith("bias"))
    linear_weights = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    tied = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    expected = {names[id(m.weight)] for n, m in model.named_modules()
                if n in linear_weights and id(m.weight) not in tied}
    assert decayed == expected


# --------------------------------------------------------------------------- the loop
def test_loss_goes_down_on_a_repeated_text():
    trainer = Trainer(tiny_gpt(), IDS[:2400], IDS[2400:], quiet(max_steps=50, batch_size=8, lr=3e-3,
                                                                 warmup_steps=5, eval_interval=25, eval_steps=4))
    before = trainer.evaluate()
    assert round(before, 1) == round(math.log(len(CHARS)), 1)  # a fresh model guesses uniformly
    history = trainer.fit()
    assert history[-1]["step"] == 50 and trainer.step == 50
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert history[-1]["val_loss"] < 0.5 * before
    assert [r["step"] for r in history if r["val_loss"] is not None] == [25, 50]


def test_gradient_accumulation_equals_one_big_batch():
    torch.manual_seed(1)
    x, y = get_batch(IDS, 8, 32)

    def halves(split, generator):  # alternately the first and the second 4 rows
        halves.calls += 1
        rows = slice(0, 4) if halves.calls % 2 else slice(4, 8)
        return x[rows], y[rows]

    halves.calls = 0
    small = Trainer(tiny_gpt(), halves, config=quiet(max_steps=3, grad_accum_steps=2, grad_clip=None))
    big = Trainer(tiny_gpt(), lambda split, g: (x, y), config=quiet(max_steps=3, batch_size=8, grad_clip=None))
    grads_small, grads_big = spy_on_gradients(small), spy_on_gradients(big)
    small.fit()
    big.fit()
    for step_small, step_big in zip(grads_small, grads_big, strict=True):
        for a, b in zip(step_small, step_big, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(small.history, big.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert halves.calls == 6


def test_clipping_bounds_the_gradient_norm():
    trainer = Trainer(tiny_gpt(), IDS, config=quiet(max_steps=3, grad_clip=0.05))
    grads = spy_on_gradients(trainer)
    history = trainer.fit()
    for step_grads, record in zip(grads, history, strict=True):
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in step_grads]))
        assert record["grad_norm"] > 0.05  # the logged norm is the one before clipping
        assert float(norm) == pytest.approx(0.05, rel=1e-4)


def test_bf16_autocast_on_cpu():
    dtypes = []

    def loss_fn(model, batch):
        x, y = batch
        logits = model(x)
        dtypes.append(logits.dtype)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

    model = tiny_gpt()
    history = train(model, IDS, config=quiet(max_steps=4, precision="bf16"), loss_fn=loss_fn)
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert all(math.isfinite(r["train_loss"]) for r in history)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the master weights stay float32


def test_fp16_takes_steps_and_skips_an_overflowing_one():
    """The scaler's two jobs: finite steps are taken; a step whose gradients overflowed is skipped
    (the weights and Adam's state stay as they were) and the scale is lowered (halved)."""
    overflow_on = {3}  # the third micro-batch's loss is made infinite
    calls = []

    def loss_fn(model, batch):
        from transformer_core.training import language_model_loss

        calls.append(len(calls) + 1)
        loss = language_model_loss(model, batch)
        return loss * math.inf if len(calls) in overflow_on else loss

    trainer = Trainer(tiny_gpt(), IDS, config=quiet(max_steps=5, precision="fp16"), loss_fn=loss_fn)
    assert trainer.scaler.is_enabled()
    params = list(trainer.model.parameters())

    def snapshot():
        return [p.detach().clone() for p in params]

    def adam_steps():
        steps = {float(trainer.optimizer.state[p]["step"]) for p in params if p in trainer.optimizer.state}
        assert len(steps) <= 1, steps
        return steps.pop() if steps else 0

    scale = trainer.scaler.get_scale()
    for _ in range(2):  # finite steps: the weights move, Adam counts them, the scale is unchanged
        before = snapshot()
        trainer.train_step()
        assert any(not torch.equal(a, b) for a, b in zip(before, snapshot(), strict=True))
    assert adam_steps() == 2 and trainer.scaler.get_scale() == scale

    before = snapshot()
    trainer.train_step()  # this one overflows
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(), strict=True)), (
        "an update whose gradients overflowed changed the weights: the scaler did not skip it"
    )
    assert adam_steps() == 2, "the optimizer took the overflowing step"
    assert trainer.scaler.get_scale() == scale * trainer.scaler.get_backoff_factor() < scale

    before = snapshot()
    trainer.train_step()  # and training goes on at the lower scale
    assert any(not torch.equal(a, b) for a, b in zip(before, snapshot(), strict=True))
    assert adam_steps() == 3 and trainer.step == 4


def test_fp16_training_runs_through_fit():
    trainer = Trainer(tiny_gpt(), IDS, config=quiet(max_steps=3, precision="fp16"))
    history = trainer.fit()
    assert len(history) == 3 and all(math.isfinite(r["train_loss"]) for r in history)
    assert float(trainer.optimizer.state[next(trainer.model.parameters())]["step"]) == 3


def test_encoder_decoder_trains_through_loss_fn():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(12, 12, d_model=32, n_head=4, n_encoder_layers=1,
                                          n_decoder_layers=1, d_ff=64, dropout=0.0))

    def copy_task(split, generator):  # src: 3..11 digits; tgt: <bos> src <eos>
        src = torch.randint(3, 12, (8, 6), generator=generator)
        bos, eos = torch.full((8, 1), 1), torch.full((8, 1), 2)
        return src, torch.cat([bos, src, eos], dim=1)

    history = train(model, copy_task, config=quiet(max_steps=30, eval_interval=30, eval_steps=2),
                    loss_fn=lambda m, batch: m.loss(*batch))
    assert history[-1]["val_loss"] is not None
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_history_records_and_callbacks():
    seen = []
    history = train(tiny_gpt(), IDS[:2000], IDS[2000:],
                    quiet(max_steps=7, log_interval=3, eval_interval=5, eval_steps=1),
                    callbacks=[seen.append])
    assert [r["step"] for r in history] == [3, 5, 6, 7]  # every log_interval, every eval, the end
    assert [r["val_loss"] is not None for r in history] == [False, True, False, True]
    assert seen == history
    for r in history:
        assert set(r) == {"step", "lr", "train_loss", "val_loss", "grad_norm", "tokens_per_s"}
        assert r["tokens_per_s"] > 0 and r["grad_norm"] > 0


def test_live_loss_plot_writes_png_and_leaks_no_figures(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot = LiveLossPlot(path=tmp_path / "loss.png")
    train(tiny_gpt(), IDS[:2000], IDS[2000:], quiet(max_steps=4, eval_interval=2, eval_steps=1),
          callbacks=[plot])
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert len(plot.history) == 4
    assert plt.get_fignums() == before
    fig = plot_history(plot.history)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 2  # train and validation


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(max_steps=10, warmup_steps=20)
    with pytest.raises(ValueError, match="grad_clip"):
        TrainConfig(grad_clip=0)
    with pytest.raises(TypeError, match="1-D tensor of integer"):
        Trainer(tiny_gpt(), torch.rand(100), config=quiet())
    with pytest.raises(ValueError, match="split evenly"):
        shard_batch((torch.zeros(3, 2), torch.zeros(3, 2)), rank=0, world_size=2)


def test_shard_batch_slices_concatenate_to_the_batch():
    x, y = torch.arange(12).view(6, 2), torch.arange(12, 24).view(6, 2)
    shards = [shard_batch((x, y), rank, 3) for rank in range(3)]
    assert torch.equal(torch.cat([s[0] for s in shards]), x)
    assert torch.equal(torch.cat([s[1] for s in shards]), y)


# --------------------------------------------------------------------------- checkpoints
def resume_config(path=None, **overrides) -> TrainConfig:
    # dropout, accumulation, evaluation and a log interval that does not divide the save step:
    # every piece of state has to come back for the runs to agree
    return quiet(max_steps=12, batch_size=4, grad_accum_steps=2, log_interval=3, eval_interval=4,
                 eval_steps=2, checkpoint_path=path, **overrides)


def comparable(history):
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in history]


def test_resume_continues_exactly(tmp_path):
    straight = Trainer(tiny_gpt(dropout=0.1), IDS[:2000], IDS[2000:], resume_config())
    straight.fit()

    first = Trainer(tiny_gpt(dropout=0.1), IDS[:2000], IDS[2000:], resume_config(tmp_path / "run.pt"))
    first.fit(until=5)
    first.save_checkpoint()
    del first
    torch.manual_seed(123)  # the rest of the world moves on before the run is resumed
    torch.rand(1000)
    resumed = Trainer(tiny_gpt(seed=7, dropout=0.1), IDS[:2000], IDS[2000:], resume_config(tmp_path / "run.pt"))
    resumed.load_checkpoint()
    assert resumed.step == 5
    resumed.fit()

    assert comparable(resumed.history) == comparable(straight.history)  # exactly, not approximately
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)
    saved = torch.load(tmp_path / "run.pt", weights_only=True)  # plain data: loads without pickle code
    assert saved["step"] == 12 and len(saved["history"]) == len(straight.history)


def test_train_resume_flag_and_interval_saves(tmp_path):
    path = tmp_path / "ckpt" / "run.pt"
    cfg = quiet(max_steps=6, checkpoint_path=path, checkpoint_interval=2)
    train(tiny_gpt(), IDS, config=cfg)
    assert torch.load(path, weights_only=True)["step"] == 6
    assert os.listdir(path.parent) == ["run.pt"]  # no temporary files left behind
    more = TrainConfig(**{**cfg.__dict__, "max_steps": 8})
    history = train(tiny_gpt(), IDS, config=more, resume=True)
    assert [r["step"] for r in history] == list(range(1, 9))


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    trainer = Trainer(tiny_gpt(), IDS, config=quiet(max_steps=4, checkpoint_path=path))
    trainer.fit(until=2)
    trainer.save_checkpoint()
    good = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    trainer.fit(until=3)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint()
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["run.pt"]


@pytest.mark.parametrize(
    "changes",
    [{"lr": 1e-3}, {"batch_size": 8}, {"seed": 1}, {"grad_accum_steps": 2, "precision": "bf16"},
     {"schedule": "constant", "warmup_steps": 0}, {"betas": (0.9, 0.99)}],
    ids=["lr", "batch-size", "seed", "accumulation-and-precision", "schedule", "betas"],
)
def test_resuming_with_other_training_settings_warns_naming_them(tmp_path, changes):
    from transformer_core.training import ResumeConfigWarning

    path = tmp_path / "run.pt"
    first = Trainer(tiny_gpt(), IDS, config=quiet(max_steps=4))
    first.fit(until=1)
    first.save_checkpoint(path)
    other = Trainer(tiny_gpt(), IDS, config=quiet(max_steps=4, **changes))
    with pytest.warns(ResumeConfigWarning) as caught:
        other.load_checkpoint(path)
    (message,) = [str(w.message) for w in caught]
    for field in changes:
        assert f"{field} " in message, message
    assert str(path) in message
    assert other.step == 1  # it warns, then resumes


def test_resuming_with_the_same_settings_or_a_longer_run_does_not_warn(tmp_path):
    import warnings

    from transformer_core.training import ResumeConfigWarning

    path = tmp_path / "run.pt"
    first = Trainer(tiny_gpt(), IDS, config=quiet(max_steps=4, checkpoint_path=path))
    first.fit(until=1)
    first.save_checkpoint()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeConfigWarning)
        # longer, evaluated, logged and saved elsewhere: the same updates
        Trainer(tiny_gpt(), IDS, config=quiet(max_steps=9, eval_interval=3, log_interval=2,
                                             checkpoint_path=tmp_path / "b.pt")).load_checkpoint(path)


def test_damaged_or_mismatched_checkpoints_fail_clearly(tmp_path):
    trainer = Trainer(tiny_gpt(), IDS, config=quiet(max_steps=2))
    trainer.fit()
    path = trainer.save_checkpoint(tmp_path / "run.pt")

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="damaged"):
        Trainer(tiny_gpt(), IDS, config=quiet()).load_checkpoint(truncated)
    # Noise makes the unpickler fail in many ways (IndexError, KeyError, ...): all are one clear error.
    noise = tmp_path / "noise.pt"
    for size in (1, 7, 64, 4096):
        for seed in range(10):
            noise.write_bytes(random.Random(seed).randbytes(size))
            with pytest.raises(ValueError, match="damaged"):
                Trainer(tiny_gpt(), IDS, config=quiet()).load_checkpoint(noise)

    with pytest.raises(FileNotFoundError):
        Trainer(tiny_gpt(), IDS, config=quiet()).load_checkpoint(tmp_path / "missing.pt")

    model_only = tiny_gpt().save(tmp_path / "model.pt") or tmp_path / "model.pt"
    with pytest.raises(ValueError, match="not written by Trainer.save_checkpoint"):
        Trainer(tiny_gpt(), IDS, config=quiet()).load_checkpoint(model_only)

    wider = GPT(GPTConfig.tiny(vocab_size=len(CHARS), context_length=32, d_model=32))
    with pytest.raises(ValueError, match="another shape"):
        Trainer(wider, IDS, config=quiet()).load_checkpoint(path)


# --------------------------------------------------------------------------- the KV cache's buffer
# (changed for generation speed, see benchmarks/README.md: the cache writes into a buffer with room
# to spare instead of concatenating at every step)
def test_kv_cache_buffer_grows_and_keeps_its_contents():
    from transformer_core import KVCache

    torch.manual_seed(0)
    steps = [torch.randn(2, 3, n, 4) for n in (5, 1, 1, 7, 1)]
    for capacity in (None, 6, 100):
        cache = KVCache(capacity=capacity)
        for k in steps:
            out_k, out_v = cache.append(k, -k)
        expected = torch.cat(steps, dim=-2)
        assert torch.equal(out_k, expected) and torch.equal(out_v, -expected)
        assert cache.length == 15 and cache.k.shape == (2, 3, 15, 4)


def test_kv_cache_accepts_a_user_set_prefix_and_records_gradients():
    from transformer_core import KVCache

    prefix = torch.randn(1, 2, 3, 4)
    cache = KVCache(k=prefix, v=prefix)
    k, _ = cache.append(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    assert torch.equal(k[:, :, :3], prefix) and cache.length == 4

    leaf = torch.randn(1, 2, 2, 4, requires_grad=True)
    cache = KVCache()
    cache.append(leaf[:, :, :1], leaf[:, :, :1])
    k, v = cache.append(leaf[:, :, 1:], leaf[:, :, 1:])
    (k.sum() + v.sum()).backward()  # through torch.cat: a buffer written in place would break this
    assert torch.equal(leaf.grad, torch.full_like(leaf, 2.0))


def test_cached_generation_equals_uncached_with_the_buffer():
    model = tiny_gpt()
    prompt = IDS[:5][None]
    cached = model.generate(prompt, 40, greedy=True, use_cache=True)
    assert torch.equal(cached, model.generate(prompt, 40, greedy=True, use_cache=False))
