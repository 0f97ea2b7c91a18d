"""Saving and loading models: round trips, safe loading, clear errors, and saves that cannot half-fail."""

from __future__ import annotations

import random

import pytest
import torch

from transformer_core import GPT, GPTConfig, Transformer, TransformerConfig, load_model, save_model
from transformer_core.checkpoint import FORMAT


def gpt(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"vocab_size": 40, "context_length": 16, "n_layer": 2, "n_head": 2,
                            "d_model": 16, **overrides})).eval()


def transformer() -> Transformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(30, 20, d_model=16, n_head=2, n_encoder_layers=1, n_decoder_layers=2, d_ff=32,
                            dropout=0.0, context_length=32)
    return Transformer(cfg).eval()


IDX = torch.tensor([[1, 5, 9, 3, 7], [2, 2, 8, 0, 39]])
SRC, TGT = torch.tensor([[4, 5, 29, 7, 0]]), torch.tensor([[1, 3, 19, 4]])


@pytest.mark.parametrize("overrides", [{}, {"positional": "rotary", "norm": "rmsnorm", "tie_weights": False}])
def test_gpt_round_trip(tmp_path, overrides):
    model = gpt(**overrides)
    path = tmp_path / "gpt.pt"
    model.save(path)
    loaded = GPT.load(path)
    assert loaded.config == model.config
    torch.testing.assert_close(loaded(IDX), model(IDX), atol=0, rtol=0)
    if model.config.tie_weights:
        assert loaded.lm_head.weight is loaded.tok_emb.weight  # still one tensor after loading
    again = load_model(path)
    assert isinstance(again, GPT)
    torch.testing.assert_close(again(IDX), model(IDX), atol=0, rtol=0)


def test_moe_gpt_round_trip(tmp_path):
    from transformer_core.moe import MoEGPT, MoEGPTConfig

    torch.manual_seed(0)
    model = MoEGPT(MoEGPTConfig(vocab_size=40, context_length=16, n_layer=2, n_head=2, d_model=16,
                                n_experts=4, expert_top_k=2, capacity_factor=1.25)).eval()
    path = tmp_path / "moe.pt"
    model.save(path)
    loaded = MoEGPT.load(path)
    assert isinstance(loaded, MoEGPT) and loaded.config == model.config
    torch.testing.assert_close(loaded(IDX), model(IDX), atol=0, rtol=0)
    assert isinstance(load_model(path), MoEGPT)


def test_transformer_round_trip_with_extra(tmp_path):
    model = transformer()
    path = save_model(model, tmp_path / "sub" / "mt.pt", extra={"step": 12, "vocab": ["<pad>", "a"]})
    assert path.is_file()
    loaded, extra = load_model(path, return_extra=True)
    assert isinstance(loaded, Transformer)
    assert loaded.config == model.config
    assert extra == {"step": 12, "vocab": ["<pad>", "a"]}
    torch.testing.assert_close(loaded(SRC, TGT), model(SRC, TGT), atol=0, rtol=0)
    assert loaded.out_proj.weight is loaded.tgt_emb.weight
    assert torch.equal(loaded.greedy_decode(SRC, 8), model.greedy_decode(SRC, 8))
    again = Transformer.load(model.save(tmp_path / "mt2.pt"))  # the method pair, as GPT has it
    torch.testing.assert_close(again(SRC, TGT), model(SRC, TGT), atol=0, rtol=0)
    with pytest.raises(ValueError, match="holds a Transformer, not a GPT"):
        GPT.load(path)


def test_loaded_weights_are_trainable_copies(tmp_path):
    model = gpt()
    model.save(tmp_path / "m.pt")
    loaded = GPT.load(tmp_path / "m.pt")
    assert all(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        loaded.tok_emb.weight.zero_()
    assert model.tok_emb.weight.abs().sum() > 0


def test_the_file_loads_with_weights_only(tmp_path):
    """The file holds only strings, numbers and tensors: torch.load(weights_only=True) can read it."""
    path = tmp_path / "m.pt"
    gpt().save(path)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT and payload["class"] == "GPT"
    assert payload["config"] == gpt().config.to_dict()
    assert set(payload["state_dict"]) == set(gpt().state_dict())


def test_loading_never_unpickles_code(tmp_path):
    """A pickle of a whole module would run code on load: load_model (weights_only) refuses it."""
    path = tmp_path / "module.pt"
    torch.save(gpt(), path)
    with pytest.raises(ValueError, match="not a readable model file"):
        load_model(path)


def test_gpt_load_refuses_a_transformer_file(tmp_path):
    path = tmp_path / "mt.pt"
    save_model(transformer(), path)
    with pytest.raises(ValueError, match="holds a Transformer, not a GPT"):
        GPT.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file at"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):
        GPT.load(tmp_path / "nope.pt")


def test_damaged_files(tmp_path):
    good = tmp_path / "good.pt"
    gpt().save(good)
    data = good.read_bytes()
    rng = random.Random(0)
    damaged = {"empty": b"", "text": b"not a model\n"}
    # Truncation anywhere, random noise of any length, and bytes flipped inside a good file: the
    # weights-only unpickler fails in many different ways on these, and each must become one clear error.
    for i, cut in enumerate(sorted(rng.sample(range(1, len(data)), 40))):
        damaged[f"truncated{i}"] = data[:cut]
    for i in range(40):
        damaged[f"noise{i}"] = rng.randbytes(rng.choice([1, 7, 64, 4096]))
    for i in range(40):
        flipped = bytearray(data)
        for pos in rng.sample(range(len(data)), 8):
            flipped[pos] ^= 0xFF
        damaged[f"flipped{i}"] = bytes(flipped)
    for name, content in damaged.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(content)
        try:
            load_model(path)
        except ValueError as err:
            assert str(path) in str(err), name
        else:  # flipping bytes inside a stored tensor leaves a loadable (if wrong) model: that is fine
            assert name.startswith("flipped"), f"{name} loaded without error"


@pytest.mark.parametrize(
    "payload, match",
    [
        ({"weights": torch.zeros(3)}, "was not written by transformer_core.save_model"),
        ([1, 2, 3], "was not written by transformer_core.save_model"),
        ({"format": "transformer_core.model/0"}, "was not written by transformer_core.save_model"),
        ({"format": FORMAT, "class": "LSTM", "config": {}, "state_dict": {}}, "unknown model class 'LSTM'"),
    ],
)
def test_files_of_another_format(tmp_path, payload, match):
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match=match):
        load_model(path)


def tamper(path, **changes):
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value(payload[key])
    torch.save(payload, path)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"config": lambda c: {**c, "d_model": 32}}, "do not match its config"),
        ({"config": lambda c: {**c, "n_layer": 1}}, "do not match its config"),
        ({"config": lambda c: {**c, "n_layer": 3}}, "do not match its config"),
        ({"state_dict": lambda sd: {k: v for k, v in sd.items() if "ln_f" not in k}}, "do not match its config"),
        ({"config": lambda c: {**c, "n_heads": 2}}, "unknown GPTConfig fields"),
        ({"config": lambda c: {k: v for k, v in c.items() if k != "vocab_size"}}, "config in .* is incomplete"),
        ({"config": lambda c: {**c, "d_model": 15}}, "not divisible"),
        ({"config": lambda c: [1, 2]}, "its 'config' entry is missing or not a dict"),
        ({"state_dict": None}, "its 'state_dict' entry is missing or not a dict"),
        ({"config": None}, "its 'config' entry is missing or not a dict"),
    ],
    ids=["wider", "fewer-layers", "more-layers", "missing-weights", "unknown-field", "missing-field",
         "invalid-config", "config-not-a-dict", "no-state-dict", "no-config"],
)
def test_config_and_weights_that_do_not_match(tmp_path, changes, match):
    path = tmp_path / "m.pt"
    gpt().save(path)
    tamper(path, **changes)
    with pytest.raises(ValueError, match=match):
        load_model(path)


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    old = gpt()
    old.save(path)
    before = path.read_bytes()

    real_save = torch.save

    def save_then_crash(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(0)  # leave a half-written file behind, as a crash would
        f.truncate(100)
        raise KeyboardInterrupt("interrupted while saving")

    monkeypatch.setattr(torch, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        gpt(n_layer=1).save(path)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary file left behind
    torch.testing.assert_close(GPT.load(path)(IDX), old(IDX), atol=0, rtol=0)


def test_save_model_refuses_other_modules(tmp_path):
    with pytest.raises(TypeError, match="saves BERT, GPT, MoEGPT, Transformer models, got Linear"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_a_training_checkpoint_opens_as_a_model_file(tmp_path):
    """One format: a Trainer's checkpoint holds the payload save_model writes, so load_model opens it."""
    from transformer_core.training import TrainConfig, Trainer

    model = gpt(dropout=0.0)
    trainer = Trainer(model, torch.arange(300) % 40, config=TrainConfig(
        max_steps=2, batch_size=2, warmup_steps=0, eval_interval=0, progress=False))
    trainer.fit()
    path = trainer.save_checkpoint(tmp_path / "run.pt")
    payload = torch.load(path, weights_only=True)["model"]
    assert payload["format"] == FORMAT and payload["class"] == "GPT"
    assert set(payload) == set(torch.load(model.save(tmp_path / "m.pt"), weights_only=True))
    for loaded in (load_model(path), GPT.load(path)):
        assert isinstance(loaded, GPT) and loaded.config == model.config
        torch.testing.assert_close(loaded.eval()(IDX), model.eval()(IDX), atol=0, rtol=0)
    with pytest.raises(ValueError, match="holds a GPT, not a Transformer"):
        Transformer.load(path)


def test_checkpoint_imports_no_model_module():
    """The models import checkpoint (to be saved); checkpoint imports none of them: no circle."""
    import ast
    import inspect

    import transformer_core.checkpoint as checkpoint

    imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(checkpoint)))
                if isinstance(node, ast.ImportFrom) and node.level}
    assert imported == set(), imported
