"""The benchmark script's pieces, on a tiny shape: they run, agree, and refuse a GPU that is not there.

The benchmark itself (benchmarks/bench_training.py) takes minutes and its numbers depend on the
machine; these tests only check that its measurements measure the right thing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from _optional import not_here

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_training as bench  # noqa: E402

TINY = bench.Shape("tiny", vocab_size=20, n_layer=2, d_model=32, n_head=2, context=16, batch=4)


def test_every_contender_trains_on_the_same_batch():
    torch.manual_seed(0)
    models = {
        "transformer_core": bench.make_core(TINY, TINY.context),
        "nn.TransformerEncoder": bench.TorchEncoderGPT(TINY, TINY.context),
        "HF GPT-2": bench.HFLogits(bench.make_hf(TINY, TINY.context)),
    }
    for name, model in models.items():
        before = [p.detach().clone() for p in model.parameters()]
        step = bench.training_step_fn(model, TINY)
        step()
        changed = sum(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
        assert changed == len(before), f"{name}: an update left {len(before) - changed} parameters unchanged"


def test_mixed_precision_step_runs_on_the_cpu():
    model = bench.make_core(TINY, TINY.context)
    before = model.tok_emb.weight.detach().clone()
    bench.training_step_fn(model, TINY, amp=True)()
    assert model.tok_emb.weight.dtype == torch.float32  # autocast leaves the weights in float32
    assert not torch.equal(before, model.tok_emb.weight)


def test_generation_contenders_produce_the_same_tokens():
    fns, same = bench.generation_fns(TINY, new_tokens=12, prompt_len=4)
    assert set(fns) == {"transformer_core, KV cache", "transformer_core, no cache", "HF generate, KV cache"}
    assert same


def test_interleaved_medians_times_every_function():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1
        return fn

    secs = bench.interleaved_medians({"a": make("a"), "b": make("b")}, warmup=1, rounds=3, iters=2)
    assert set(secs) == {"a", "b"} and all(s >= 0 for s in secs.values())
    assert calls == {"a": 7, "b": 7}  # 1 warm-up + 3 rounds x 2


@not_here(torch.cuda.is_available(), "this machine has a GPU")
def test_asking_for_a_gpu_that_is_not_there_says_so():
    with pytest.raises(SystemExit, match="sees no CUDA GPU"):
        bench.main(["--device", "cuda"])
