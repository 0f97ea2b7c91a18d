"""The training loop of chapter 07: AdamW, a warm-up schedule, clipping, accumulation, mixed precision,
evaluation, checkpoints that resume exactly, and (chapter 12) data parallelism under ``torchrun``.

The short way, from a notebook cell::

    from transformer_core.training import TrainConfig, train
    from transformer_core.viz import LiveLossPlot   # the loss curve, redrawn as it trains

    history = train(model, train_ids, val_ids, TrainConfig(max_steps=300, lr=1e-3),
                    callbacks=[LiveLossPlot()])
    history[-1]   # {'step': 300, 'lr': ..., 'train_loss': ..., 'val_loss': ..., 'grad_norm': ..., ...}

``train_ids`` / ``val_ids`` are 1-D tensors of token ids; batches are random windows of them
(:func:`transformer_core.data.get_batch`: ``y`` is ``x`` shifted by one token). Any
other data comes in as a function ``get_batch(split, generator) -> batch`` (``split`` is ``"train"``
or ``"val"``), and any other loss as ``loss_fn(model, batch) -> scalar`` -- the encoder-decoder of
chapter 09 trains with ``loss_fn=lambda model, batch: model.loss(*batch)``.

The longer way keeps the :class:`Trainer`, to train in pieces, evaluate, save and resume::

    trainer = Trainer(model, train_ids, val_ids, config)
    trainer.fit(until=100)          # the first 100 updates
    trainer.save_checkpoint("run.pt")
    trainer.fit()                   # on to config.max_steps

What one update does (``grad_accum_steps`` micro-batches, then one optimizer step)::

    for each micro-batch:   loss = loss_fn(model, batch) / grad_accum_steps;  loss.backward()
    grad_norm = clip_grad_norm_(params, grad_clip)   # the norm *before* clipping is logged
    lr = schedule(k); optimizer.step(); optimizer.zero_grad()
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import data
from . import distributed as D
from .checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_torch_save,
    model_payload,
    plain_config,
    read_payload,
)
from .moe import MoEFeedForward
from .schedules import noam_schedule, warmup_constant, warmup_cosine
from .validation import Config, check_choice, check_int, check_number, is_int, is_number

__all__ = [
    "TrainConfig",
    "Trainer",
    "train",
    "configure_optimizer",
    "language_model_loss",
    "resolve_device",
    "print_record",
    "CHECKPOINT_FORMAT",
    "ResumeConfigWarning",
]

PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "constant", "noam")
# The TrainConfig fields that shape the updates: resuming with another value of any of them goes on
# as a different run from the one the checkpoint started (a warning names them). max_steps may grow
# to train longer; the evaluation, logging, device and saving fields change nothing in the updates.
RESUME_FIELDS = ("batch_size", "lr", "min_lr", "warmup_steps", "schedule", "weight_decay", "betas",
                 "grad_clip", "grad_accum_steps", "precision", "seed", "context_length")


class ResumeConfigWarning(UserWarning):
    """A checkpoint is resumed with training settings (lr, batch size, seed, ...) other than its own."""


# --------------------------------------------------------------------------- the optimizer
def configure_optimizer(
    model: nn.Module,
    lr: float = 3e-4,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW with two parameter groups: the weight matrices of ``nn.Linear`` layers are decayed, the
    rest (biases, norm gains, embeddings, learned positions) are not.

    Why not decay everything: weight decay pulls each weight towards 0 a little every step. For the
    matrices that mix features that is the regularisation we want. A bias or a LayerNorm gain is a
    single number per feature (few parameters, little to overfit), and a gain's neutral value is 1,
    not 0. An embedding row is decayed at every step while its token is trained only when it occurs,
    so rare tokens would shrink towards zero for no reason. (GPT-2 and minGPT make the same split.)

    A tied parameter (the GPT head shares the token embedding's matrix) appears exactly once, in the
    no-decay group: it *is* an embedding. Parameters with ``requires_grad=False`` are left out.
    Returns the optimizer; ``optimizer.param_groups[0]`` is the decayed group.
    """
    embeddings: set[int] = set()
    linear_weights: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            embeddings.add(id(module.weight))
        elif isinstance(module, nn.Linear):
            linear_weights.add(id(module.weight))
    decay, no_decay = [], []
    for p in model.parameters():  # .parameters() yields a shared (tied) parameter only once
        if not p.requires_grad:
            continue
        (decay if id(p) in linear_weights and id(p) not in embeddings else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel does the whole update in one pass over memory (3x faster than the loop over
    # parameters on a CPU, measured); it needs all parameters on one CPU or CUDA device.
    devices = {p.device.type for p in decay + no_decay}
    fused = devices <= {"cpu"} or devices <= {"cuda"}
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)
    except (RuntimeError, TypeError, ValueError):  # an older PyTorch or another device: plain AdamW
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


# --------------------------------------------------------------------------- configuration
@dataclass
class TrainConfig(Config):
    """Everything that shapes a training run. Defaults suit the book's small models on a CPU.

    Steps count optimizer updates; one update sees ``batch_size * grad_accum_steps`` sequences.
    ``batch_size`` is the *global* micro-batch: under torchrun each of N processes trains on
    ``batch_size / N`` of its rows. ``context_length`` is only needed for token-tensor data and
    defaults to ``model.config.context_length``.

    ``schedule``: ``"cosine"`` (warm-up to ``lr``, cosine down to ``min_lr``, default ``lr / 10``),
    ``"constant"`` (warm-up, then ``lr``), ``"noam"`` (the paper's, scaled by ``lr``: use
    ``lr=1.0`` for the paper's exact rates), or a function ``step -> learning rate``.
    ``precision``: ``"fp32"``, ``"bf16"`` (autocast to bfloat16: CPU or recent GPUs) or ``"fp16"``
    (autocast to float16 with a gradient scaler, for GPUs). Evaluate every ``eval_interval``
    updates on ``eval_steps`` batches (0 turns evaluation off); log every ``log_interval``; save to
    ``checkpoint_path`` every ``checkpoint_interval`` updates (if set) and at the end.
    """

    max_steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-4
    min_lr: float | None = None
    warmup_steps: int = 100
    schedule: str | Callable[[int], float] = "cosine"
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    eval_interval: int = 100
    eval_steps: int = 20
    log_interval: int = 10
    precision: str = "fp32"
    device: str = "auto"
    seed: int = 0
    context_length: int | None = None
    checkpoint_path: str | os.PathLike | None = None
    checkpoint_interval: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum_steps", "log_interval"):
            check_int(name, getattr(self, name))
        for name in ("warmup_steps", "eval_interval", "eval_steps"):
            check_int(name, getattr(self, name), minimum=0)
        for name in ("lr", "weight_decay", "min_lr", "grad_clip"):
            check_number(name, getattr(self, name), optional=name in ("min_lr", "grad_clip"))
        if not is_int(self.seed):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        if (not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2
                or not all(is_number(b) and 0 <= b < 1 for b in self.betas)):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        check_int("checkpoint_interval", self.checkpoint_interval, optional=True)
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} exceeds max_steps={self.max_steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        check_choice("precision", self.precision, PRECISIONS)
        if not callable(self.schedule) and self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES} or a function step -> lr, got {self.schedule!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None (no clipping), got {self.grad_clip}")

    def to_dict(self) -> dict:
        """Plain values only (a schedule function is stored by name), for checkpoints and logs."""
        d = super().to_dict()
        if callable(self.schedule):
            d["schedule"] = getattr(self.schedule, "__name__", repr(self.schedule))
        if d["checkpoint_path"] is not None:
            d["checkpoint_path"] = str(d["checkpoint_path"])
        d["betas"] = list(d["betas"])
        return d


# --------------------------------------------------------------------------- data and loss
def _token_batches(train_data, val_data, batch_size: int, context_length: int) -> Callable:
    """Turn token tensors into ``get_batch(split, generator)``."""
    splits = {"train": _as_tokens(train_data, "train_data")}
    if val_data is not None:
        splits["val"] = _as_tokens(val_data, "val_data")

    def get_batch(split: str, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return data.get_batch(splits[split], batch_size, context_length, generator)  # chapter 06

    return get_batch


def _as_tokens(data, name: str) -> Tensor:
    data = torch.as_tensor(data)
    if data.dim() != 1 or data.is_floating_point() or data.dtype == torch.bool:
        raise TypeError(
            f"{name} must be a 1-D tensor of integer token ids (or pass a function "
            f"get_batch(split, generator) instead), got {data.dtype} of shape {tuple(data.shape)}"
        )
    return data


def language_model_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Next-token cross-entropy: ``x`` ``(B, T)`` -> logits ``(B, T, V)``, compared with ``y`` ``(B, T)``.

    The logits are cast to float32 first: under bf16/fp16 autocast the softmax inside the loss would
    otherwise lose the small probabilities the gradient depends on.
    """
    x, y = batch
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())  # mean over B*T positions


class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``.

    DistributedDataParallel synchronises gradients only for what runs through *its* ``forward``.
    Wrapping the loss (not just the model) lets any ``loss_fn`` -- even one that calls
    ``model.loss(src, tgt)`` instead of ``model(x)`` -- run through it.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch) -> Tensor:
        return self.loss_fn(self.model, batch)


def _to_device(batch, device: torch.device):
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _count_tokens(batch) -> int:
    """Tokens a batch trains on: the size of its last tensor (the targets ``y``; ``tgt`` for seq2seq)."""
    if isinstance(batch, Tensor):
        return batch.numel()
    if isinstance(batch, (tuple, list)) and batch:
        return _count_tokens(batch[-1])
    if isinstance(batch, dict) and batch:
        return _count_tokens(list(batch.values())[-1])
    return 0


def resolve_device(device: str | torch.device = "auto", info: D.DistInfo | None = None) -> torch.device:
    """``"auto"`` picks CUDA (this process's own GPU under torchrun), then Apple's MPS, then the CPU."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank if info is not None else torch.cuda.current_device())
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# --------------------------------------------------------------------------- the trainer
class Trainer:
    """Trains ``model`` on ``train_data`` and keeps everything needed to stop and resume exactly.

    Args:
        model: any ``nn.Module``; moved to the config's device.
        train_data: a 1-D tensor of token ids, or a function ``get_batch(split, generator) -> batch``
            (called with ``"train"`` and, for evaluation, ``"val"``; draw all randomness from
            ``generator`` so that runs are reproducible and resume exactly).
        val_data: a 1-D tensor of token ids for evaluation (token-tensor data only).
        config: a :class:`TrainConfig` (default: ``TrainConfig()``).
        loss_fn: ``loss_fn(model, batch) -> scalar``; default :func:`language_model_loss`.
        callbacks: functions called as ``callback(record)`` with each new history record (rank 0 only).

    Attributes a reader may look at: ``step`` (updates done), ``history`` (list of records:
    ``step, lr, train_loss, val_loss, grad_norm, tokens_per_s``), ``optimizer``, ``device``, ``dist``.

    Constructing a Trainer seeds PyTorch's global generator with ``config.seed`` (+ the rank), which
    drives dropout; batches come from the trainer's own ``generator``. On a CPU it also turns on
    flushing of denormal floats (see the comment in ``__init__``).
    """

    def __init__(
        self,
        model: nn.Module,
        train_data,
        val_data=None,
        config: TrainConfig | None = None,
        *,
        loss_fn: Callable[[nn.Module, object], Tensor] | None = None,
        callbacks: Iterable[Callable[[dict], object]] = (),
    ) -> None:
        self.config = c = config if config is not None else TrainConfig()
        if not isinstance(c, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(c).__name__}")
        self.dist = D.init_distributed()  # rank 0 of 1 unless started by torchrun
        self.device = resolve_device(c.device, self.dist)
        if self.device.type == "cpu":
            # Tiny gradients (softmax probabilities of very unlikely tokens, squared in Adam) can fall
            # into the denormal range, where every multiply on an x86 CPU takes a slow microcode
            # path: training was measured 2-25x slower. Rounding them to zero costs no accuracy
            # worth having. The setting is global to the process, so later cells benefit too.
            torch.set_flush_denormal(True)
        torch.manual_seed(c.seed + self.dist.rank)  # dropout masks: reproducible, different per rank

        self.model = model.to(self.device)
        self.loss_fn = loss_fn or language_model_loss
        self._loss_module: nn.Module = _LossModule(self.model, self.loss_fn)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # A model that routes (a mixture of experts) may leave a parameter without a gradient
            # on a rank: an expert that none of its tokens chose. DDP waits for every gradient
            # unless told to look for unused ones, an extra pass that only such models need.
            self._loss_module = nn.parallel.DistributedDataParallel(
                self._loss_module, device_ids=ids, find_unused_parameters=_routes_tokens(self.model)
            )

        if callable(train_data):
            if val_data is not None:
                raise ValueError("with a get_batch function, serve the validation split from it: get_batch('val', g)")
            self.get_batch = train_data
            self._has_val = True
        else:
            T = c.context_length or getattr(getattr(model, "config", None), "context_length", None)
            if T is None:
                raise ValueError("set TrainConfig.context_length: the model's config has no context_length")
            self.get_batch = _token_batches(train_data, val_data, c.batch_size, T)
            self._has_val = val_data is not None
        self.callbacks = list(callbacks)

        self.optimizer = configure_optimizer(self.model, c.lr, c.weight_decay, c.betas)
        if c.precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("this GPU has no bfloat16: use precision='fp16'")
        # float16 has a narrow range: small gradients underflow to 0. The scaler multiplies the loss
        # before backward and divides the gradients after (skipping steps that overflowed).
        # bfloat16 has float32's range and needs no scaler.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=c.precision == "fp16")
        self.generator = torch.Generator().manual_seed(c.seed)  # the order of training batches

        self.step = 0
        self.history: list[dict] = []
        self._loss_sum = torch.zeros((), device=self.device)  # train loss since the last record
        self._loss_count = 0
        self._tokens = 0  # tokens trained on since the last record (all ranks) ...
        self._seconds = 0.0  # ... and the seconds it took
        self._last_lr = self.lr_at(1)

    # ------------------------------------------------------------------ pieces of one update
    def lr_at(self, step: int) -> float:
        """The learning rate of update number ``step`` (counted from 1)."""
        c = self.config
        if callable(c.schedule):
            return float(c.schedule(step))
        if c.schedule == "cosine":
            return warmup_cosine(step, c.warmup_steps, c.max_steps, c.lr, c.min_lr)
        if c.schedule == "constant":
            return warmup_constant(step, c.warmup_steps, c.lr)
        d_model = getattr(getattr(self.model, "config", None), "d_model", None)
        if d_model is None:
            raise ValueError("schedule='noam' needs model.config.d_model")
        return c.lr * noam_schedule(step, d_model, max(c.warmup_steps, 1))

    def _autocast(self):
        if self.config.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _next_batch(self, split: str, generator: torch.Generator):
        batch = self.get_batch(split, generator)  # the global batch: the same on every rank
        batch = D.shard_batch(batch, self.dist.rank, self.dist.world_size)  # this rank's rows
        return _to_device(batch, self.device)

    def train_step(self) -> Tensor:
        """One optimizer update over ``grad_accum_steps`` micro-batches; returns the grad norm.

        Each micro-batch's loss is divided by ``grad_accum_steps`` so that the summed gradients are
        those of the mean loss over all of them: two micro-batches of B rows give the same update
        as one batch of 2B rows. Under DDP, ``no_sync`` skips the all-reduce for all but the last
        micro-batch (the gradients keep accumulating locally; one all-reduce at the end suffices).
        """
        c = self.config
        lr = self.lr_at(self.step + 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        step_loss = torch.zeros((), device=self.device)
        for micro in range(c.grad_accum_steps):
            batch = self._next_batch("train", self.generator)
            last = micro == c.grad_accum_steps - 1
            sync = nullcontext() if last or not self.dist.enabled else self._loss_module.no_sync()
            with sync:
                with self._autocast():
                    loss = self._loss_module(batch)
                self.scaler.scale(loss / c.grad_accum_steps).backward()
            step_loss += loss.detach().float()
            self._tokens += _count_tokens(batch) * self.dist.world_size
        self.scaler.unscale_(self.optimizer)  # true gradients (a no-op without fp16), then clip
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip or math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._loss_sum += step_loss / c.grad_accum_steps
        self._loss_count += 1
        self._last_lr = lr
        return grad_norm

    @torch.no_grad()
    def evaluate(self, steps: int | None = None) -> float | None:
        """Mean loss over ``steps`` (default ``config.eval_steps``) validation batches; None without data.

        The evaluation batches come from a generator re-seeded every time, so each evaluation sees
        the *same* batches: the validation curve then moves only because the model changed.
        The model is in eval mode (no dropout) meanwhile and goes back to training mode afterwards.
        """
        steps = self.config.eval_steps if steps is None else steps
        if not self._has_val or steps == 0:
            return None
        generator = torch.Generator().manual_seed(self.config.seed + 1_000_003)
        was_training = self.model.training
        self.model.eval()
        try:
            total = torch.zeros((), device=self.device)
            for _ in range(steps):
                batch = self._next_batch("val", generator)
                with self._autocast():
                    total += self.loss_fn(self.model, batch).float()
        finally:
            self.model.train(was_training)
        return float(D.all_reduce_mean(total / steps, self.dist))

    # ------------------------------------------------------------------ the loop
    def fit(self, until: int | None = None) -> list[dict]:
        """Train from ``self.step`` up to ``until`` updates (default ``config.max_steps``).

        Call it again to go on; the schedule always follows ``config.max_steps``. Returns ``history``.
        """
        c = self.config
        end = c.max_steps if until is None else min(until, c.max_steps)
        show = c.progress and self.dist.is_main
        bar = tqdm(total=c.max_steps, initial=self.step, desc="training", unit="step", disable=not show)
        self.model.train()
        try:
            while self.step < end:
                started = time.perf_counter()
                grad_norm = self.train_step()
                step = self.step
                is_last = step == c.max_steps
                evaluate = c.eval_interval > 0 and (step % c.eval_interval == 0 or is_last)
                log = step % c.log_interval == 0 or evaluate or is_last
                if log and self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)  # GPU work is queued: wait before timing it
                self._seconds += time.perf_counter() - started  # training time only, no eval or saving
                bar.update(1)
                if log:
                    record = self._record(grad_norm, evaluate)
                    if show:
                        bar.set_postfix(_postfix(record), refresh=False)
                    if self.dist.is_main:
                        for callback in self.callbacks:
                            callback(record)
                if c.checkpoint_path is not None and (
                    is_last or (c.checkpoint_interval is not None and step % c.checkpoint_interval == 0)
                ):
                    self.save_checkpoint()
        finally:
            bar.close()
        return self.history

    def _record(self, grad_norm: Tensor, evaluate: bool) -> dict:
        train_loss = float(D.all_reduce_mean(self._loss_sum / self._loss_count, self.dist))
        if not math.isfinite(train_loss) and self.config.precision != "fp16":
            raise FloatingPointError(
                f"the training loss became {train_loss} by step {self.step}: lower lr, check grad_clip, "
                f"or look for bad inputs"
            )
        record = {
            "step": self.step,
            "lr": self._last_lr,
            "train_loss": train_loss,  # mean over the updates since the last record (all ranks)
            "val_loss": self.evaluate() if evaluate else None,
            "grad_norm": float(grad_norm),  # of this update, before clipping
            "tokens_per_s": self._tokens / max(self._seconds, 1e-9),  # all ranks together
        }
        self.history.append(record)
        self._loss_sum.zero_()
        self._loss_count = self._tokens = 0
        self._seconds = 0.0
        return record

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: a dict of plain values and tensors.

        Model, optimizer (Adam's moments and step counts), gradient scaler, the step (the learning
        rate schedule is a function of it, so the step *is* the scheduler's state), the history and
        the random generators: PyTorch's global one of every rank (dropout) and the data generator
        (which batch comes next). Collective under torchrun: every rank must call it.
        """
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state() if self.device.type == "cuda" else None
        rng_all = D.all_gather_objects((rng, cuda_rng), self.dist)
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model": model_payload(self.model),  # what save_model writes: load_model opens this file too
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "scaler": self.scaler.state_dict(),
            "train_config": self.config.to_dict(),
            "history": [dict(r) for r in self.history],
            "loss_accumulator": {"sum": float(self._loss_sum), "count": self._loss_count},
            "rng": {
                "torch": [r for r, _ in rng_all],
                "cuda": [c for _, c in rng_all] if cuda_rng is not None else None,
                "data": self.generator.get_state(),
            },
            "world_size": self.dist.world_size,
        }

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write :meth:`state_dict` to ``path`` (default ``config.checkpoint_path``); rank 0 writes.

        The file is written next to its destination, flushed to disk and renamed over it: a save
        interrupted half-way (power cut, Ctrl-C, full disk) leaves the previous checkpoint intact.
        """
        path = path if path is not None else self.config.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path: pass one or set TrainConfig.checkpoint_path")
        state = self.state_dict()  # every rank takes part (it gathers their random states)
        if not self.dist.is_main:
            return None
        return atomic_torch_save(state, path)

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> Trainer:
        """Restore a state saved by :meth:`save_checkpoint` into this trainer (and its model).

        Raises ``FileNotFoundError`` for a missing file and ``ValueError``, naming the problem, for a
        damaged file, a file of another kind, or a checkpoint of a different model. Warns
        (:class:`ResumeConfigWarning`, naming each field) when this trainer's settings that shape
        the updates (lr, batch size, seed, precision, ...) differ from the checkpoint's.
        """
        path = path if path is not None else self.config.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path: pass one or set TrainConfig.checkpoint_path")
        self.load_state_dict(read_payload(path, "checkpoint"), source=str(path))
        return self

    def load_state_dict(self, state: dict, source: str = "the checkpoint") -> None:
        """Restore from a dict made by :meth:`state_dict` (``source`` names it in error messages)."""
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{source} was not written by Trainer.save_checkpoint (format {CHECKPOINT_FORMAT!r})")
        model = state["model"]
        if model["class"] != type(self.model).__name__:
            raise ValueError(f"{source} holds a {model['class']}, but this trainer trains a {type(self.model).__name__}")
        saved, mine = model["config"], plain_config(self.model)
        if saved is not None and mine is not None and saved != mine:
            diff = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
            raise ValueError(f"{source} is for a model of another shape; (checkpoint, this model) differ in {diff}")
        self._warn_if_config_differs(state.get("train_config"), source)
        try:
            self.model.load_state_dict(model["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"{source} does not fit this model or optimizer: {err}") from err
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.history = [dict(r) for r in state["history"]]
        self._loss_sum.fill_(state["loss_accumulator"]["sum"])
        self._loss_count = state["loss_accumulator"]["count"]
        rng = state["rng"]
        # Each rank gets back its own dropout generator; with another number of processes the
        # run goes on, but its dropout masks are not the ones the original run would have drawn.
        mine_rng = rng["torch"][self.dist.rank % len(rng["torch"])]
        torch.set_rng_state(mine_rng)
        if rng["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"][self.dist.rank % len(rng["cuda"])])
        self.generator.set_state(rng["data"])
        if state["world_size"] != self.dist.world_size and self.dist.is_main:
            print(f"note: {source} was saved by {state['world_size']} process(es), resuming with {self.dist.world_size}")


    def _warn_if_config_differs(self, saved: dict | None, source: str) -> None:
        if not isinstance(saved, dict) or not self.dist.is_main:
            return
        now = self.config.to_dict()
        differ = [(k, saved[k], now[k]) for k in RESUME_FIELDS if k in saved and saved[k] != now[k]]
        if differ:
            fields = ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in differ)
            warnings.warn(
                f"{source} was saved by a run with other training settings ({fields}; checkpoint "
                f"-> this trainer). Training goes on with this trainer's settings, so it will not "
                f"be the run the checkpoint started; pass the checkpoint's TrainConfig to resume "
                f"it exactly",
                ResumeConfigWarning,
                stacklevel=4,
            )


def _routes_tokens(model: nn.Module) -> bool:
    """True for a model with conditional computation (mixture-of-experts layers)."""
    return any(isinstance(m, MoEFeedForward) for m in model.modules())


def _to_cpu(obj):
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def train(model: nn.Module, train_data, val_data=None, config: TrainConfig | None = None, *,
          resume: bool = False, **options) -> list[dict]:
    """Train ``model`` and return its history: ``Trainer(model, train_data, val_data, config,
    **options).fit()``; ``options`` are the Trainer's ``loss_fn`` and ``callbacks``.

    With ``resume=True`` and an existing ``config.checkpoint_path`` the run continues from it.
    """
    trainer = Trainer(model, train_data, val_data, config, **options)
    if resume and trainer.config.checkpoint_path is not None and Path(trainer.config.checkpoint_path).is_file():
        trainer.load_checkpoint()
    return trainer.fit()


# --------------------------------------------------------------------------- watching a run
def _postfix(record: dict) -> dict:
    out = {"loss": f"{record['train_loss']:.3f}"}
    if record["val_loss"] is not None:
        out["val"] = f"{record['val_loss']:.3f}"
    out["lr"] = f"{record['lr']:.2e}"
    return out


def print_record(record: dict) -> None:
    """A callback that prints one line per record (for scripts; notebooks have the progress bar)."""
    val = "" if record["val_loss"] is None else f"  val {record['val_loss']:.4f}"
    print(
        f"step {record['step']:>6}  loss {record['train_loss']:.4f}{val}  lr {record['lr']:.2e}  "
        f"grad norm {record['grad_norm']:.3f}  {record['tokens_per_s']:,.0f} tokens/s",
        flush=True,
    )
