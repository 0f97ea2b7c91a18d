"""The BERT-style encoder: bidirectional attention, padding, BERT's masking, the MLM loss, fill-mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transformer_core import GPT, GPTConfig, load_model, save_model
from transformer_core.encoder_only import (
    BERT,
    IGNORE_INDEX,
    BERTConfig,
    MaskCandidate,
    WordTokenizer,
    fill_mask,
    mask_tokens,
    mlm_loss,
    pad_sequences,
)

V, CTX = 40, 16
PAD, MASK = 0, 4
SPECIALS = (0, 1, 2, 3, 4)


def bert(**overrides) -> BERT:
    torch.manual_seed(0)
    cfg = BERTConfig(**{"vocab_size": V, "context_length": CTX, "n_layer": 2, "n_head": 2, "d_model": 16,
                        "pad_id": PAD, **overrides})
    return BERT(cfg).eval()


def ids(B: int = 2, T: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------- shapes
def test_shapes():
    model = bert()
    x = ids(3, 7)
    logits, attn = model(x, return_attention=True)
    assert logits.shape == (3, 7, V)
    assert attn.shape == (2, 3, 2, 7, 7)  # (n_layer, B, n_head, T, T), as GPT returns it
    assert model.encode(x).shape == (3, 7, 16)
    torch.testing.assert_close(model(x), logits)  # with or without the weights, the same logits
    assert model.lm_head.weight is model.tok_emb.weight  # the head is tied to the embedding


@pytest.mark.parametrize("overrides", [{"norm_first": True}, {"positional": "sinusoidal"},
                                       {"norm": "rmsnorm", "activation": "relu"}, {"tie_weights": False}])
def test_variants_run(overrides):
    model = bert(**overrides)
    logits, attn = model(ids(), return_attention=True)
    assert logits.shape == (2, 8, V) and torch.isfinite(logits).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, 2, 8))
    assert (model.lm_head.weight is model.tok_emb.weight) == model.config.tie_weights


def test_presets():
    tiny = BERTConfig.tiny(vocab_size=50)
    assert (tiny.n_layer, tiny.n_head, tiny.d_model, tiny.d_ff) == (2, 4, 64, 256)
    base = BERTConfig.bert_base()
    assert (base.vocab_size, base.context_length, base.n_layer, base.n_head, base.d_model, base.d_ff) == (
        30522, 512, 12, 12, 768, 3072)
    assert BERTConfig.from_dict(tiny.to_dict()) == tiny


# ------------------------------------------------------------------------------------- attention
def test_attention_rows_sum_to_one_and_see_the_future():
    _, attn = bert()(ids(2, 9), return_attention=True)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, 2, 9))
    upper = torch.triu(torch.ones(9, 9, dtype=torch.bool), diagonal=1)
    assert (attn[..., upper] > 0).all()  # every query attends to every later key
    assert attn[..., upper].sum(-1).min() > 0.1  # and not by a rounding error: a real share


def test_later_token_changes_earlier_outputs_unlike_gpt():
    x = ids(1, 10)
    y = x.clone()
    y[0, 7] = 5 if int(x[0, 7]) != 5 else 6  # change one later token
    model = bert()
    with torch.no_grad():
        diff = (model(x) - model(y))[0, :7].abs().amax(-1)  # positions before the change
    assert (diff > 1e-6).all(), diff  # every earlier position noticed (float32 noise is ~1e-8 here)

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=V, context_length=CTX, n_layer=2, n_head=2, d_model=16)).eval()
    with torch.no_grad():
        gdiff = (gpt(x) - gpt(y))[0, :7].abs().amax()
    assert gdiff == 0  # a causal model cannot see it


def test_padding_keys_get_zero_weight_and_do_not_change_real_positions():
    model = bert()
    seq = ids(1, 6)
    padded = torch.cat([seq, torch.full((1, 4), PAD)], dim=1)  # (1, 10): 4 padding positions
    logits, attn = model(padded, return_attention=True)
    assert (attn[..., 6:] == 0).all()  # no query attends to padding
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 1, 2, 10))
    torch.testing.assert_close(logits[:, :6], model(seq), atol=1e-5, rtol=1e-5)


def test_padding_in_a_batch_of_different_lengths():
    model = bert()
    a, b = ids(1, 9, seed=1)[0].tolist(), ids(1, 4, seed=2)[0].tolist()
    batch = pad_sequences([a, b], PAD)
    assert batch.shape == (2, 9) and batch[1, 4:].eq(PAD).all()
    out = model(batch)
    torch.testing.assert_close(out[1, :4], model(torch.tensor([b]))[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[0], model(torch.tensor([a]))[0], atol=1e-5, rtol=1e-5)


def test_explicit_key_padding_mask_matches_pad_id():
    model = bert()
    x = ids(2, 8)
    x[1, 5:] = PAD
    auto = model(x)
    explicit = bert(pad_id=None)(x, key_padding_mask=x == PAD)
    torch.testing.assert_close(auto, explicit)
    assert not torch.allclose(bert(pad_id=None)(x)[1, :5], auto[1, :5])  # without a mask, padding is read


# ------------------------------------------------------------------------------------- masking
def test_masking_statistics_80_10_10():
    x = torch.randint(5, V, (400, 100), generator=torch.Generator().manual_seed(1))  # 40,000 tokens
    x[:, 0], x[:, -1] = 2, 3  # [CLS] ... [SEP]
    x[::3, 80:-1] = PAD  # padding in a third of the rows
    inputs, labels = mask_tokens(x, MASK, V, SPECIALS, generator=torch.Generator().manual_seed(0))
    chosen = labels != IGNORE_INDEX
    special = torch.isin(x, torch.tensor(SPECIALS))
    assert not (chosen & special).any()  # specials and padding are never chosen
    torch.testing.assert_close(inputs[special], x[special])  # ... nor changed
    share = chosen.sum() / (~special).sum()
    assert abs(float(share) - 0.15) < 0.01
    assert torch.equal(labels[chosen], x[chosen])  # a label is the original token
    masked = (inputs == MASK) & chosen
    kept = (inputs == x) & chosen
    replaced = chosen & ~masked & ~kept
    n = chosen.sum()
    assert abs(float(masked.sum() / n) - 0.8) < 0.02
    assert abs(float(replaced.sum() / n) - 0.1) < 0.015
    assert abs(float(kept.sum() / n) - 0.1) < 0.015  # (a random token can equal the original: 1 in 35)
    assert not torch.isin(inputs[replaced], torch.tensor(SPECIALS)).any()  # random tokens are words
    assert torch.equal(inputs[~chosen], x[~chosen])  # nothing else changes


def test_masking_is_reproducible_and_leaves_its_input_alone():
    x = ids(4, 30)
    before = x.clone()
    a = mask_tokens(x, MASK, V, SPECIALS, generator=torch.Generator().manual_seed(3))
    b = mask_tokens(x, MASK, V, SPECIALS, generator=torch.Generator().manual_seed(3))
    c = mask_tokens(x, MASK, V, SPECIALS, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert torch.equal(x, before)


def test_masking_options():
    x = ids(50, 40)
    inputs, labels = mask_tokens(x, MASK, V, SPECIALS, mask_prob=0.5, mask_token_frac=1.0, random_token_frac=0.0,
                                 generator=torch.Generator().manual_seed(0))
    chosen = labels != IGNORE_INDEX
    assert (inputs[chosen] == MASK).all()
    assert abs(float(chosen.double().mean()) - 0.5) < 0.03
    # an existing [MASK] is never chosen, even when not listed among the specials
    x[:, 3] = MASK
    _, labels = mask_tokens(x, MASK, V, (), mask_prob=0.9, generator=torch.Generator().manual_seed(0))
    assert (labels[:, 3] == IGNORE_INDEX).all()


# ------------------------------------------------------------------------------------- loss
def test_mlm_loss_ignores_unlabelled_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, V, requires_grad=True)
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[0, 1], labels[1, 4], labels[1, 5] = 7, 9, 11
    loss = mlm_loss(logits, labels)
    picked = logits[[0, 1, 1], [1, 4, 5]]
    torch.testing.assert_close(loss, F.cross_entropy(picked, torch.tensor([7, 9, 11])))
    other = logits.detach().clone()
    other[0, 0] += 100.0  # an unlabelled position
    torch.testing.assert_close(mlm_loss(other, labels), loss.detach())
    loss.backward()
    assert logits.grad[0, 0].abs().sum() == 0 and logits.grad[0, 1].abs().sum() > 0


def test_mlm_loss_without_labels_is_zero_not_nan():
    logits = torch.randn(1, 3, V, requires_grad=True)
    loss = mlm_loss(logits, torch.full((1, 3), IGNORE_INDEX))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_mlm_loss_keeps_float64():
    logits = torch.randn(1, 3, V, dtype=torch.float64)
    assert mlm_loss(logits, torch.tensor([[1, IGNORE_INDEX, 5]])).dtype == torch.float64


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = BERT(BERTConfig(vocab_size=V, context_length=CTX, n_layer=2, n_head=2, d_model=32, pad_id=PAD))
    x = pad_sequences([ids(1, 12, seed=5)[0].tolist(), ids(1, 7, seed=6)[0].tolist()], PAD)
    inputs, labels = mask_tokens(x, MASK, V, SPECIALS, mask_prob=0.3, generator=torch.Generator().manual_seed(0))
    assert (labels != IGNORE_INDEX).sum() >= 3
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model.loss(inputs, labels).item()
    for _ in range(150):
        loss = model.loss(inputs, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 3.0 and loss.item() < 0.05, (first, loss.item())


# ------------------------------------------------------------------------------------- tokenizer, fill-mask
def test_word_tokenizer():
    tok = WordTokenizer.from_text("the dog ran. the cat sat, and the dog sat.")
    assert tok.vocab[:5] == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    text = "the cat ran, the dog sat."
    assert tok.decode(tok.encode(text)) == text
    wrapped = tok.encode("the [MASK] sat.", add_special_tokens=True)
    assert wrapped[0] == tok.cls_id and wrapped[-1] == tok.sep_id and tok.mask_id in wrapped
    assert tok.decode(wrapped, skip_special_tokens=True) == "the sat."
    assert tok.encode("the zebra ran.")[1] == tok.unk_id
    no_unk = WordTokenizer(["a", "b"], specials=("[PAD]", "[MASK]"))
    with pytest.raises(ValueError, match="no \\[UNK\\]"):
        no_unk.encode("a c")


def test_word_tokenizer_save_load(tmp_path):
    tok = WordTokenizer.from_text("one two three.")
    tok.save(tmp_path / "tok.json")
    assert WordTokenizer.load(tmp_path / "tok.json") == tok


def test_fill_mask():
    tok = WordTokenizer.from_text("the dog ran. the cat sat. a bird flew.")
    torch.manual_seed(0)
    model = BERT(BERTConfig.tiny(tok.vocab_size, context_length=16, pad_id=tok.pad_id)).train()
    out = fill_mask(model, tok, "the [MASK] ran. a [MASK] flew.", top_k=3)
    assert model.training  # mode restored
    assert len(out) == 2 and all(len(c) == 3 for c in out)
    for cands in out:
        assert all(isinstance(c, MaskCandidate) for c in cands)
        probs = [c.probability for c in cands]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
        assert all(tok.id_to_token(c.token_id) == c.token for c in cands)


def test_fill_mask_after_training_finds_the_word():
    tok = WordTokenizer.from_text("the dog ran. the cat sat.")
    torch.manual_seed(0)
    model = BERT(BERTConfig.tiny(tok.vocab_size, context_length=16, pad_id=tok.pad_id))
    x = torch.tensor([tok.encode("the dog ran.", add_special_tokens=True)])
    inputs, labels = x.clone(), torch.full_like(x, IGNORE_INDEX)
    inputs[0, 2], labels[0, 2] = tok.mask_id, tok.token_to_id("dog")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model.loss(inputs, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    best = fill_mask(model, tok, "the [MASK] ran.")[0][0]
    assert best.token == "dog" and best.probability > 0.9


# ------------------------------------------------------------------------------------- saving
def test_save_load_round_trip(tmp_path):
    model = bert(norm_first=True)
    x = ids()
    path = tmp_path / "bert.pt"
    model.save(path)
    loaded = BERT.load(path)
    assert loaded.config == model.config
    assert loaded.lm_head.weight is loaded.tok_emb.weight
    torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    again, extra = load_model(save_model(model, tmp_path / "b2.pt", extra={"vocab": ["a"]}), return_extra=True)
    assert isinstance(again, BERT) and extra == {"vocab": ["a"]}
    torch.manual_seed(0)
    GPT(GPTConfig(vocab_size=V, context_length=CTX, n_layer=1, n_head=2, d_model=16)).save(tmp_path / "g.pt")
    with pytest.raises(ValueError, match="holds a GPT, not a BERT"):
        BERT.load(tmp_path / "g.pt")


# ------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "bad, error, words",
    [
        (torch.rand(2, 5), TypeError, "integers"),
        (torch.tensor([1, 2, 3]), ValueError, "shape \\(B, T\\)"),
        (torch.randint(5, V, (1, CTX + 1)), ValueError, "context_length"),
        (torch.tensor([[1, V]]), ValueError, "outside the vocabulary"),
        ([[1, 2]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_model_input(bad, error, words):
    with pytest.raises(error, match=words):
        bert()(bad)


def test_bad_key_padding_mask():
    model, x = bert(), ids()
    with pytest.raises(TypeError, match="bool"):
        model(x, key_padding_mask=torch.zeros(2, 8))
    with pytest.raises(ValueError, match="shape"):
        model(x, key_padding_mask=torch.zeros(2, 7, dtype=torch.bool))


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"mask_prob": 0.0}, ValueError, "between 0 and 1"),
        ({"mask_prob": 1.0}, ValueError, "between 0 and 1"),
        ({"mask_prob": 1.5}, ValueError, "between 0 and 1"),
        ({"mask_prob": "0.15"}, TypeError, "number"),
        ({"mask_id": V}, ValueError, "outside the vocabulary"),
        ({"mask_id": 4.0}, TypeError, "int"),
        ({"special_ids": (V + 3,)}, ValueError, "outside the vocabulary"),
        ({"mask_token_frac": 0.95}, ValueError, "add up to at most 1"),
        ({"random_token_frac": -0.1}, ValueError, "add up to at most 1"),
        ({"special_ids": tuple(range(V))}, ValueError, "nothing to mask"),
    ],
)
def test_bad_masking_arguments(kwargs, error, words):
    args = {"mask_id": MASK, "vocab_size": V, "special_ids": SPECIALS, **kwargs}
    with pytest.raises(error, match=words):
        mask_tokens(ids(), **args)


def test_bad_masking_input():
    with pytest.raises(TypeError, match="integers"):
        mask_tokens(torch.rand(2, 3), MASK, V)
    with pytest.raises(ValueError, match="shape \\(B, T\\)"):
        mask_tokens(torch.tensor([5, 6]), MASK, V)


def test_bad_loss_input():
    logits = torch.randn(2, 3, V)
    with pytest.raises(ValueError, match="labels shape"):
        mlm_loss(logits, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="labels must be an integer"):
        mlm_loss(logits, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="logits must be a float"):
        mlm_loss(torch.zeros(2, 3, V, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        mlm_loss(logits, torch.full((2, 3), V))


def test_bad_fill_mask_input():
    tok = WordTokenizer.from_text("the dog ran.")
    model = BERT(BERTConfig.tiny(tok.vocab_size, context_length=8))
    with pytest.raises(ValueError, match="no \\[MASK\\] token to fill"):
        fill_mask(model, tok, "the dog ran.")
    with pytest.raises(ValueError, match="context_length"):
        fill_mask(model, tok, "the dog ran. the dog ran. the [MASK] ran.")
    with pytest.raises(ValueError, match="top_k"):
        fill_mask(model, tok, "the [MASK] ran.", top_k=0)
    with pytest.raises(TypeError, match="str"):
        fill_mask(model, tok, ["the [MASK] ran."])
    no_mask = WordTokenizer(["the", "dog"], specials=("[PAD]", "[CLS]", "[SEP]"))
    with pytest.raises(ValueError, match="no \\[MASK\\] token:"):
        fill_mask(model, no_mask, "the [MASK]")
    other = WordTokenizer.from_text("a b c d e f g.")
    with pytest.raises(ValueError, match="not a pair"):
        fill_mask(model, other, "a [MASK] c")


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"d_model": 15}, "divisible"),
        ({"dropout": 1.0}, "dropout"),
        ({"positional": "rotary"}, "positional"),
        ({"pad_id": V}, "pad_id"),
        ({"n_layer": 0}, "n_layer"),
        ({"activation": "tanh"}, "activation"),
    ],
)
def test_bad_config(overrides, words):
    with pytest.raises(ValueError, match=words):
        BERTConfig(**{"vocab_size": V, "context_length": CTX, "n_head": 2, "d_model": 16, **overrides})


def test_bad_tokenizer_and_padding():
    with pytest.raises(ValueError, match="twice"):
        WordTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="no words"):
        WordTokenizer([])
    with pytest.raises(TypeError, match="str"):
        WordTokenizer.from_text(b"bytes")
    with pytest.raises(ValueError, match="truncate"):
        pad_sequences([[1, 2, 3]], 0, length=2)
    with pytest.raises(ValueError, match="no empty"):
        pad_sequences([[1], []], 0)
    with pytest.raises(TypeError, match="BERTConfig"):
        BERT(GPTConfig(vocab_size=V, context_length=CTX))
