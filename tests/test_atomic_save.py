"""Nothing lost: a save that fails or is killed half-way leaves the previous file loadable.

Both writers of the package, ``save_model`` (a model file) and ``Trainer.save_checkpoint`` (a
training checkpoint), go through one helper, ``transformer_core.checkpoint.atomic_torch_save``:
write a temporary file beside the destination, fsync it, rename it over the destination.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import transformer_core.checkpoint as checkpoint
from transformer_core import GPT, GPTConfig, load_model
from transformer_core.training import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
IDS = torch.arange(400) % 11


def tiny(seed=0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.tiny(vocab_size=11, context_length=16, **overrides))


def trainer(path) -> Trainer:
    return Trainer(tiny(), IDS, config=TrainConfig(max_steps=4, batch_size=2, warmup_steps=0,
                                                   eval_interval=0, progress=False,
                                                   checkpoint_path=path))


def save(kind: str, path: Path, seed: int = 0) -> None:
    if kind == "model":
        tiny(seed).save(path)
    else:
        t = trainer(path)
        t.fit(until=1 + seed)
        t.save_checkpoint()


def check_loads(kind: str, path: Path) -> None:
    if kind == "model":
        assert isinstance(load_model(path), GPT)
    else:
        assert trainer(path).load_checkpoint().step == 1


KINDS = ["model", "checkpoint"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_bytes_are_fsynced_before_the_rename(tmp_path, monkeypatch, kind):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.stat(src).st_ino))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save(kind, tmp_path / "out.pt")
    renamed = [ino for what, ino in events if what == "replace"]
    assert len(renamed) == 1, events
    first_replace = events.index(("replace", renamed[0]))
    assert ("fsync", renamed[0]) in events[:first_replace], (
        f"the temporary file was renamed over the destination without an fsync first: {events}"
    )
    assert events[first_replace + 1:], "the folder is not fsynced after the rename"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_write_that_fails_half_way_keeps_the_previous_file(tmp_path, monkeypatch, kind, failure):
    path = tmp_path / "out.pt"
    save(kind, path)
    before = path.read_bytes()
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(0)
        f.truncate(f.tell() + 200)  # half a file on disk, as a crash mid-write leaves it
        raise failure

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(type(failure)):
        save(kind, path, seed=1)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.pt"], "a temporary file was left behind"
    check_loads(kind, path)


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import torch
    sys.path.insert(0, sys.argv[4])
    import test_atomic_save as t

    kind, path, marker = sys.argv[1:4]
    real_save = torch.save

    def stall_half_way(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(0)
        f.truncate(300)
        f.flush()
        open(marker, "w").close()  # tell the test: half a file is written, kill me now
        time.sleep(120)

    torch.save = stall_half_way
    t.save(kind, t.Path(path), seed=1)
    """
)


@pytest.mark.parametrize("kind", KINDS)
def test_a_save_killed_half_way_keeps_the_previous_file(tmp_path, kind):
    path, marker = tmp_path / "out.pt", tmp_path.parent / f"{tmp_path.name}.marker"
    save(kind, path)
    before = path.read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, kind, str(path), str(marker), str(ROOT / "tests")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the writer never reached the middle of its save"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # no finally, no clean-up: as a power cut or an OOM kill
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert path.read_bytes() == before, "the killed save damaged the previous file"
    check_loads(kind, path)
    strays = sorted(p.name for p in tmp_path.iterdir() if p.name != "out.pt")
    assert all(s.startswith(".out.pt.") and s.endswith(".tmp") for s in strays), strays


def test_both_writers_share_one_helper():
    from transformer_core import training

    assert training.atomic_torch_save is checkpoint.atomic_torch_save
