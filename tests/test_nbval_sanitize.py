"""The nbval sanitize rules mask what varies between runs, and nothing a chapter means to show.

nbval reads tests/nbval_sanitize.cfg with its own parser; these tests use that parser too, so a
rule that nbval would silently drop (a comment between "regex:" and "replace:") fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from nbval.plugin import get_sanitize_patterns

CFG = Path(__file__).with_name("nbval_sanitize.cfg")


def rules() -> list[tuple[str, str]]:
    return get_sanitize_patterns(CFG.read_text(encoding="utf-8"))


def sanitize(text: str) -> str:
    for regex, replace in dict(rules()).items():  # nbval keeps them in an ordered dict
        text = re.sub(regex, replace, text)
    return text


def test_every_rule_is_read_by_nbval():
    text = CFG.read_text(encoding="utf-8")
    written = len(re.findall(r"^regex: ", text, flags=re.MULTILINE))
    assert len(rules()) == written, (
        f"{CFG.name}: {written} 'regex:' lines but nbval reads {len(rules())} rules; each "
        "'regex:' line must be followed directly by its 'replace:' line"
    )
    for regex, _ in rules():
        re.compile(regex)


@pytest.mark.parametrize(
    "raw, expected",
    [
        # the book's convention for anything measured
        ("KV cache: 3.1x faster (measured: 0.42 s)", "KV cache: 3.1x faster (measured: TIME)"),
        ("throughput (measured: 12.3k tokens/s)", "throughput (measured: TIME)"),
        # tqdm
        (
            "train: 100%|██████████| 200/200 [00:03<00:00, 55.21it/s, loss=2.31]",
            "train: 100%|██████████| 200/200 [TQDM-TIME]",
        ),
        ("  0%|          | 0/10 [00:00<?, ?it/s]", "  0%|          | 0/10 [TQDM-TIME]"),
        ("epoch: 50%|█████     | 1/2 [1:02:03<1:02:03]", "epoch: 50%|█████     | 1/2 [TQDM-TIME]"),
        ("1.5ktok/s and 3.2s/it and 800 samples/s", "RATE and RATE and RATE"),
        # IPython magics
        (
            "CPU times: user 1.2 ms, sys: 0 ns, total: 1.2 ms\nWall time: 3.4 ms",
            "CPU times: TIME\nWall time: TIME",
        ),
        (
            "1.23 ms ± 45.6 µs per loop (mean ± std. dev. of 7 runs, 1,000 loops each)",
            "TIMEIT",
        ),
        ("training took 12.5 s", "training took TIME"),
        ("<function f at 0x7f3a2b1c9d30>", "<function f at 0xADDRESS>"),
        ("saved at 2026-11-27 08:06:58.123456", "saved at DATETIME"),
        ("run 2026-11-27T08:06:58Z", "run DATETIME"),
        (
            "/tmp/ipykernel_4242/1234567.py:3: UserWarning: careful",
            "/tmp/ipykernel_PID/CELL.py:3: UserWarning: careful",
        ),
        ("wrote /tmp/tmpab_12cd/ckpt.pt", "wrote /tmp/TMPDIR/ckpt.pt"),
        (
            "/home/me/.venv/lib/python3.11/site-packages/torch/nn/modules/module.py:12: Warning",
            "SITE-PACKAGES/torch/nn/modules/module.py:12: Warning",
        ),
        (
            "/srv/clone/transformer_core/gpt.py:40: UserWarning",
            "REPO/transformer_core/gpt.py:40: UserWarning",
        ),
        ("torch threads: 2, CPU cores: 16", "torch threads: N, CPU cores: N"),
        ("using 4 threads", "using N threads"),
    ],
)
def test_masks_what_varies(raw, expected):
    assert sanitize(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "tensor([[0.1234, 0.8766]])",
        "torch.Size([2, 8, 64])",
        "loss 2.3026 after 200 steps",
        "<Figure size 640x480 with 2 Axes>",
        "The 2017 paper trains for 100,000 steps (12 hours on 8 GPUs).",
        "d_model=512, n_head=8, d_ff=2048",
        "64 tokens/step, 12 layers",
        "vocab_size: 96, context_length: 128",
        "0x1F",
    ],
)
def test_keeps_what_a_chapter_means_to_show(text):
    assert sanitize(text) == text
