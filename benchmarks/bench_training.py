"""Training and generation speed of transformer_core's GPT against two reference implementations.

    python benchmarks/bench_training.py            # the full run (a few minutes on two cores)
    python benchmarks/bench_training.py --quick    # a short, rougher run
    python benchmarks/bench_training.py --record   # ... and write the results into benchmarks/README.md
    python benchmarks/bench_training.py --device cuda   # only on the GPU (default: CPU, and CUDA if present)

Contenders, all with the same shape, GELU, pre-norm, a tied embedding, std-0.02 initialisation and
denormal flushing (see benchmarks/README.md for why):

* ``transformer_core`` -- :class:`transformer_core.GPT`;
* ``nn.TransformerEncoder`` -- a GPT built from PyTorch's own encoder layers with a causal mask;
* ``HF GPT-2`` -- Hugging Face's ``GPT2LMHeadModel``, randomly initialised, SDPA attention.

Training: tokens per second of forward + backward + AdamW step. Each contender runs a few warm-up
updates, then the contenders take turns (round-robin, so that a slow moment of a noisy machine hurts
all of them alike) and the median of the timed rounds counts. Generation: 256 new tokens, batch 1,
greedy, from a 16-token prompt, with and without the KV cache, and HF's ``generate``. Model FLOP
utilisation: the training FLOP/s achieved over this machine's measured float32 matmul rate.

Where CUDA is available the same measurements run on the GPU too, in a section of their own (there the
mixed-precision row uses float16 autocast with a GradScaler, as the Trainer does on CUDA, and every
timing waits for the GPU to finish).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from transformer_core import GPT, GPTConfig

README = Path(__file__).with_name("README.md")
START, END = "<!-- results:start -->", "<!-- results:end -->"


@dataclass(frozen=True)
class Shape:
    name: str
    vocab_size: int
    n_layer: int
    d_model: int
    n_head: int
    context: int
    batch: int

    @property
    def tokens(self) -> int:
        return self.batch * self.context


SMALL = Shape("small", vocab_size=96, n_layer=4, d_model=256, n_head=4, context=128, batch=16)
LARGE = Shape("large", vocab_size=96, n_layer=6, d_model=384, n_head=6, context=256, batch=8)


# --------------------------------------------------------------------------- the contenders
def init_gpt2_style(model: nn.Module) -> nn.Module:
    """N(0, 0.02) for every matrix, zeros for biases, ones for norm gains: GPT-2's init for all."""
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            nn.init.normal_(p, std=0.02)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
        else:
            nn.init.ones_(p)
    return model


class TorchEncoderGPT(nn.Module):
    """A GPT from ``nn.TransformerEncoder``: pre-norm layers, causal mask, tied head, learned positions."""

    def __init__(self, s: Shape, context: int) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(s.vocab_size, s.d_model)
        self.pos_emb = nn.Embedding(context, s.d_model)
        layer = nn.TransformerEncoderLayer(
            s.d_model, s.n_head, 4 * s.d_model, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, s.n_layer, norm=nn.LayerNorm(s.d_model), enable_nested_tensor=False)
        self.head = nn.Linear(s.d_model, s.vocab_size, bias=False)
        init_gpt2_style(self)
        self.head.weight = self.tok_emb.weight
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))  # (B, T, D)
        x = self.encoder(x, mask=self.mask[:T, :T], is_causal=True)
        return self.head(x)  # (B, T, V)


def make_core(s: Shape, context: int) -> GPT:
    return GPT(GPTConfig(vocab_size=s.vocab_size, context_length=context, n_layer=s.n_layer, n_head=s.n_head,
                         d_model=s.d_model, activation="gelu", dropout=0.0))


def make_hf(s: Shape, context: int) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    config = GPT2Config(
        vocab_size=s.vocab_size, n_positions=context, n_embd=s.d_model, n_layer=s.n_layer, n_head=s.n_head,
        activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        # no end-of-text token: generation must run all its steps, and no token may be suppressed
        # (HF's min_new_tokens would otherwise forbid one token that greedy decoding might pick)
        bos_token_id=None, eos_token_id=None, pad_token_id=0,
    )
    return GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")


class HFLogits(nn.Module):
    """``model(idx) -> logits`` for HF's model, so every contender trains through the same code."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=idx, use_cache=False).logits


# --------------------------------------------------------------------------- measuring
def training_step_fn(model: nn.Module, s: Shape, seed: int = 0, amp: bool = False,
                     device: str = "cpu") -> Callable[[], None]:
    """One update of ``model`` on a fixed random batch: forward, cross-entropy, backward, AdamW.

    ``amp``: run forward and backward under autocast (the weights stay float32): bfloat16 on the CPU,
    float16 with a GradScaler on CUDA."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(s.vocab_size, (s.batch, s.context), generator=g).to(device)
    y = torch.randint(s.vocab_size, (s.batch, s.context), generator=g).to(device)
    model.to(device)
    amp_dtype = torch.float16 if device == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device == "cuda")
    # the same optimizer for everyone (the fused kernel where this PyTorch has it)
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        with torch.autocast(device, dtype=amp_dtype, enabled=amp):
            logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step


def trainer_step_fn(model: GPT, s: Shape, device: str = "cpu") -> Callable[[], None]:
    """One update through transformer_core's Trainer (batch sampling, clipping and schedule included)."""
    from transformer_core.training import TrainConfig, Trainer

    data = torch.randint(s.vocab_size, (200_000,))
    config = TrainConfig(max_steps=10**9, batch_size=s.batch, lr=1e-4, warmup_steps=0, eval_interval=0,
                         log_interval=10**9, progress=False, device=device)
    trainer = Trainer(model, data, config=config)
    trainer.model.train()
    return trainer.train_step


def synchronize(device: str) -> None:
    """Wait for the GPU: CUDA kernels run asynchronously, a timer would stop before they finish."""
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved_medians(fns: dict[str, Callable[[], None]], warmup: int, rounds: int, iters: int,
                        device: str = "cpu") -> dict[str, float]:
    """Median seconds per call of each function; the functions take turns in every round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            t0 = time.perf_counter()
            for _ in range(iters):
                fns[name]()
            synchronize(device)
            times[name].append((time.perf_counter() - t0) / iters)
    return {name: statistics.median(ts) for name, ts in times.items()}


PEAK_N = 2048
PEAK = "(float32 matmul)"


def matmul_fn(n: int = PEAK_N, device: str = "cpu") -> Callable[[], None]:
    """An (n x n) @ (n x n) float32 product: 2·n³ FLOPs, the machine's best case."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return lambda: torch.mm(a, b)


def training_flops_per_token(model: GPT, s: Shape) -> float:
    """6·N + 12·L·T·D (the PaLM paper's estimate, appendix B).

    N counts the parameters used in matrix multiplies: all but the position embedding (a lookup);
    the token embedding is counted once, for the tied output head's multiply. 6·N = 2 FLOPs per
    multiply-add, times 3 for forward + backward. 12·L·T·D is attention's own work: q·kᵀ and
    weights·v are 2·T·D FLOPs each per token and layer forward, times 3 for the backward pass
    (counted over all T keys, although a causal mask needs only half of them).
    """
    n = model.num_parameters() - model.pos_emb.weight.numel()
    return 6 * n + 12 * s.n_layer * s.context * s.d_model


def generation_fns(s: Shape, new_tokens: int, prompt_len: int,
                   device: str = "cpu") -> tuple[dict[str, Callable[[], torch.Tensor]], bool]:
    """Greedy generation with transformer_core (cache on/off) and HF, all with the same weights."""
    context = prompt_len + new_tokens
    hf = make_hf(s, context).eval()
    core = GPT.from_hf_gpt2(hf).eval().to(device)  # the very same weights: the tokens must agree too
    hf.to(device)
    prompt = torch.randint(s.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(0)).to(device)
    fns = {
        "transformer_core, KV cache": lambda: core.generate(prompt, new_tokens, greedy=True, use_cache=True),
        "transformer_core, no cache": lambda: core.generate(prompt, new_tokens, greedy=True, use_cache=False),
        "HF generate, KV cache": lambda: hf.generate(
            prompt, attention_mask=torch.ones_like(prompt), do_sample=False, use_cache=True,
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0,
        ),
    }
    with torch.no_grad():
        outs = {name: fn() for name, fn in fns.items()}
    lengths_ok = all(o.shape == (1, context) for o in outs.values())
    same = lengths_ok and all(torch.equal(o, outs["transformer_core, KV cache"]) for o in outs.values())
    return fns, same


# --------------------------------------------------------------------------- the report
def gpu() -> str:
    """The GPU's name, memory and compute capability."""
    p = torch.cuda.get_device_properties(0)
    return f"{p.name} ({p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor})"


def machine() -> str:
    """The CPU's name, family/model and whether it has bfloat16 instructions (from /proc/cpuinfo)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown CPU"
    flags = info.get("flags", "").split()
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    bf16 = ", bfloat16 instructions" if "avx512_bf16" in flags or "amx_bf16" in flags else ""
    return (f"{info.get('model name', 'unknown CPU')} (family {info.get('cpu family', '?')}, "
            f"model {info.get('model', '?')}; {vector}{bf16})")


def run(args: argparse.Namespace, device: str = "cpu") -> str:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    torch.set_flush_denormal(True)  # the same for all: no contender pays for denormal floats
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    quick = args.quick
    rounds, iters, warmup = (3, 1, 1) if quick else (7, 2, 3)
    shapes = [SMALL] if quick else [SMALL, LARGE]
    amp_name = "fp16 autocast" if device == "cuda" else "bf16 autocast"
    lines = []

    def out(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    if device == "cuda":
        out(f"- device: {gpu()}; float32 matmuls without TF32 (PyTorch's default)")
    out(f"- machine: {machine()}; {threads} torch thread{'s' if threads > 1 else ''} "
        f"of {os.cpu_count()} cores")
    out(f"- torch {torch.__version__}, Python {platform.python_version()}, "
        f"transformers {_version('transformers')}; date {datetime.date.today().isoformat()}")
    out(f"- mode: {'--quick' if quick else 'full'} (training: {warmup} warm-up updates, median of {rounds} "
        f"interleaved rounds of {iters} updates{'' if quick else '; large shape: 2, 5 rounds of 1'}; "
        f"generation: median of {args.gen_rounds} rounds)")
    out(f"- load average at the start (1, 5, 15 min): {_load()} -- above the core count means other "
        f"programs competed for the CPU and every number below is lower than this machine can do")
    out()

    verdicts, peaks = [], []
    out("#### Training (forward + backward + AdamW)")
    out()
    out("| shape | model | tokens/s | vs nn.TransformerEncoder | vs HF GPT-2 | MFU |")
    out("|---|---|---:|---:|---:|---:|")
    for s in shapes:
        torch.manual_seed(0)
        core = make_core(s, s.context)
        models = {
            "transformer_core": core,
            "nn.TransformerEncoder": TorchEncoderGPT(s, s.context),
            "HF GPT-2": HFLogits(make_hf(s, s.context)),
        }
        fns = {name: training_step_fn(m, s, device=device) for name, m in models.items()}
        if not quick:
            torch.manual_seed(0)
            fns["transformer_core, via Trainer"] = trainer_step_fn(make_core(s, s.context), s, device=device)
            torch.manual_seed(0)
            fns[f"transformer_core, {amp_name}"] = training_step_fn(make_core(s, s.context), s, amp=True,
                                                                     device=device)
        # The matmul peak takes its turns with the models, so that it meets the same machine they do.
        fns[PEAK] = matmul_fn(device=device)
        # the large shape's updates take seconds each: fewer of them still give a stable median
        secs = (interleaved_medians(fns, warmup, rounds, iters, device) if s is SMALL
                else interleaved_medians(fns, 2, 5, 1, device))
        peak = 2 * PEAK_N**3 / secs.pop(PEAK)
        peaks.append(f"{s.name}: {peak / 1e9:.1f}")
        tps = {name: s.tokens / t for name, t in secs.items()}
        flops = training_flops_per_token(core, s)
        label = f"{s.name}: L{s.n_layer} D{s.d_model} H{s.n_head} T{s.context} B{s.batch}"
        for name, v in tps.items():
            vs_torch = v / tps["nn.TransformerEncoder"]
            vs_hf = v / tps["HF GPT-2"]
            mfu = v * flops / peak
            out(f"| {label} | {name} | {v:,.0f} | {vs_torch:.2f}x | {vs_hf:.2f}x | {100 * mfu:.0f}% |")
        verdicts.append((f"training ({s.name}) >= 1.0x nn.TransformerEncoder",
                         tps["transformer_core"] / tps["nn.TransformerEncoder"], 1.0))
        verdicts.append((f"training ({s.name}) >= 1.2x HF GPT-2", tps["transformer_core"] / tps["HF GPT-2"], 1.2))
    out()
    out(f"MFU = tokens/s x (6·N + 12·L·T·D) / matmul peak; peak = median rate of a {PEAK_N} x {PEAK_N} "
        f"float32 `torch.mm`, timed in turn with the models (GFLOP/s, {'; '.join(peaks)}); "
        f"N = parameters in matrix multiplies "
        f"(transformer_core small: {training_flops_per_token(make_core(SMALL, SMALL.context), SMALL) / 1e6:.1f} "
        f"MFLOP per token).")
    out()

    out(f"#### Generation ({args.new_tokens} new tokens, batch 1, greedy, {args.prompt_len}-token prompt, "
        f"small shape with context {args.prompt_len + args.new_tokens})")
    out()
    fns, same = generation_fns(SMALL, args.new_tokens, args.prompt_len, device)
    with torch.no_grad():
        secs = interleaved_medians(fns, warmup=0 if device == "cpu" else 1, rounds=args.gen_rounds, iters=1,
                                   device=device)
    out("| method | seconds | tokens/s | speed-up over no cache |")
    out("|---|---:|---:|---:|")
    base = secs["transformer_core, no cache"]
    for name, t in secs.items():
        out(f"| {name} | {t:.3f} | {args.new_tokens / t:,.0f} | {base / t:.1f}x |")
    out()
    out(f"All three produce the same {args.new_tokens} tokens (same weights, greedy): {'yes' if same else 'NO'}")
    out()
    cache = secs["transformer_core, KV cache"]
    verdicts.append(("KV cache >= 4x faster than no cache", base / cache, 4.0))
    verdicts.append(("KV cache no slower than HF generate (ratio = HF time / ours)",
                     secs["HF generate, KV cache"] / cache, 1.0))

    out("#### Goals")
    out()
    out("| goal | measured | met |")
    out("|---|---:|:---:|")
    for goal, ratio, target in verdicts:
        out(f"| {goal} | {ratio:.2f}x | {'yes' if ratio >= target else 'no'} |")
    out()
    out(f"Load average at the end: {_load()}.")
    return "\n".join(lines)


def _load() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - a report line, never a reason to fail
        return "not installed"


def record(results: str) -> None:
    """Replace the results section of benchmarks/README.md (between the two markers)."""
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n## Results\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n## Results\n\n{START}\n{END}\n"
    section = f"{START}\n{results}\n{END}"
    text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    README.write_text(text)
    print(f"results written to {README}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small shape only, fewer rounds")
    p.add_argument("--record", action="store_true", help="write the results into benchmarks/README.md")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--gen-rounds", type=int, default=None)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto (default): the CPU, then the GPU too where CUDA is available")
    args = p.parse_args(argv)
    if args.gen_rounds is None:
        args.gen_rounds = 1 if args.quick else 3
    if not math.isfinite(args.new_tokens) or args.new_tokens < 1:
        sys.exit("--new-tokens must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: this PyTorch sees no CUDA GPU (torch.cuda.is_available() is False); "
                 "use --device cpu, or install a CUDA build of torch on a machine with a GPU")
    devices = {"auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
               "cpu": ["cpu"], "cuda": ["cuda"]}[args.device]
    sections = []
    for device in devices:
        title = "### CPU" if device == "cpu" else "### GPU (CUDA)"
        print(title, flush=True)
        sections.append(f"{title}\n\n{run(args, device)}")
    results = "\n\n".join(sections)
    if args.record:
        record(results)


if __name__ == "__main__":
    main()
