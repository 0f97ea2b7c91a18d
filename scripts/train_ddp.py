"""Train a small GPT on the book's story corpus, alone or data-parallel under torchrun (chapter 12).

    python scripts/train_ddp.py --steps 200                                   # one process
    torchrun --standalone --nproc_per_node=2 scripts/train_ddp.py --steps 200  # two processes

Both commands train the same model on the same batches: ``--batch-size`` is the global batch, and
under torchrun each process trains on its own slice of it (see ``transformer_core.distributed``).
On CPUs the processes talk through the gloo backend, on GPUs through NCCL. Only rank 0 prints and
writes checkpoints. ``--dump DIR`` makes every rank write its final parameters and history to
``DIR/rank<r>.pt`` (the tests use that to check that the ranks agree).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from transformer_core import GPT, GPTConfig
from transformer_core.data import load_corpus, train_val_split
from transformer_core.distributed import cleanup_distributed
from transformer_core.tokenizers import CharTokenizer
from transformer_core.training import TrainConfig, Trainer, print_record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200, help="optimizer updates")
    p.add_argument("--batch-size", type=int, default=16, help="global micro-batch, split over the processes")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per update")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--eval-interval", type=int, default=50)
    p.add_argument("--eval-steps", type=int, default=10)
    p.add_argument("--log-interval", type=int, default=10)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--checkpoint", type=Path, default=None, help="save here (and resume from it if it exists)")
    p.add_argument("--dump", type=Path, default=None, help="write each rank's final state to DIR/rank<r>.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no log lines")
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[GPT, torch.Tensor, torch.Tensor, TrainConfig]:
    """The model, the corpus as character ids (train and validation), and the training config."""
    text = load_corpus()
    tokenizer = CharTokenizer.from_text(text)
    train_ids, val_ids = train_val_split(tokenizer.encode(text), val_fraction=0.1)
    torch.manual_seed(args.seed)  # every rank builds the same model (DDP also copies rank 0's weights)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=args.context, n_layer=args.n_layer,
                          n_head=args.n_head, d_model=args.d_model, dropout=args.dropout))
    config = TrainConfig(
        max_steps=args.steps, batch_size=args.batch_size, grad_accum_steps=args.grad_accum, lr=args.lr,
        warmup_steps=min(args.warmup, args.steps), eval_interval=args.eval_interval,
        eval_steps=args.eval_steps, log_interval=args.log_interval, precision=args.precision,
        device=args.device, seed=args.seed, checkpoint_path=args.checkpoint, progress=False,
    )
    return model, train_ids, val_ids, config


def run(args: argparse.Namespace) -> Trainer:
    """Train as ``args`` says; under torchrun every process runs this same function."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model, train_ids, val_ids, config = build(args)
    callbacks = [] if args.quiet else [print_record]
    trainer = Trainer(model, train_ids, val_ids, config, callbacks=callbacks)
    if trainer.dist.is_main and not args.quiet:
        print(f"{trainer.dist.world_size} process(es) on {trainer.device}; {model.num_parameters():,} parameters; "
              f"each update sees {config.batch_size * config.grad_accum_steps} x {args.context} tokens", flush=True)
    if args.checkpoint is not None and args.checkpoint.is_file():
        trainer.load_checkpoint()
    trainer.fit()
    if args.dump is not None:
        args.dump.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
        torch.save({"state_dict": state, "history": trainer.history}, args.dump / f"rank{trainer.dist.rank}.pt")
    return trainer


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
