"""Unit tests of transformer_core.viz: heatmaps and the attention explorer, live and static.

The book's smaller figures (attention_book.figures) are tested in test_attention_book_figures.py."""

from __future__ import annotations

import warnings

import ipywidgets as widgets
import matplotlib.image
import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget_link import Link
from matplotlib.figure import Figure
from torch import nn

from transformer_core import causal_mask, viz
from transformer_core.interpret import attention_entropy
from transformer_core.viz import (
    AttentionExplorer,
    LongInputWarning,
    attention_heatmap,
    infer_causal_mask,
    token_label,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOKENS = list("abcde")


def causal_attention(n_layer=2, batch=1, n_head=2, t=5, seed=0):
    """Random causal attention (n_layer, batch, n_head, t, t): softmax rows, exact zeros above."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_layer, batch, n_head, t, t, generator=g)
    future = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(-1)


def full_attention(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).softmax(-1)


@pytest.fixture
def attn():
    return causal_attention()


@pytest.fixture
def blank_figures(monkeypatch):
    """For tests of the widget structure only: every view is a tiny blank figure (fast)."""

    def blank(self, state):
        return Figure(figsize=(0.5, 0.5), dpi=20)

    monkeypatch.setattr(AttentionExplorer, "_figure", blank)


def _image(fig):
    ax = fig.axes[0]
    assert len(ax.images) == 1
    return ax, ax.images[0]


# --------------------------------------------------------------------------------------------------
# attention_heatmap
# --------------------------------------------------------------------------------------------------


def test_heatmap_tick_labels_and_fixed_colour_scale(attn):
    fig = attention_heatmap(attn[0, 0, 0], TOKENS, title="t")
    ax, im = _image(fig)
    assert [t.get_text() for t in ax.get_xticklabels()] == TOKENS
    assert [t.get_text() for t in ax.get_yticklabels()] == TOKENS
    assert im.get_clim() == (0.0, 1.0)
    assert ax.get_title() == "t"
    fig2 = attention_heatmap(attn[0, 0, 0], TOKENS, vmin=0.1, vmax=0.5)
    assert _image(fig2)[1].get_clim() == (0.1, 0.5)


def test_heatmap_labels_show_spaces_and_newlines():
    w = full_attention(3, 3)
    fig = attention_heatmap(w, [" the", "\n", "x"])
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["␣the", "↵", "x"] == [token_label(t) for t in [" the", "\n", "x"]]


def test_heatmap_masked_cells_are_masked_not_zero(attn):
    w = attn[0, 0, 0]
    _, im = _image(attention_heatmap(w, TOKENS, mask="causal"))
    data = im.get_array()
    visible = causal_mask(5).numpy()  # the core's mask: True where a query may look
    assert np.array_equal(np.ma.getmaskarray(data), ~visible)
    # the visible cells hold the weights themselves
    np.testing.assert_allclose(data.data[visible], w.numpy()[visible])
    # without a mask, the exact zeros above the diagonal are drawn as weights of 0, not masked
    _, im = _image(attention_heatmap(w, TOKENS))
    assert not np.ma.getmaskarray(im.get_array()).any()


def test_heatmap_explicit_and_padding_masks():
    w = full_attention(4, 4).numpy()
    pad = np.array([False, False, True, True])  # a (keys,) padding mask broadcasts over rows
    _, im = _image(attention_heatmap(w, "abcd", mask=pad))
    assert np.array_equal(np.ma.getmaskarray(im.get_array()), np.broadcast_to(pad, (4, 4)))
    full = np.zeros((4, 4), bool)
    full[1, 2] = True
    _, im = _image(attention_heatmap(w, "abcd", mask=torch.from_numpy(full)))
    assert np.array_equal(np.ma.getmaskarray(im.get_array()), full)


def test_heatmap_causal_option_refuses_non_causal_weights():
    with pytest.raises(ValueError, match="not causal"):
        attention_heatmap(full_attention(4, 4), "abcd", mask="causal")


def test_heatmap_cross_attention_and_highlight():
    w = full_attention(3, 6)
    fig = attention_heatmap(w, list("uvwxyz"), query_tokens=["A", "B", "C"], highlight_query=-1)
    ax, im = _image(fig)
    assert im.get_array().shape == (3, 6)
    assert [t.get_text() for t in ax.get_xticklabels()] == list("uvwxyz")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A", "B", "C"]
    assert ax.get_yticklabels()[2].get_fontweight() == "bold"


def test_heatmap_draws_into_a_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    assert attention_heatmap(full_attention(2, 2), "ab", ax=ax, colorbar=False) is fig


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(weights=np.ones((2, 3, 3)) / 3, tokens="abc"), "2-D"),
        (dict(weights=np.ones((3, 3)) / 3, tokens="ab"), "has 3 keys .columns. but 2 tokens"),
        (dict(weights=np.ones((2, 3)) / 3, tokens="abc"), "query_tokens"),
        (dict(weights=np.ones((2, 3)) / 3, tokens="abc", query_tokens="xyz"), "has 2 queries .rows. but 3 query_tokens"),
        (dict(weights=np.ones((3, 3)) / 3, tokens="abc", mask=np.zeros((3, 3))), "bool"),
        (dict(weights=np.ones((3, 3)) / 3, tokens="abc", mask=np.zeros((2, 2), bool)), "fit"),
        (dict(weights=np.ones((3, 3)) / 3, tokens="abc", mask="future"), "causal"),
        (dict(weights=np.ones((3, 3)) / 3, tokens="abc", highlight_query=3), "out of range"),
    ],
)
def test_heatmap_bad_inputs_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attention_heatmap(**kwargs)


def test_no_pyplot_figures_leak(attn):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    attention_heatmap(attn[0, 0, 0], TOKENS)
    AttentionExplorer(attn, TOKENS).controls["view"].value = "overview"
    assert plt.get_fignums() == before


def test_infer_causal_mask_is_the_core_causal_mask_inverted():
    # the heatmap hatches where a query may not look: the opposite of transformer_core.causal_mask
    w = torch.tril(torch.ones(3, 5), diagonal=2)  # the last 3 queries of 5 positions (KV cache)
    np.testing.assert_array_equal(infer_causal_mask(w), ~causal_mask(3, 5).numpy())
    with pytest.raises(ValueError, match="not causal"):
        infer_causal_mask(torch.ones(3, 3))


# --------------------------------------------------------------------------------------------------
# AttentionExplorer, live
# --------------------------------------------------------------------------------------------------


def test_explorer_live_controls_redraw_image_and_marker(attn):
    ex = AttentionExplorer(attn, TOKENS, mask="causal", mode="live")
    assert isinstance(ex.widget, widgets.VBox) and isinstance(ex.image, widgets.Image)
    assert bytes(ex.image.value).startswith(PNG_MAGIC)
    assert ex.marker == "layer 0 · head 0 · query none"
    assert "layer 0 · head 0 · query none" in ex.marker_widget.value
    assert _observed_by(ex.controls["layer"], ex)

    seen = {bytes(ex.image.value)}
    steps = [
        ("head", 1, "layer 0 · head 1 · query none"),
        ("layer", 1, "layer 1 · head 1 · query none"),
        ("query", 2, "layer 1 · head 1 · query 2 'c'"),
        ("head", "mean", "layer 1 · head mean · query 2 'c'"),
        ("head", "max", "layer 1 · head max · query 2 'c'"),
        ("show_mask", False, "layer 1 · head max · query 2 'c'"),
    ]
    for name, value, marker in steps:
        ex.controls[name].value = value
        assert bytes(ex.image.value) not in seen, f"setting {name}={value!r} did not redraw"
        seen.add(bytes(ex.image.value))
        assert ex.marker == marker
        assert marker.replace("'", "&#x27;") in ex.marker_widget.value
    # the query row's top weights are printed under the image
    assert "top weights of query 2" in ex.info_widget.value

    ex.controls["view"].value = "compare"
    assert ex.marker.startswith("compare · layer 1 · heads 0,1")
    assert bytes(ex.image.value) not in seen
    seen.add(bytes(ex.image.value))
    ex.controls["view"].value = "overview"
    assert ex.marker == "overview · 2 layers × 2 heads"
    assert bytes(ex.image.value) not in seen


def test_explorer_overview_titles_carry_entropy(attn):
    ex = AttentionExplorer(attn, TOKENS, layer_names=["first", "second"])
    fig = ex.render(view="overview")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 4
    assert titles[0] == f"Lfirst H0  ent {ex.entropy[0, 0]:.2f}"
    expected = attention_entropy(attn[0, 0, 0].double()).mean()  # the core's entropy
    assert ex.entropy[0, 0] == pytest.approx(float(expected))


def test_explorer_compare_uses_one_colour_scale(attn):
    ex = AttentionExplorer(attn, TOKENS, compare_heads=[0, 1, "mean"])
    fig = ex.render(view="compare")
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 3
    assert {im.get_clim() for im in images} == {(0.0, 1.0)}


def test_explorer_top_weights(attn, blank_figures):
    ex = AttentionExplorer(attn, TOKENS, mask="causal")
    top = ex.top_weights(0, 0, query=1)
    assert [j for j, _, _ in top] == sorted([0, 1], key=lambda j: -attn[0, 0, 0, 1, j].item())
    assert sum(v for _, _, v in top) == pytest.approx(1.0)


def test_explorer_accepts_numpy_4d_3d_and_lists(attn, blank_figures):
    four = attn[:, 0].numpy()
    assert AttentionExplorer(four, TOKENS).weights.shape == (2, 2, 5, 5)
    assert AttentionExplorer(four[0], TOKENS).weights.shape == (1, 2, 5, 5)
    layers = [attn[i] for i in range(2)]  # per-layer (batch, heads, T, T)
    assert AttentionExplorer(layers, TOKENS).weights.shape == (2, 2, 5, 5)


def test_explorer_batch_needs_batch_index(blank_figures):
    attn = causal_attention(batch=3)
    with pytest.raises(ValueError, match="batch_index"):
        AttentionExplorer(attn, TOKENS)
    ex = AttentionExplorer(attn, TOKENS, batch_index=2)
    np.testing.assert_allclose(ex.weights, attn[:, 2].numpy())


@pytest.mark.parametrize(
    ("attn", "kwargs", "match"),
    [
        (np.ones((5, 5)) / 5, {}, "shaped"),
        (np.ones((1, 1, 1, 1, 5, 5)) / 5, {}, "shaped"),
        (np.ones((1, 2, 5, 5)) / 5, dict(tokens="abcd"), "has 5 keys .columns. but 4 tokens"),
        (np.ones((1, 2, 3, 5)) / 5, {}, "query_tokens"),
        (np.ones((1, 2, 3, 5)) / 5, dict(query_tokens="ab"), "has 3 queries .rows. but 2 query_tokens"),
        (np.ones((1, 2, 5, 5)) / 5, dict(layer_names=["a", "b"]), "layer_names"),
        (np.ones((1, 2, 5, 5)) / 5, dict(head=2), "head=2"),
        (np.ones((1, 2, 5, 5)) / 5, dict(mask="causal"), "not causal"),
        (np.full((1, 2, 5, 5), np.nan), {}, "NaN"),
    ],
)
def test_explorer_bad_inputs_raise_clear_errors(attn, kwargs, match):
    kwargs = {"tokens": TOKENS, **kwargs}
    with pytest.raises(ValueError, match=match):
        AttentionExplorer(attn, **kwargs)


def test_explorer_long_input_warns_and_keeps_the_last_positions(blank_figures):
    t = 12
    attn = causal_attention(n_layer=1, n_head=1, t=t)
    tokens = [f"t{i}" for i in range(t)]
    with pytest.warns(LongInputWarning, match="max_tokens=8"):
        ex = AttentionExplorer(attn, tokens, max_tokens=8, mask="causal")
    assert ex.weights.shape == (1, 1, 8, 8)
    assert ex.tokens == tokens[-8:]
    np.testing.assert_allclose(ex.weights[0, 0], attn[0, 0, 0, -8:, -8:].numpy())
    assert ex.mask.shape == (1, 1, 8, 8)
    # within the limit: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AttentionExplorer(attn, tokens, max_tokens=12)


def test_explorer_cross_attention():
    attn = full_attention(1, 1, 2, 3, 6)  # decoder queries (3) over encoder keys (6)
    ex = AttentionExplorer(attn, list("uvwxyz"), query_tokens=["A", "B", "C"], query=1)
    assert (ex.n_queries, ex.n_keys) == (3, 6)
    assert ex.marker == "layer 0 · head 0 · query 1 'B'"
    assert "cross-attention" in repr(ex)
    for view in ("single", "compare", "overview"):
        ex.controls["view"].value = view
        assert bytes(ex.image.value).startswith(PNG_MAGIC)
    st = ex.static(overview=False)
    assert len(st.views) == 1 * 4
    images = [bytes(v.children[1].value) for v in st.views]
    assert all(png.startswith(PNG_MAGIC) for png in images)
    assert len(set(images)) == len(images)  # every pre-rendered view is a different picture


def test_save_png_writes_a_valid_png(attn, tmp_path):
    ex = AttentionExplorer(attn, TOKENS, query=3)
    path = ex.save_png(tmp_path / "view.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50


def test_repr_mimebundle_is_stable_text_plus_widget_view(attn, blank_figures):
    ex = AttentionExplorer(attn, TOKENS)
    bundle = ex._repr_mimebundle_()
    assert bundle["text/plain"] == "AttentionExplorer(2 layers × 2 heads, 5 queries × 5 keys, live)"
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == ex.widget.model_id


# --------------------------------------------------------------------------------------------------
# AttentionExplorer, static
# --------------------------------------------------------------------------------------------------


def _observed_by(ctrl, explorer):
    """Whether the explorer observes this control's value in Python (live mode does)."""
    handlers = ctrl._trait_notifiers.get("value", {}).get("change", [])
    return any(getattr(h, "__self__", None) is explorer for h in handlers)


def _link_ends(link):
    (src, src_attr), (dst, dst_attr) = link.source, link.target
    return src, src_attr, dst, dst_attr


def test_static_mode_prerenders_every_layer_and_head_with_nested_jslinked_stacks(
    attn, blank_figures
):
    ex = AttentionExplorer(attn, TOKENS, mode="static", layer=1, head="mean", query=4)
    n_layer, n_head = 2, 2
    assert ex.image is None  # nothing to redraw: no kernel needed
    assert len(ex.views) == n_layer * (n_head + 2) + 1  # + the overview
    # stacks: the per-head/overview switch, the layer Stack, one head Stack per layer
    assert len(ex.stacks) == 1 + 1 + n_layer
    assert len(ex.links) == len(ex.stacks)
    assert all(isinstance(link, Link) for link in ex.links)

    top, outer, *inner = ex.stacks
    src, src_attr, dst, dst_attr = _link_ends(ex.links[0])
    assert (src, src_attr, dst, dst_attr) == (
        ex.controls["static_view"],
        "index",
        top,
        "selected_index",
    )
    assert _link_ends(ex.links[1]) == (ex.controls["layer"], "index", outer, "selected_index")
    for link, stack in zip(ex.links[2:], inner, strict=True):
        assert _link_ends(link) == (ex.controls["head"], "index", stack, "selected_index")
        assert len(stack.children) == n_head + 2
    assert len(outer.children) == n_layer
    # the Stacks start on the chosen view
    assert outer.selected_index == 1
    assert {s.selected_index for s in inner} == {ex.controls["head"].index} == {2}

    # every leaf: its own marker and image; markers all different
    markers = [v.children[0].value for v in ex.views]
    assert len(set(markers)) == len(markers)
    assert sum("layer 1 · head mean · query 4 &#x27;e&#x27;" in m for m in markers) == 1
    leaf = inner[1].children[2]
    assert "layer 1 · head mean" in leaf.children[0].value
    assert bytes(leaf.children[1].value).startswith(PNG_MAGIC)
    # the controls shown in the page are the jslinked ones, and nothing observes them in Python
    assert "static_view" in ex.controls and "show_mask" in ex.controls
    assert not any(_observed_by(ex.controls[name], ex) for name in ("layer", "head"))


def test_static_without_overview_and_view_limit(attn, blank_figures):
    ex = AttentionExplorer(attn, TOKENS, mode="static", overview=False)
    assert (len(ex.views), len(ex.stacks), len(ex.links)) == (8, 3, 3)
    with pytest.raises(ValueError, match="max_views"):
        AttentionExplorer(attn, TOKENS, mode="static", max_views=7)


def test_static_copy_keeps_the_current_choice(attn, blank_figures):
    live = AttentionExplorer(attn, TOKENS)
    live.controls["layer"].value = 1
    live.controls["head"].value = 1
    live.controls["query"].value = 3
    st = live.static(overview=False)
    assert st.mode == "static" and live.mode == "live"
    assert st.stacks[0].selected_index == 1
    assert st.stacks[2].selected_index == 1
    assert "query row 3 highlighted" in st.widget.children[-1].value


def test_default_mode_from_setting_and_environment(attn, monkeypatch, blank_figures):
    try:
        viz.set_widget_mode("static")
        assert AttentionExplorer(attn, TOKENS).mode == "static"
    finally:
        viz.set_widget_mode(None)
    monkeypatch.setenv("TRANSFORMER_CORE_WIDGET_MODE", "static")
    assert AttentionExplorer(attn, TOKENS).mode == "static"
    monkeypatch.delenv("TRANSFORMER_CORE_WIDGET_MODE")
    assert AttentionExplorer(attn, TOKENS).mode == "live"
    with pytest.raises(ValueError, match="live"):
        AttentionExplorer(attn, TOKENS, mode="browser")


# --------------------------------------------------------------------------------------------------
# from_model
# --------------------------------------------------------------------------------------------------


class TinyAttentionModel(nn.Module):
    """Stands in for GPT: returns (logits, attn) with attn (n_layer, B, n_head, T, T)."""

    def __init__(self, vocab=10, n_layer=2, n_head=2, as_mapping=False):
        super().__init__()
        self.emb = nn.Embedding(vocab, 4)
        self.n_layer, self.n_head, self.as_mapping = n_layer, n_head, as_mapping
        self.seen_training, self.seen_grad = None, None

    def forward(self, idx, return_attention=False):
        self.seen_training, self.seen_grad = self.training, torch.is_grad_enabled()
        x = self.emb(idx)  # (B, T, 4)
        b, t = idx.shape
        scores = torch.einsum("btd,bsd->bts", x, x)[:, None, None]  # (B, 1, 1, T, T)
        scores = scores.expand(b, self.n_layer, self.n_head, t, t).transpose(0, 1)
        future = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        attn = scores.masked_fill(future, float("-inf")).softmax(-1)
        logits = x @ self.emb.weight.T
        if not return_attention:
            return logits
        return logits, ({"decoder_self": attn} if self.as_mapping else attn)


class CharTokenizer:
    def encode(self, text):
        return [ord(c) - ord("a") for c in text]

    def decode(self, ids):
        return "".join(chr(i + ord("a")) for i in ids)


def test_from_model_runs_in_eval_mode_without_grad_and_decodes_tokens(blank_figures):
    model = TinyAttentionModel().train()
    ex = AttentionExplorer.from_model(model, "abca", CharTokenizer(), mask="causal")
    assert model.seen_training is False and model.seen_grad is False
    assert model.training  # put back
    assert ex.tokens == list("abca")
    assert ex.weights.shape == (2, 2, 4, 4)
    assert ex.mask is not None and ex.mask[0, 0, 0, 1]


def test_from_model_with_ids_and_mapping(blank_figures):
    ids = torch.tensor([[1, 2, 3]])
    ex = AttentionExplorer.from_model(TinyAttentionModel(), ids)
    assert ex.tokens == ["1", "2", "3"]
    model = TinyAttentionModel(as_mapping=True)
    with pytest.raises(ValueError, match="attention_key"):
        AttentionExplorer.from_model(model, [1, 2])
    ex = AttentionExplorer.from_model(model, [1, 2], attention_key="decoder_self")
    assert ex.weights.shape == (2, 2, 2, 2)
    with pytest.raises(ValueError, match="tokenizer"):
        AttentionExplorer.from_model(TinyAttentionModel(), "abc")


def test_from_model_with_the_books_gpt(blank_figures):
    from transformer_core import gpt
    cfg = gpt.GPTConfig(vocab_size=12, context_length=16, n_layer=2, n_head=2, d_model=16)
    torch.manual_seed(0)
    ex = AttentionExplorer.from_model(gpt.GPT(cfg), [3, 1, 4, 1, 5], mask="causal")
    assert ex.weights.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(ex.weights.sum(-1), 1.0, atol=1e-5)
    assert ex.mask[..., 0, 1].all() and not ex.mask[..., 1, 0].any()


def test_save_html_embeds_the_views_and_their_jslinks(attn, tmp_path, blank_figures):
    import json
    import re

    ex = AttentionExplorer(attn, TOKENS, mode="static")
    page = ex.save_html(tmp_path / "explorer.html", embed_url="embed.js").read_text()
    assert 'src="embed.js"' in page
    state = re.search(r'widget-state\+json">\s*(.*?)\s*</script>', page, re.S).group(1)
    models = [m["model_name"] for m in json.loads(state)["state"].values()]
    assert models.count("LinkModel") == len(ex.links) == 4
    assert models.count("StackModel") == len(ex.stacks)
    assert models.count("ImageModel") == len(ex.views)


def test_from_model_with_the_books_encoder_decoder(blank_figures):
    from transformer_core import Transformer, TransformerConfig

    torch.manual_seed(0)
    cfg = TransformerConfig(src_vocab_size=12, tgt_vocab_size=12, d_model=16, n_head=2, d_ff=32,
                            n_encoder_layers=2, n_decoder_layers=1, context_length=32, dropout=0.0)
    model = Transformer(cfg)
    src, tgt = [3, 1, 4, 1, 5], [2, 7, 1]
    _, attn = model(torch.tensor([src]), torch.tensor([tgt]), return_attention=True)

    cross = AttentionExplorer.from_model(model, src, target=tgt, attention_key="cross")
    assert cross.weights.shape == (1, 2, 3, 5)  # (decoder layers, heads, target queries, source keys)
    assert cross.tokens == ["3", "1", "4", "1", "5"] and cross.query_tokens == ["2", "7", "1"]
    np.testing.assert_allclose(cross.weights, attn.cross[:, 0].detach().numpy(), atol=1e-6)

    decoder = AttentionExplorer.from_model(model, src, target=tgt, attention_key="decoder", mask="causal")
    assert decoder.weights.shape == (1, 2, 3, 3) and decoder.tokens == ["2", "7", "1"]
    encoder = AttentionExplorer.from_model(model, src, target=tgt, attention_key="encoder")
    assert encoder.weights.shape == (2, 2, 5, 5) and encoder.tokens == ["3", "1", "4", "1", "5"]

    with pytest.raises(ValueError, match="attention_key"):
        AttentionExplorer.from_model(model, src, target=tgt)
