"""The encoder-decoder Transformer: shapes, norms, tying, loss, decoding, parameter counts, bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transformer_core import Transformer, TransformerConfig, label_smoothed_cross_entropy

PAD, BOS, EOS = 0, 1, 2
V = 12


def small(dtype=torch.float32, vocab=V, seed=0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    args = {"d_model": 32, "n_head": 4, "n_encoder_layers": 2, "n_decoder_layers": 2, "d_ff": 64,
            "dropout": 0.0, "context_length": 24, **overrides}
    return Transformer(TransformerConfig(vocab, vocab, **args)).to(dtype).eval()


def src_ids(B=3, S=7, seed=0, vocab=V):
    return torch.randint(3, vocab, (B, S), generator=torch.Generator().manual_seed(seed))


def tgt_ids(B=3, T=5, seed=1):
    t = torch.randint(3, V, (B, T), generator=torch.Generator().manual_seed(seed))
    t[:, 0] = BOS
    return t


# ----------------------------------------------------------------------------- forward


def test_forward_and_attention_shapes():
    model = small(n_encoder_layers=3)
    src, tgt = src_ids(3, 7), tgt_ids(3, 5)
    logits = model(src, tgt)
    assert logits.shape == (3, 5, V)
    logits2, attn = model(src, tgt, return_attention=True)
    torch.testing.assert_close(logits2, logits)
    assert attn.encoder.shape == (3, 3, 4, 7, 7)  # (L_enc, B, H, S, S)
    assert attn.decoder.shape == (2, 3, 4, 5, 5)  # (L_dec, B, H, T, T)
    assert attn.cross.shape == (2, 3, 4, 5, 7)  # (L_dec, B, H, T, S)
    assert attn._fields == ("encoder", "decoder", "cross")


def test_post_norm_by_default_and_pre_norm_on_request():
    post = small()
    assert post.config.norm_first is False
    assert all(not layer.norm_first for layer in [*post.encoder, *post.decoder])
    assert isinstance(post.encoder_norm, nn.Identity) and isinstance(post.decoder_norm, nn.Identity)
    # post-norm: the memory handed to the decoder is the last LayerNorm's output
    memory, _ = post.encode(src_ids())
    ln = post.encoder[-1].ln_2
    z = (memory - ln.bias) / ln.weight
    torch.testing.assert_close(z.mean(-1), torch.zeros(memory.shape[:2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(-1, unbiased=False), torch.ones(memory.shape[:2]), atol=1e-3, rtol=0)

    pre = small(norm_first=True)
    assert all(layer.norm_first for layer in [*pre.encoder, *pre.decoder])
    assert isinstance(pre.encoder_norm, nn.LayerNorm) and isinstance(pre.decoder_norm, nn.LayerNorm)
    assert pre.num_parameters() == post.num_parameters() + 4 * 32  # two final norms
    assert pre(src_ids(), tgt_ids()).shape == (3, 5, V)
    assert not torch.allclose(pre(src_ids(), tgt_ids()), post(src_ids(), tgt_ids()))


def test_shared_embeddings_are_one_tensor():
    model = small()
    assert model.src_emb is model.tgt_emb
    assert model.out_proj.weight is model.tgt_emb.weight
    # different vocabularies: the source gets its own table, the output stays tied to the target's
    torch.manual_seed(0)
    two = Transformer(TransformerConfig(20, V, d_model=32, n_head=4, n_encoder_layers=1, n_decoder_layers=1))
    assert two.src_emb is not two.tgt_emb and two.src_emb.weight.shape == (20, 32)
    assert two.out_proj.weight is two.tgt_emb.weight
    untied = Transformer(TransformerConfig(V, V, d_model=32, n_head=4, share_embeddings=False))
    assert untied.src_emb is not untied.tgt_emb
    assert untied.out_proj.weight is not untied.tgt_emb.weight


def test_embeddings_are_scaled_by_sqrt_d_model():
    model = small()
    x = model._embed(model.src_emb, src_ids())
    expected = model.src_emb(src_ids()) * 32**0.5 + model.pos.pe[:7]
    torch.testing.assert_close(x, expected)


# ----------------------------------------------------------------------------- loss


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("ignore_index", [None, PAD])
def test_label_smoothing_equals_torch(smoothing, ignore_index):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, V, generator=g)
    target = torch.randint(0, V, (4, 6), generator=g)
    target[0, -3:] = PAD
    ours = label_smoothed_cross_entropy(logits, target, smoothing, ignore_index=ignore_index)
    expected = F.cross_entropy(
        logits.reshape(-1, V), target.reshape(-1), label_smoothing=smoothing,
        ignore_index=-100 if ignore_index is None else ignore_index,
    )
    torch.testing.assert_close(ours, expected)


def test_model_loss_uses_teacher_forcing_and_ignores_padding():
    model = small()
    src = src_ids()
    tgt = torch.tensor([[BOS, 5, 6, 7, EOS], [BOS, 8, EOS, PAD, PAD], [BOS, 4, 4, EOS, PAD]])
    logits = model(src, tgt[:, :-1])
    expected = F.cross_entropy(logits.reshape(-1, V), tgt[:, 1:].reshape(-1), label_smoothing=0.1,
                               ignore_index=PAD)
    torch.testing.assert_close(model.loss(src, tgt), expected)


# ----------------------------------------------------------------------------- decoding


def naive_greedy(model, src, max_len):
    """Greedy decoding without a KV cache: rerun the decoder on the whole prefix at every step."""
    out = torch.full((src.shape[0], 1), BOS)
    done = torch.zeros(src.shape[0], dtype=torch.bool)
    while out.shape[1] < max_len and not done.all():
        logits = model(src, out)[:, -1]
        logits[:, [PAD, BOS]] = float("-inf")
        nxt = torch.where(done, PAD, logits.argmax(-1))
        out = torch.cat([out, nxt[:, None]], dim=1)
        done |= nxt == EOS
    return out


def test_greedy_decode_with_cache_equals_uncached():
    model = small(dtype=torch.float64)
    src = src_ids(4, 6)
    src[1, -2:] = PAD
    out = model.greedy_decode(src, max_len=12)
    assert torch.equal(out, naive_greedy(model, src, 12))


def check_output_format(out, max_len):
    assert out.shape[1] <= max_len
    assert (out[:, 0] == BOS).all()
    for row in out.tolist():
        end = row.index(EOS) if EOS in row else len(row)
        assert BOS not in row[1:] and PAD not in row[1:end]  # never emitted as tokens
        assert all(t == PAD for t in row[end + 1 :])  # everything after the first EOS is padding


@pytest.mark.parametrize("seed", range(3))
def test_greedy_equals_beam_search_with_one_beam(seed):
    model = small(seed=seed)
    src = src_ids(4, 6, seed=seed)
    greedy = model.greedy_decode(src, max_len=10)
    beam = model.beam_search(src, beam_size=1, max_len=10)
    assert torch.equal(greedy, beam)
    check_output_format(greedy, 10)


def sequence_logprob(model, src, hyp):
    """Sum of log p(token | prefix) under the decoder, PAD and BOS removed from the choice."""
    tgt = torch.tensor(hyp)[None]
    logits = model(src, tgt[:, :-1])[0].double()
    logits[:, [PAD, BOS]] = float("-inf")
    logp = logits.log_softmax(-1)
    return logp.gather(-1, tgt[0, 1:, None]).sum().item()


def normalised(score, hyp, alpha=0.6):
    return score / ((5 + len(hyp) - 1) / 6) ** alpha


def strip(row):
    row = row.tolist()
    return row[: row.index(EOS) + 1] if EOS in row else row


@pytest.mark.parametrize("seed", range(3))
def test_wide_beam_finds_the_best_sequence_and_beats_greedy(seed):
    """With a beam wider than the search space, beam search is exhaustive: it must return the
    sequence with the best length-normalised log-probability of all the hypotheses there are: the
    sequences that end in EOS and those that max_len cuts off (which compete on the same score).
    (For narrow beams "at least as good as greedy" is not guaranteed, so it is not tested.)"""
    vocab, max_len = 5, 5  # choices per step: EOS, 3, 4 -> 15 finished sequences of up to 4 tokens
    model = small(dtype=torch.float64, vocab=vocab, seed=seed)
    src = src_ids(1, 4, seed=seed, vocab=vocab)
    finished = [
        [BOS, *body, EOS]
        for n in range(max_len - 1)
        for body in itertools.product([3, 4], repeat=n)
    ]
    cut_off = [[BOS, *body] for body in itertools.product([3, 4], repeat=max_len - 1)]  # 16 more
    scores = {tuple(h): normalised(sequence_logprob(model, src, h), h) for h in finished + cut_off}
    best = max(scores.values())

    beam = strip(model.beam_search(src, beam_size=32, max_len=max_len)[0])
    assert scores[tuple(beam)] == pytest.approx(best, abs=1e-5)
    best_finished = max(scores[tuple(h)] for h in finished)
    if beam[-1] == EOS:
        assert scores[tuple(beam)] == pytest.approx(best_finished, abs=1e-5)

    greedy = strip(model.greedy_decode(src, max_len=max_len)[0])
    assert scores[tuple(beam)] >= scores[tuple(greedy)] - 1e-5  # greedy's output is one of the hypotheses


def hand_scored_model(monkeypatch, p_eos_first, p_a_first):
    """A model whose decoder is replaced by a fixed table: p(next | last token), whatever came before.

    From BOS: EOS with ``p_eos_first``, token 3 with ``p_a_first``, tokens 4 and 5 share the rest.
    After 3, 4 or 5 the same token follows with probability 0.99 (EOS gets 1/300 of it).
    """
    model = small(vocab=6)
    probs = torch.zeros(6, 6)
    rest = (1 - p_eos_first - p_a_first) / 2
    probs[BOS, [EOS, 3, 4, 5]] = torch.tensor([p_eos_first, p_a_first, rest, rest])
    for tok in (3, 4, 5):
        probs[tok, [EOS, 3, 4, 5]] = 0.01 / 3
        probs[tok, tok] = 0.99
    table = probs.clamp_min(1e-30).log()  # PAD and BOS are removed from the choice anyway

    def decode(tgt, memory, src_pad, caches=None, need_weights=False):
        logits = table[tgt[:, -1]][:, None, :].expand(-1, tgt.shape[1], -1)
        return logits, [], []

    monkeypatch.setattr(model, "decode", decode)
    return model


@pytest.mark.parametrize(("length_penalty", "expected"), [
    (0.6, [BOS, 3, 3, 3]),  # -1.100 / ((5 + 3) / 6) ** 0.6 = -0.926 beats -1.000 / 1
    (0.0, [BOS, EOS]),      # without the length penalty the short one is better: -1.000 > -1.100
])
def test_live_beams_compete_with_finished_ones_at_max_len(monkeypatch, length_penalty, expected):
    """At max_len the beams still alive are scored like the finished ones, with the same penalty.

    [BOS, EOS] finishes at the first step with log-probability -1.0; [BOS, 3, 3, 3] is cut off by
    max_len at -1.1. Before the fix the finished one always won, because it had finished."""
    p_eos = math.exp(-1.0)
    p_a = math.exp(-1.1 - 2 * math.log(0.99))
    model = hand_scored_model(monkeypatch, p_eos, p_a)
    out = model.beam_search(src_ids(1, 4, vocab=6), beam_size=2, max_len=4, length_penalty=length_penalty)
    assert out[0].tolist() == expected


def test_a_strong_finished_hypothesis_still_wins_at_max_len(monkeypatch):
    model = hand_scored_model(monkeypatch, p_eos_first=0.8, p_a_first=0.15)
    out = model.beam_search(src_ids(1, 4, vocab=6), beam_size=2, max_len=4)
    assert out[0].tolist() == [BOS, EOS]


@pytest.mark.parametrize("method", ["greedy_decode", "beam_search"])
@pytest.mark.parametrize("was_training", [True, False])
def test_decoding_restores_training_mode(method, was_training):
    model = small(dropout=0.3).train(was_training)
    getattr(model, method)(src_ids(2, 5), max_len=6)
    assert all(m.training is was_training for m in model.modules())


COPY_VOCAB = 10


def copy_batch(n, g):
    """Sources of 2 to 6 tokens (padded to 6); targets BOS, the source, EOS, padding."""
    lengths = torch.randint(2, 7, (n,), generator=g)
    src = torch.randint(3, COPY_VOCAB, (n, 6), generator=g)
    src[torch.arange(6)[None] >= lengths[:, None]] = PAD
    tgt = torch.full((n, 8), PAD)
    tgt[:, 0] = BOS
    tgt[:, 1:7] = src
    tgt[torch.arange(n), lengths + 1] = EOS
    return src, tgt


@pytest.fixture(scope="module")
def copy_model():
    """A tiny Transformer trained for 250 steps (a few seconds) to copy its input."""
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(
        COPY_VOCAB, COPY_VOCAB, d_model=32, n_head=4, n_encoder_layers=1, n_decoder_layers=1, d_ff=64,
        dropout=0.0, label_smoothing=0.0, context_length=16,
    ))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3, betas=(0.9, 0.98))
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(250):
        loss = model.loss(*copy_batch(32, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    src, tgt = copy_batch(64, g)
    return model.eval(), losses, src, tgt


def test_overfits_a_tiny_copy_task(copy_model):
    model, losses, src, tgt = copy_model
    assert losses[0] > 2.0 and sum(losses[-10:]) / 10 < 0.2
    out = model.greedy_decode(src, max_len=10)
    exact = (out == tgt[:, : out.shape[1]]).all(dim=1).float().mean().item()
    assert exact > 0.75


@pytest.mark.parametrize("decode", ["greedy", "beam"])
def test_output_format_bos_tokens_eos_padding(copy_model, decode):
    model, _, src, _ = copy_model
    out = model.greedy_decode(src, max_len=10) if decode == "greedy" else model.beam_search(src, 3, max_len=10)
    check_output_format(out, 10)
    ends = [row.index(EOS) for row in out.tolist() if EOS in row]
    assert len(ends) == len(out)  # every copy ended
    assert len(set(ends)) >= 3  # of different lengths, so rows are padded after their EOS
    assert (out[:, -1] == PAD).any()


# ----------------------------------------------------------------------------- parameter counts


def paper_parameter_count(vocab, d_model, d_ff, n_layers=6):
    """Parameters of the paper's model with one embedding matrix shared by encoder input, decoder
    input and the output projection (post-norm: no final norms)."""
    attention = 4 * (d_model * d_model + d_model)  # W_Q, W_K, W_V, W_O with biases
    ffn = (d_model * d_ff + d_ff) + (d_ff * d_model + d_model)
    layer_norm = 2 * d_model
    encoder_layer = attention + ffn + 2 * layer_norm
    decoder_layer = 2 * attention + ffn + 3 * layer_norm  # self-attention and cross-attention
    return vocab * d_model + n_layers * (encoder_layer + decoder_layer)


@pytest.mark.parametrize(
    "preset, exact, table_3",
    [("base", 63_082_496, 65e6), ("big", 214_245_376, 213e6)],
)
def test_paper_parameter_counts(preset, exact, table_3):
    cfg = getattr(TransformerConfig, preset)()
    assert (cfg.src_vocab_size, cfg.tgt_vocab_size, cfg.n_encoder_layers, cfg.n_decoder_layers) == (
        37000, 37000, 6, 6,
    )
    assert paper_parameter_count(37000, cfg.d_model, cfg.d_ff) == exact
    with torch.device("meta"):  # no memory for 214M parameters is allocated
        model = Transformer(cfg)
    assert model.num_parameters() == exact
    # Table 3 gives 65M (base) and 213M (big); the paper says only that its shared BPE vocabulary
    # has "about 37000 tokens", so our exact count can differ by the rounding of that vocabulary.
    assert abs(exact - table_3) / table_3 < 0.05


def test_paper_presets():
    base, big = TransformerConfig.base(), TransformerConfig.big()
    assert (base.d_model, base.d_ff, base.n_head, base.dropout, base.label_smoothing) == (512, 2048, 8, 0.1, 0.1)
    assert (big.d_model, big.d_ff, big.n_head, big.dropout) == (1024, 4096, 16, 0.3)
    assert base.norm_first is False and base.activation == "relu" and base.share_embeddings
    assert TransformerConfig.from_dict(big.to_dict()) == big


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"d_model": 30, "n_head": 4}, "d_model=30 is not divisible by n_head=4"),
        ({"d_model": 15, "n_head": 5}, "even d_model"),
        ({"n_encoder_layers": 0}, "n_encoder_layers must be a positive int"),
        ({"dropout": 1.5}, r"dropout must be in \[0, 1\)"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
        ({"eos_id": PAD}, "pad_id, bos_id, eos_id must be distinct"),
        ({"bos_id": V}, "pad_id, bos_id, eos_id must be distinct ids of the target vocabulary"),
    ],
)
def test_bad_config(kwargs, match):
    args = {"d_model": 32, "n_head": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        TransformerConfig(V, V, **args)


def test_bad_config_dict_and_type():
    with pytest.raises(ValueError, match="unknown TransformerConfig fields"):
        TransformerConfig.from_dict({"src_vocab_size": 5, "tgt_vocab_size": 5, "layers": 2})
    with pytest.raises(TypeError, match="Transformer needs a TransformerConfig"):
        Transformer({"src_vocab_size": 5})


@pytest.mark.parametrize(
    "src, tgt, error, match",
    [
        (torch.tensor([[3, V]]), torch.tensor([[BOS]]), ValueError, f"src contains token id {V}"),
        (torch.tensor([[3, -1]]), torch.tensor([[BOS]]), ValueError, "src contains token id -1"),
        (torch.ones(1, 25, dtype=torch.long) * 3, torch.tensor([[BOS]]), ValueError, "src has 25 tokens"),
        (torch.tensor([[3.0, 4.0]]), torch.tensor([[BOS]]), TypeError, "src holds torch.float32"),
        (torch.tensor([3, 4]), torch.tensor([[BOS]]), ValueError, r"src must have shape \(B, T\)"),
        ([[3, 4]], torch.tensor([[BOS]]), TypeError, "src must be a torch.Tensor"),
        (torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 1, dtype=torch.long), ValueError, "src is empty"),
        (torch.zeros(1, 0, dtype=torch.long), torch.tensor([[BOS]]), ValueError, "src is empty"),
    ],
    ids=["too-large", "negative", "too-long", "float", "1-D", "list", "B=0", "S=0"],
)
def test_bad_src(src, tgt, error, match):
    """The same clear error from the forward pass, greedy decoding and beam search."""
    model = small()
    with pytest.raises(error, match=match):
        model(src, tgt)
    with pytest.raises(error, match=match):
        model.greedy_decode(src, max_len=5)
    with pytest.raises(error, match=match):
        model.beam_search(src, max_len=5)


@pytest.mark.parametrize(
    "tgt, error, match",
    [
        (torch.tensor([[BOS, V]]), ValueError, f"tgt contains token id {V}"),
        (torch.tensor([[BOS, -2]]), ValueError, "tgt contains token id -2"),
        (torch.full((1, 25), BOS), ValueError, "tgt has 25 tokens"),
        (torch.tensor([[1.0]]), TypeError, "tgt holds torch.float32"),
        (torch.tensor([BOS]), ValueError, r"tgt must have shape \(B, T\)"),
        (torch.zeros(1, 0, dtype=torch.long), ValueError, "tgt is empty"),
        (tgt_ids(3, 2), ValueError, "src and tgt batch sizes differ: 1 vs 3"),
    ],
    ids=["too-large", "negative", "too-long", "float", "1-D", "T=0", "batch-mismatch"],
)
def test_bad_tgt(tgt, error, match):
    with pytest.raises(error, match=match):
        small()(src_ids(1, 4), tgt)


def test_bad_decoding_args():
    model = small()
    for decode in (model.greedy_decode, model.beam_search):
        with pytest.raises(ValueError, match=r"max_len must be an int in \[2, 24\]"):
            decode(src_ids(), max_len=1)
        with pytest.raises(ValueError, match="max_len must be an int"):
            decode(src_ids(), max_len=25)
    with pytest.raises(ValueError, match="beam_size must be a positive int"):
        model.beam_search(src_ids(), beam_size=0, max_len=5)
