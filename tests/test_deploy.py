"""Deployment (transformer_core.deploy): int8 quantization and ONNX export of a GPT."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from _optional import require_module
from torch import nn
from torch.testing import assert_close

from transformer_core import GPT, GPTConfig
from transformer_core.deploy import (
    Int8Linear,
    OnnxGPT,
    export_onnx,
    onnx_max_abs_diff,
    quantize_dynamic_int8,
    quantize_per_row,
    size_on_disk,
)


def _model(**overrides) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=40, context_length=24, n_layer=2, n_head=4, d_model=64)
    return GPT(GPTConfig(**{**cfg, **overrides})).eval()


def _ids(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 40, (B, T), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------ int8
def test_quantize_per_row_round_trip():
    x = torch.randn(5, 16) * torch.arange(1, 6)[:, None]
    x[2] = 0.0
    q, scale = quantize_per_row(x)
    assert q.dtype == torch.int8 and scale.shape == (5, 1)
    assert int(q.abs().max()) == 127
    # rounding to the nearest step: error at most half a step per row
    assert ((q.float() * scale - x).abs() <= scale / 2 + 1e-6).all()
    assert torch.equal(q[2], torch.zeros(16, dtype=torch.int8))


def test_int8_linear_matches_its_dequantized_float_version():
    torch.manual_seed(0)
    lin = nn.Linear(48, 20)
    q = Int8Linear.from_float(lin)
    x = torch.randn(3, 7, 48)
    xq, xs = quantize_per_row(x.reshape(-1, 48))
    want = (xq.float() * xs) @ q.dequantized_weight().t() + lin.bias  # the same math in float
    assert_close(q(x), want.reshape(3, 7, 20).detach(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        err = (q(x) - lin(x)).abs().max()
        assert err < 0.05 * lin(x).abs().max()
    assert q.weight_int8.dtype == torch.int8
    with pytest.raises(ValueError, match="48"):
        q(torch.randn(2, 5))


def test_quantized_gpt_close_to_float_and_smaller():
    model = _model(context_length=32, d_model=128)
    qmodel = quantize_dynamic_int8(model)
    assert isinstance(qmodel.lm_head, Int8Linear) and isinstance(qmodel.blocks[0].mlp.fc1, Int8Linear)
    assert isinstance(model.lm_head, nn.Linear)  # the original is untouched
    assert model.lm_head.weight is model.tok_emb.weight
    x = _ids(4, 32)
    with torch.no_grad():
        ref, out = model(x), qmodel(x)
    # stated tolerance: within 2% of the logits' range
    assert (out - ref).abs().max() < 0.02 * (ref.max() - ref.min())
    ref_loss = nn.functional.cross_entropy(ref[:, :-1].flatten(0, 1), x[:, 1:].flatten())
    q_loss = nn.functional.cross_entropy(out[:, :-1].flatten(0, 1), x[:, 1:].flatten())
    assert abs(float(q_loss - ref_loss)) < 0.01
    assert size_on_disk(qmodel) < 0.45 * size_on_disk(model)
    # generation works and starts the same way as the float model's, greedy
    assert qmodel.generate(x[:1, :4], 4, greedy=True).shape == (1, 8)


def test_quantize_skip_and_errors(tmp_path):
    model = _model()
    kept = quantize_dynamic_int8(model, skip=("lm_head",))
    assert isinstance(kept.lm_head, nn.Linear) and kept.lm_head.weight is kept.tok_emb.weight
    with pytest.raises(TypeError, match="nn.Module"):
        quantize_dynamic_int8("model")
    with pytest.raises(ValueError, match="does not have"):
        quantize_dynamic_int8(model, skip=("head",))
    with pytest.raises(TypeError, match="tuple"):
        quantize_dynamic_int8(model, skip="lm_head")
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantize_dynamic_int8(nn.Embedding(3, 3))
    with pytest.raises(TypeError, match="floating"):
        quantize_per_row(torch.ones(3, dtype=torch.long))
    path = tmp_path / "m.pt"
    assert size_on_disk(model, path) == path.stat().st_size


def test_size_on_disk_counts_a_tied_matrix_once():
    model = _model()
    untied = _model(tie_weights=False)
    emb = model.tok_emb.weight.numel() * 4
    assert size_on_disk(untied) - size_on_disk(model) == pytest.approx(emb, rel=0.02)


# ------------------------------------------------------------------------------------ ONNX
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    require_module("onnxruntime", "ONNX tests need onnxruntime (pip install onnxruntime)")
    require_module("onnxscript", "ONNX export needs onnxscript (pip install onnxscript)")
    model = _model()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "gpt.onnx")
    return model, path


@pytest.mark.parametrize("shape", [(2, 8), (3, 5), (1, 24), (1, 1), (5, 17)])
def test_onnx_logits_match_pytorch_for_any_shape(exported, shape):
    model, path = exported
    runner = OnnxGPT(path)
    x = _ids(*shape)
    with torch.no_grad():
        ref = model(x)
    out = runner(x)
    assert out.shape == ref.shape
    assert_close(out, ref, rtol=0, atol=1e-4)
    assert onnx_max_abs_diff(model, runner, x) < 1e-4


def test_onnx_generate_matches_gpt_generate(exported):
    model, path = exported
    runner = OnnxGPT(path, threads=1)
    prompt = _ids(2, 3)
    assert torch.equal(runner.generate(prompt, 30, greedy=True), model.generate(prompt, 30, greedy=True))
    a = runner.generate(prompt, 10, top_k=5, generator=torch.Generator().manual_seed(3))
    b = model.generate(prompt, 10, top_k=5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_onnx_checks_its_inputs(exported, tmp_path):
    _, path = exported
    runner = OnnxGPT(path)
    assert (runner.vocab_size, runner.context_length) == (40, 24)
    with pytest.raises(ValueError, match="vocabulary"):
        runner(torch.tensor([[0, 40]]))
    with pytest.raises(ValueError, match="context_length"):
        runner(_ids(1, 25))
    with pytest.raises(TypeError, match="integers"):
        runner(torch.zeros(1, 3))
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        OnnxGPT(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        OnnxGPT(bad)
    with pytest.raises(ValueError, match="max_new_tokens"):
        runner.generate(_ids(1, 2), -1)


def test_static_export_takes_only_its_shape(exported, tmp_path):
    model, _ = exported
    x = _ids(2, 6)
    runner = OnnxGPT(export_onnx(model, tmp_path / "static.onnx", dynamic=False, example=x))
    assert runner.input_shape == [2, 6]
    assert onnx_max_abs_diff(model, runner, x) < 1e-4
    with pytest.raises(ValueError, match="dynamic=True"):
        runner(_ids(2, 7))


def test_export_rejects_non_gpt(tmp_path):
    with pytest.raises(TypeError, match="GPT"):
        export_onnx(nn.Linear(2, 2), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="GPT"):
        onnx_max_abs_diff(nn.Linear(2, 2), tmp_path / "x.onnx", _ids(1, 2))


def test_missing_onnxruntime_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        OnnxGPT(tmp_path / "gpt.onnx")
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match="pip install onnxscript"):
        export_onnx(_model(), tmp_path / "gpt.onnx")


def test_quantized_loss_on_a_trained_pattern_stays_close():
    # a model that has learned something: logits far from uniform, where rounding could hurt more
    torch.manual_seed(0)
    model = _model()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    seq = torch.arange(24).remainder(40)[None].repeat(8, 1)  # 0, 1, 2, ...: next = current + 1
    flush = torch.set_flush_denormal(True)  # as the Trainer does on a CPU: denormals are slow
    try:
        for _ in range(25):
            loss = model.loss(seq[:, :-1], seq[:, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_flush_denormal(False) if flush else None
    model.eval()
    qmodel = quantize_dynamic_int8(model)
    with torch.no_grad():
        f_loss = float(model.loss(seq[:, :-1], seq[:, 1:]))
        q_loss = float(qmodel.loss(seq[:, :-1], seq[:, 1:]))
    assert f_loss < math.log(40) / 2
    assert abs(q_loss - f_loss) < 0.05
