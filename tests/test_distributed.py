"""Data parallelism: two processes under torchrun (gloo, CPU) train exactly like one process on the
whole batch."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from _optional import needs

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_ddp.py"
# a tiny model, a few updates; accumulation (no_sync), evaluation and dropout-free for comparison
ARGS = ["--steps", "4", "--batch-size", "8", "--grad-accum", "2", "--context", "32", "--n-layer", "1",
        "--d-model", "32", "--n-head", "4", "--eval-interval", "2", "--eval-steps", "1", "--log-interval", "1",
        "--quiet"]

pytestmark = needs(dist.is_available() and dist.is_gloo_available(), "needs torch.distributed with gloo")


def load_script():
    spec = importlib.util.spec_from_file_location("train_ddp", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Run the script with torchrun on 2 processes; each rank dumps its final parameters."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
           *ARGS, "--dump", str(out / "dump"), "--checkpoint", str(out / "run.pt")]
    # --standalone: a rendezvous on localhost at a free port, so parallel test runs do not collide
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(out / "dump" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    return ranks, out


@pytest.fixture
def single_process():
    """The same run in this process (WORLD_SIZE unset): one process, the whole batch."""
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    torch.set_num_threads(1)
    module = load_script()
    trainer = module.run(module.parse_args(ARGS))
    yield trainer
    torch.set_rng_state(state)
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)


def test_ranks_end_with_identical_parameters(ddp_run):
    (rank0, rank1), _ = ddp_run
    assert rank0["state_dict"].keys() == rank1["state_dict"].keys()
    for name, p0 in rank0["state_dict"].items():
        assert torch.equal(p0, rank1["state_dict"][name]), name  # DDP averaged the same gradients
    # losses were averaged over the ranks before logging (only the measured speed may differ)
    assert [{**r, "tokens_per_s": 0} for r in rank0["history"]] == [{**r, "tokens_per_s": 0} for r in rank1["history"]]


def test_ddp_matches_one_process_on_the_combined_batch(ddp_run, single_process):
    (rank0, _), _ = ddp_run
    single = {k: v.detach() for k, v in single_process.model.state_dict().items()}
    start = load_script()  # the parameters moved: the comparison is not trivially true
    fresh, *_ = start.build(start.parse_args(ARGS))
    moved = max((single[k] - v).abs().max().item() for k, v in fresh.state_dict().items())
    assert moved > 1e-3
    for name, p in rank0["state_dict"].items():
        torch.testing.assert_close(p, single[name], rtol=0, atol=1e-5, msg=name)
    assert len(rank0["history"]) == len(single_process.history) == 4
    for a, b in zip(rank0["history"], single_process.history, strict=True):
        assert a["step"] == b["step"] and a["lr"] == b["lr"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert (a["val_loss"] is None) == (b["val_loss"] is None)
        if a["val_loss"] is not None:
            assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)


def test_only_rank_0_writes_a_checkpoint_with_every_ranks_random_state(ddp_run):
    _, out = ddp_run
    state = torch.load(out / "run.pt", weights_only=True)
    assert state["world_size"] == 2 and state["step"] == 4
    assert len(state["rng"]["torch"]) == 2
    assert not torch.equal(*state["rng"]["torch"])  # each rank has its own dropout generator
    assert sorted(p.name for p in out.iterdir()) == ["dump", "run.pt"]


# ------------------------------------------------------------- a mixture of experts under DDP
MOE_WORKER = ROOT / "tests" / "_ddp_moe_worker.py"


def test_moe_gpt_with_an_expert_that_gets_no_tokens_trains_under_torchrun(tmp_path):
    """DDP waits for a gradient of every parameter; an expert that no token reaches has none on
    that rank. The trainer lets DDP find such parameters, and the two-process run trains exactly
    like one process on the whole batch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(MOE_WORKER), str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = subprocess.run([sys.executable, str(MOE_WORKER), str(tmp_path / "one")], env=env,
                            capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]

    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    alone = torch.load(tmp_path / "one" / "rank0.pt", weights_only=True)
    for r in ranks + [alone]:
        assert (r["load"][:, 3] == 0).all() and (r["load"][:, :3].sum(-1) > 0).all()
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), f"the ranks disagree on {name}"
        torch.testing.assert_close(value, alone["params"][name], rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")
