"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo), or alone (one process):
a mixture-of-experts GPT whose last expert never gets a token trains a few updates; each process
writes its final parameters and how many tokens each expert got to OUT/rank<r>.pt."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from transformer_core import distributed as D
from transformer_core.moe import MoEFeedForward, MoEGPT, MoEGPTConfig, moe_language_model_loss
from transformer_core.training import TrainConfig, Trainer

SHUT_OUT = 3  # the expert that no token reaches


def shut_out_last_expert(module, inputs, logits):
    return logits - 1e4 * (torch.arange(logits.shape[-1]) == SHUT_OUT).to(logits.dtype)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MoEGPT(MoEGPTConfig(vocab_size=13, context_length=16, n_layer=1, n_head=2, d_model=16,
                                n_experts=4, expert_top_k=1, dropout=0.0,
                                # the balance loss multiplies two batch means: over half a batch on
                                # each rank it is not the whole batch's, so compare without it
                                balance_loss_coef=0.0))
    loads = []
    for m in model.modules():
        if isinstance(m, MoEFeedForward):
            m.router.register_forward_hook(shut_out_last_expert)
            m.register_forward_hook(lambda mod, i, o: loads.append(mod.routing.load.clone()))
    ids = torch.arange(2000) * 7 % 13
    config = TrainConfig(max_steps=3, batch_size=8, lr=1e-2, warmup_steps=0, eval_interval=0,
                         progress=False, seed=0)
    trainer = Trainer(model, ids, config=config, loss_fn=moe_language_model_loss)
    trainer.fit()
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"params": {k: v.detach() for k, v in model.state_dict().items()},
                "load": torch.stack(loads)}, out / f"rank{trainer.dist.rank}.pt")
    D.cleanup_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
