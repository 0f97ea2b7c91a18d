"""Activation checkpointing (transformer_core.memory): same loss and gradients, fewer saved bytes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

from transformer_core import BERT, GPT, BERTConfig, GPTConfig, Transformer, TransformerConfig
from transformer_core.blocks import Block, Stack
from transformer_core.memory import (
    SavedTensorMeter,
    checkpointed_blocks,
    disable_activation_checkpointing,
    enable_activation_checkpointing,
    saved_activation_bytes,
)


def _model(dropout: float = 0.0, n_layer: int = 3) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=40, context_length=32, n_layer=n_layer, n_head=4, d_model=32, dropout=dropout))


def _data(B: int = 4, T: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 40, (B, T), generator=g), torch.randint(0, 40, (B, T), generator=g)


def _loss_and_grads(model: GPT, x, y, seed: int = 5):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # dropout masks
    loss = model.loss(x, y)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dropout", [0.0, 0.2])
@pytest.mark.parametrize("every", [1, 2])
def test_checkpointing_gives_the_same_loss_and_gradients(dropout, every):
    plain = _model(dropout)
    ckpt = enable_activation_checkpointing(copy.deepcopy(plain), every=every)
    plain.train(), ckpt.train()
    x, y = _data()
    loss_a, grads_a = _loss_and_grads(plain, x, y)
    loss_b, grads_b = _loss_and_grads(ckpt, x, y)
    assert_close(loss_b, loss_a)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert_close(grads_b[name], grads_a[name], msg=name)


def test_checkpointing_keeps_weights_names_and_outputs():
    plain = _model()
    ckpt = enable_activation_checkpointing(copy.deepcopy(plain))
    assert list(ckpt.state_dict()) == list(plain.state_dict())
    assert checkpointed_blocks(ckpt) == [0, 1, 2]
    assert isinstance(ckpt.blocks, Stack) and ckpt.blocks.checkpoint_every == 1  # a flag of the stack
    assert all(type(b) is Block for b in ckpt.blocks)  # the blocks themselves are untouched
    x, _ = _data()
    with torch.no_grad():
        assert_close(ckpt(x), plain(x))
        logits, attn = ckpt(x, return_attention=True)
        assert attn.shape == (3, 4, 4, 32, 32)
    out_a = plain.generate(x[:1, :4], 6, greedy=True)
    out_b = ckpt.generate(x[:1, :4], 6, greedy=True)
    assert torch.equal(out_a, out_b)
    # a checkpointed model saves and loads as a plain GPT
    restored = GPT(plain.config)
    restored.load_state_dict(ckpt.state_dict())
    assert_close(restored(x), plain(x))


def test_every_selects_blocks_and_disable_restores():
    model = _model(n_layer=5)
    assert checkpointed_blocks(enable_activation_checkpointing(model, every=2)) == [0, 2, 4]
    assert checkpointed_blocks(enable_activation_checkpointing(model, every=3)) == [0, 3]
    disable_activation_checkpointing(model)
    assert checkpointed_blocks(model) == []
    assert model.blocks.checkpoint_every == 0


def _bert(dropout: float = 0.0) -> BERT:
    torch.manual_seed(0)
    return BERT(BERTConfig(vocab_size=40, context_length=32, n_layer=3, n_head=4, d_model=32, dropout=dropout,
                           pad_id=0))


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_bert_checkpointing_gives_the_same_loss_and_gradients_with_padding(dropout):
    plain = _bert(dropout)
    ckpt = enable_activation_checkpointing(copy.deepcopy(plain))
    assert checkpointed_blocks(ckpt) == [0, 1, 2]
    x, y = _data()
    x[1, -5:] = 0  # padding: the mask goes through the checkpoint too
    y = torch.where(torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) < 0.3, y, -100)
    grads = []
    for model in (plain, ckpt):
        model.train().zero_grad(set_to_none=True)
        torch.manual_seed(5)  # dropout masks
        loss = model.loss(x, y)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert_close(grads[1][0], grads[0][0])
    for name, g in grads[0][1].items():
        assert_close(grads[1][1][name], g, msg=name)
    assert saved_activation_bytes(ckpt, x) < saved_activation_bytes(plain, x) / 2
    with torch.no_grad():
        assert_close(ckpt.eval()(x), plain.eval()(x))


def test_encoder_decoder_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = Transformer(TransformerConfig(20, 20, d_model=32, n_head=4, n_encoder_layers=2, n_decoder_layers=2,
                                          d_ff=64, dropout=0.1, context_length=16))
    ckpt = enable_activation_checkpointing(copy.deepcopy(plain), every=2)
    assert checkpointed_blocks(ckpt) == {"encoder": [0], "decoder": [0]}
    g = torch.Generator().manual_seed(3)
    src, tgt = torch.randint(3, 20, (2, 7), generator=g), torch.randint(3, 20, (2, 6), generator=g)
    grads = []
    for model in (plain, ckpt):
        model.train().zero_grad(set_to_none=True)
        torch.manual_seed(5)
        model.loss(src, tgt).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        assert_close(grads[1][name], g, msg=name)


def test_checkpointing_saves_fewer_bytes():
    plain = _model()
    x, y = _data()
    full = saved_activation_bytes(plain, x, y)
    half = saved_activation_bytes(enable_activation_checkpointing(copy.deepcopy(plain), every=2), x, y)
    every = saved_activation_bytes(enable_activation_checkpointing(copy.deepcopy(plain)), x, y)
    assert every < half < full
    assert every < full / 4
    # what stays saved per checkpointed block is its input: (B, T, D) floats
    B, T, D = 4, 32, 32
    assert every >= 3 * B * T * D * 4


def test_meter_counts_each_storage_once_and_excludes_parameters():
    w = torch.randn(8, 8, requires_grad=True)
    x = torch.randn(4, 8, requires_grad=True)
    with SavedTensorMeter(exclude=[w]) as meter:
        h = x @ w  # saves x (and w, excluded)
        out = (h * h).sum()  # saves h (twice: the same storage)
    assert meter.bytes == x.numel() * 4 + h.numel() * 4
    assert meter.count == 2
    out.backward()
    assert w.grad is not None
    with SavedTensorMeter() as meter:
        (x @ w).sum()
    assert meter.bytes == (x.numel() + w.numel()) * 4


def test_saved_bytes_grow_linearly_with_layers():
    x, y = _data(2, 16)
    sizes = [saved_activation_bytes(_model(n_layer=n), x, y) for n in (1, 2, 3)]
    per_layer = sizes[1] - sizes[0]
    assert per_layer > 0
    assert sizes[2] - sizes[1] == per_layer


def test_bad_inputs_give_clear_errors():
    with pytest.raises(TypeError, match="Stack"):
        enable_activation_checkpointing(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="nn.Module"):
        enable_activation_checkpointing("gpt")
    with pytest.raises(ValueError, match="every"):
        enable_activation_checkpointing(_model(), every=0)
    with pytest.raises(TypeError, match="exclude"):
        SavedTensorMeter(exclude=[1, 2])
    with pytest.raises(TypeError, match="nn.Module"):
        saved_activation_bytes(None, *_data())
