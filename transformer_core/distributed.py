"""Data-parallel training helpers: one process per device, started by ``torchrun``.

``torchrun --nproc_per_node=N script.py`` starts N copies of the script and tells each, through
environment variables, who it is: ``RANK`` (0 .. N-1 over all machines), ``LOCAL_RANK`` (the index on
this machine, i.e. which GPU to use) and ``WORLD_SIZE`` (N). :func:`init_distributed` reads them and
joins the process group; started without torchrun (``WORLD_SIZE`` unset or 1) it does nothing, so the
same script runs alone or in parallel.

How data parallelism stays exact (chapter 12): every rank holds the same model, draws the same global
batch and keeps its own slice of it (:func:`shard_batch`). After ``backward`` the
:class:`~torch.nn.parallel.DistributedDataParallel` wrapper averages the gradients over the ranks, so
every rank takes the same optimizer step -- the step one process would take on the whole batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "shard_batch", "all_reduce_mean", "all_gather_objects"]


@dataclass(frozen=True)
class DistInfo:
    """Who this process is: ``rank`` of ``world_size`` (``local_rank`` picks the GPU on its machine)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 is the one that prints, draws progress bars and writes checkpoints."""
        return self.rank == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables (idempotent).

    The backend defaults to ``"nccl"`` when CUDA is available (GPU-to-GPU all-reduce) and ``"gloo"``
    otherwise (CPU). Without ``WORLD_SIZE > 1`` nothing happens and ``DistInfo()`` (rank 0 of 1) is
    returned.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but {missing} are not set: start the script with "
            f"`torchrun --nproc_per_node={world_size} script.py`"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank)  # before init, so NCCL binds this process to its own GPU
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), local_rank, dist.get_world_size())


def cleanup_distributed() -> None:
    """Leave the process group (call once at the end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_batch(batch, rank: int, world_size: int):
    """Keep rank ``rank``'s contiguous slice of every tensor in ``batch`` (split along dim 0).

    ``(x (B, T), y (B, T))`` becomes ``(x[r*b:(r+1)*b], y[r*b:(r+1)*b])`` with ``b = B / world_size``,
    so the ranks' slices, concatenated in rank order, are the whole batch again. Equal slices matter:
    averaging the ranks' mean losses equals the mean over the whole batch only if each rank has the
    same number of rows.
    """
    if world_size == 1:
        return batch
    if isinstance(batch, Tensor):
        rows = batch.shape[0]
        if rows % world_size:
            raise ValueError(
                f"a batch of {rows} rows cannot be split evenly over {world_size} processes: "
                f"make the batch size a multiple of {world_size}"
            )
        per_rank = rows // world_size
        return batch[rank * per_rank : (rank + 1) * per_rank]
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard_batch(b, rank, world_size) for b in batch)
    if isinstance(batch, dict):
        return {k: shard_batch(v, rank, world_size) for k, v in batch.items()}
    return batch


def all_reduce_mean(x: Tensor, info: DistInfo) -> Tensor:
    """The mean of ``x`` over all ranks (a copy; ``x`` itself is left alone). Alone: ``x``."""
    if not info.enabled:
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / info.world_size


def all_gather_objects(obj, info: DistInfo) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (small Python objects only)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
