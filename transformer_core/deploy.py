"""Deployment (chapter 16): int8 weights for a smaller model, and ONNX for running it without PyTorch.

**int8 dynamic quantization.** Each ``nn.Linear`` becomes an :class:`Int8Linear`: its weight is
stored as int8 with one float scale per output row (``w ≈ scale[o] · w_int8[o, :]``, symmetric,
``scale = max|w[o, :]| / 127``), a quarter of float32's bytes. At run time each input row (each
token) is quantized the same way, *dynamically* (its own scale, found from the row itself), the two
int8 matrices are multiplied into exact int32 sums, and the product of the two scales turns the sums
back into floats. Embeddings and norms stay in float32. A GPT's head tied to its embedding becomes an
``Int8Linear`` with its own int8 copy of the matrix; the embedding lookup keeps the float matrix.

(``torch.ao.quantization.quantize_dynamic`` did this for years; PyTorch deprecated it in favour of
the separate ``torchao`` package. The few lines here need neither and show every step.)

**ONNX.** :func:`export_onnx` writes a GPT's forward pass (token ids ``(B, T)`` -> logits
``(B, T, V)``) as an ONNX graph with PyTorch's ``torch.export``-based exporter (which needs the
``onnxscript`` package); :class:`OnnxGPT` runs that file in ONNX Runtime (package ``onnxruntime``),
with a ``generate`` like :meth:`GPT.generate`. Neither package is needed for the rest of
transformer_core.
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .gpt import GPT
from .sampling import sample_next_token
from .validation import check_int, check_token_ids

__all__ = [
    "quantize_per_row",
    "Int8Linear",
    "quantize_dynamic_int8",
    "size_on_disk",
    "export_onnx",
    "OnnxGPT",
    "onnx_max_abs_diff",
]


# --------------------------------------------------------------------------- int8
def quantize_per_row(x: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 quantization of each row of ``x`` ``(..., K)``: returns ``(q, scale)``.

    ``q`` is int8 ``(..., K)`` in [-127, 127] and ``scale`` float ``(..., 1)``, with
    ``x ≈ q * scale``; each row's largest ``|x|`` maps to ±127 exactly. An all-zero row gets scale 1.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__ if not isinstance(x, Tensor) else x.dtype}")
    amax = x.detach().abs().amax(dim=-1, keepdim=True)  # (..., 1)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    q = torch.round(x / scale).clamp_(-127, 127).to(torch.int8)  # |x / scale| <= 127 already
    return q, scale


def _int8_matmul(a: Tensor, b_t: Tensor) -> Tensor:
    """``a`` (M, K) int8 @ ``b_t`` (K, N) int8 -> (M, N) int32, exact."""
    if hasattr(torch, "_int_mm"):
        try:
            return torch._int_mm(a, b_t)  # PyTorch's int8 GEMM (int32 accumulation)
        except RuntimeError:  # an older build without the CPU kernel
            pass
    # the same integers in float64: exact while sums stay below 2**53, i.e. always here
    return (a.double() @ b_t.double()).to(torch.int32)


class Int8Linear(nn.Module):
    """A linear layer with int8 weights (one scale per output row) and dynamically quantized inputs.

    ``Int8Linear.from_float(linear)`` converts an ``nn.Linear``. ``forward`` maps ``(..., in)`` to
    ``(..., out)`` like the original, in the input's float dtype. Inference only: there is no
    gradient through the rounding.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))  # (out,)
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8Linear:
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_float converts an nn.Linear, got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        q, scale = quantize_per_row(linear.weight.detach().float())  # (out, in), (out, 1)
        layer.weight_int8.copy_(q)
        layer.weight_scale.copy_(scale.squeeze(1))
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach().float())
        return layer.to(linear.weight.device)

    def dequantized_weight(self) -> Tensor:
        """The float weight this layer computes with, ``(out, in)``: ``w_int8 * scale``."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Int8Linear expects inputs (..., {self.in_features}), got {tuple(x.shape)}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).float()  # (M, in)
        xq, x_scale = quantize_per_row(x2)  # (M, in) int8, (M, 1): one scale per token
        acc = _int8_matmul(xq, self.weight_int8.t())  # (M, out) int32, exact
        out = acc.float() * x_scale * self.weight_scale  # back to floats: both scales
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


def quantize_dynamic_int8(model: nn.Module, skip: tuple[str, ...] = ()) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` replaced by an :class:`Int8Linear`, in eval mode.

    ``skip`` names submodules to keep in float (e.g. ``("lm_head",)``). ``model`` itself is not
    changed. Embeddings and norms stay float; a head tied to the embedding gets its own int8 copy.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_dynamic_int8 needs an nn.Module (e.g. a GPT), got {type(model).__name__}")
    if isinstance(skip, str) or not all(isinstance(s, str) for s in skip):
        raise TypeError(f"skip must be a tuple of module names such as ('lm_head',), got {skip!r}")
    names = {name for name, _ in model.named_modules()}
    unknown = [s for s in skip if s not in names]
    if unknown:
        raise ValueError(f"skip names modules that {type(model).__name__} does not have: {unknown}")
    qmodel = copy.deepcopy(model).eval()
    targets = [(n, m) for n, m in qmodel.named_modules() if isinstance(m, nn.Linear) and n not in skip]
    if not targets:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to quantize")
    for name, linear in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = qmodel.get_submodule(parent_name) if parent_name else qmodel
        setattr(parent, attr, Int8Linear.from_float(linear))
    return qmodel


def size_on_disk(model: nn.Module, path: str | os.PathLike | None = None) -> int:
    """Bytes of ``model``'s state dict saved with ``torch.save`` (to ``path``, or a temporary file).

    Tensors that share storage (a tied head) are written once, as ``torch.save`` does.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"size_on_disk needs an nn.Module, got {type(model).__name__}")
    if path is not None:
        torch.save(model.state_dict(), path)
        return Path(path).stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "model.pt"
        torch.save(model.state_dict(), file)
        return file.stat().st_size


# --------------------------------------------------------------------------- ONNX
def _require(module: str, package: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{what} needs the package {package!r}, which is not installed: pip install {package}"
        ) from err


def export_onnx(model: GPT, path: str | os.PathLike, dynamic: bool = True, example: Tensor | None = None) -> Path:
    """Write ``model``'s forward pass to the ONNX file ``path``: ``idx`` (B, T) int64 -> ``logits`` (B, T, V).

    With ``dynamic`` (default) the batch size and the sequence length may vary at run time (T up to
    ``context_length``); otherwise the graph only takes the shape of ``example`` (default: 2 rows
    of ``min(8, context_length)`` tokens). The weights go into the file itself. The model's config
    is kept in the file's metadata, so that :class:`OnnxGPT` can check its inputs: while the model
    is traced, ``GPT.forward`` checks only the ids' shape (a traced id has no value to check).
    Needs ``onnxscript`` (PyTorch's exporter uses it) and ``onnx``.
    """
    if not isinstance(model, GPT):
        raise TypeError(f"export_onnx exports a transformer_core GPT, got {type(model).__name__}")
    _require("onnxscript", "onnxscript", "ONNX export (torch.onnx.export with dynamo=True)")
    _require("onnx", "onnx", "ONNX export")
    cfg = model.config
    if example is None:
        example = torch.zeros(2, min(8, cfg.context_length), dtype=torch.long)
    check_token_ids(example, cfg.vocab_size, cfg.context_length, name="example")
    path = Path(path)
    dynamic_shapes = None
    if dynamic:
        # named ranges; torch.export treats sizes 0 and 1 of an example as constants, so the
        # example needs at least 2 rows and 2 tokens for a dimension to stay free
        axes = {}
        if example.shape[0] >= 2:
            axes[0] = torch.export.Dim("batch", min=1, max=4096)
        if example.shape[1] >= 2:
            axes[1] = torch.export.Dim("seq", min=1, max=cfg.context_length)
        dynamic_shapes = {"idx": axes}
    was_training = model.training
    model.eval()
    noisy = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=["idx"],
                output_names=["logits"], dynamic_shapes=dynamic_shapes, verbose=False,
            )
    finally:
        noisy.setLevel(level)
        model.train(was_training)
    for key, value in cfg.to_dict().items():
        program.model.metadata_props[f"transformer_core.{key}"] = str(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(path, external_data=False)
    return path


class OnnxGPT:
    """A GPT exported by :func:`export_onnx`, run by ONNX Runtime on the CPU.

    ``OnnxGPT(path)(idx)`` returns the logits ``(B, T, V)`` as a torch tensor;
    ``generate(idx, max_new_tokens, ...)`` extends ``idx`` as :meth:`GPT.generate` does (without a KV
    cache: every step runs the graph on the last ``context_length`` tokens).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        ort = _require("onnxruntime", "onnxruntime", "Running an ONNX model")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX file at {path}: write one with export_onnx(model, path)")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 -- ONNX Runtime raises its own exception types
            raise ValueError(f"{path} is not a readable ONNX model: {err}") from err
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.vocab_size = int(meta["transformer_core.vocab_size"])
            self.context_length = int(meta["transformer_core.context_length"])
        except KeyError as err:
            raise ValueError(f"{path} was not written by transformer_core.deploy.export_onnx (no config)") from err
        inputs = self.session.get_inputs()
        self._input = inputs[0].name
        self.input_shape = inputs[0].shape  # e.g. ['batch', 'seq'] (names: dynamic) or [2, 8]

    def __call__(self, idx: Tensor) -> Tensor:
        check_token_ids(idx, self.vocab_size, self.context_length)
        fixed = list(self.input_shape)
        for axis, (want, have) in enumerate(zip(fixed, idx.shape, strict=True)):
            if isinstance(want, int) and want != have:
                raise ValueError(
                    f"this ONNX model was exported for idx of shape {tuple(fixed)}, got {tuple(idx.shape)} "
                    f"(axis {axis}); export with dynamic=True for other shapes"
                )
        (logits,) = self.session.run(None, {self._input: idx.detach().cpu().long().numpy()})
        return torch.from_numpy(logits)

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, **sampling) -> Tensor:
        """Extend ``idx`` ``(B, T)`` by ``max_new_tokens`` tokens; ``(B, T + max_new_tokens)``.

        ``sampling``: ``temperature``, ``top_k``, ``top_p``, ``greedy``, ``generator``, as for
        :meth:`GPT.generate` (see :func:`~transformer_core.sampling.sample_next_token`).
        """
        check_token_ids(idx, self.vocab_size)
        check_int("max_new_tokens", max_new_tokens, minimum=0)
        out = idx
        for _ in range(max_new_tokens):
            logits = self(out[:, -self.context_length :])[:, -1]  # (B, V)
            out = torch.cat([out, sample_next_token(logits, **sampling)], dim=1)
        return out


def onnx_max_abs_diff(model: GPT, onnx_model: OnnxGPT | str | os.PathLike, idx: Tensor) -> float:
    """The largest ``|logit|`` difference between ``model`` in PyTorch and its ONNX export on ``idx``."""
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a transformer_core GPT, got {type(model).__name__}")
    runner = onnx_model if isinstance(onnx_model, OnnxGPT) else OnnxGPT(onnx_model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(idx).float()
    finally:
        model.train(was_training)
    return float((runner(idx) - ref).abs().max())
