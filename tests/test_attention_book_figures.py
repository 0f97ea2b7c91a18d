"""The book's smaller figures (attention_book.figures): softmax temperature, positional encodings,
sampling; live and static, and drawn from the library's own functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from attention_book import figures
from transformer_core import sinusoidal_encoding


@pytest.fixture
def blank_figures(monkeypatch):
    """For tests of the widget structure only: every view is a tiny blank figure (fast)."""

    def blank(self, state):
        return Figure(figsize=(0.5, 0.5), dpi=20)

    for cls in (
        figures.SoftmaxTemperatureExplorer,
        figures.PositionalEncodingExplorer,
        figures.SamplingExplorer,
    ):
        monkeypatch.setattr(cls, "_figure", blank)


def _link_ends(link):
    (src, src_attr), (dst, dst_attr) = link.source, link.target
    return src, src_attr, dst, dst_attr


def test_default_mode_from_the_environment(monkeypatch, blank_figures):
    monkeypatch.setenv("TRANSFORMER_CORE_WIDGET_MODE", "static")
    assert figures.softmax_temperature_explorer([1.0, 2.0]).mode == "static"
    monkeypatch.delenv("TRANSFORMER_CORE_WIDGET_MODE")
    assert figures.softmax_temperature_explorer([1.0, 2.0]).mode == "live"
    with pytest.raises(ValueError, match="live"):
        figures.softmax_temperature_explorer([1.0, 2.0], mode="browser")


def test_softmax_temperature_explorer_live_and_static():
    logits = [2.0, 1.0, 0.0, -1.0]
    ex = figures.softmax_temperature_explorer(logits, temperatures=(0.5, 1.0, 2.0), labels="abcd")
    assert ex.marker == "temperature 1"
    before = bytes(ex.image.value)
    ex.controls["temperature"].value = 0.5
    assert bytes(ex.image.value) != before and ex.marker == "temperature 0.5"
    heights = [p.get_height() for p in ex.render().axes[0].patches[:4]]
    np.testing.assert_allclose(heights, torch.tensor(logits).div(0.5).softmax(-1).numpy())
    st = ex.static()
    assert len(st.views) == 3 and len(st.stacks) == 1 and len(st.links) == 1
    assert _link_ends(st.links[0]) == (
        st.controls["temperature"],
        "index",
        st.stacks[0],
        "selected_index",
    )
    assert st.stacks[0].selected_index == 0  # the copy starts where the live one was
    with pytest.raises(ValueError, match="positive"):
        figures.softmax_temperature_explorer(logits, temperatures=(0.0, 1.0))
    with pytest.raises(ValueError, match="1-D"):
        figures.softmax_temperature_explorer(np.zeros((2, 2)))


def test_positional_encoding_explorer_draws_the_librarys_table():
    ex = figures.positional_encoding_explorer(d_model=16, max_len=50)
    np.testing.assert_array_equal(ex.encodings, sinusoidal_encoding(50, 16).double().numpy())
    with pytest.raises(ValueError, match="even d_model"):
        figures.positional_encoding_explorer(d_model=5, max_len=4)


def test_positional_encoding_explorer():
    ex = figures.positional_encoding_explorer(d_model=16, max_len=32)
    assert ex.marker == "pair 0 · dims 0, 1"
    before = bytes(ex.image.value)
    ex.controls["pair"].value = 5
    assert bytes(ex.image.value) != before and ex.marker == "pair 5 · dims 10, 11"
    assert len(ex._values["pair"]) == 8  # live: every pair


def test_positional_encoding_explorer_static_offers_a_few_pairs(blank_figures):
    st = figures.positional_encoding_explorer(d_model=512, max_len=32, mode="static")
    assert st._values["pair"][:4] == [0, 1, 3, 7] and st._values["pair"][-1] == 255
    assert len(st.views) == len(st._values["pair"]) <= 9 and len(st.links) == 1
    learned = np.random.default_rng(0).normal(size=(20, 6))
    ex = figures.positional_encoding_explorer(encodings=learned)
    assert (ex.max_len, ex.d_model) == (20, 6)
    np.testing.assert_array_equal(ex.encodings, learned)
    with pytest.raises(ValueError, match="max_len, d_model"):
        figures.positional_encoding_explorer(encodings=np.zeros(5))


def test_sampling_distribution_rules():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    probs_at_t1, kept, renorm = figures.sampling_distribution(logits)
    np.testing.assert_allclose(probs_at_t1, [0.5, 0.3, 0.15, 0.05])
    assert kept.all()
    _, kept, renorm = figures.sampling_distribution(logits, top_k=2)
    assert kept.tolist() == [True, True, False, False]
    np.testing.assert_allclose(renorm, [0.625, 0.375, 0, 0])
    _, kept, _ = figures.sampling_distribution(logits, top_p=0.75)  # 0.5 < 0.75 <= 0.8
    assert kept.tolist() == [True, True, False, False]
    _, kept, _ = figures.sampling_distribution(logits, top_p=0.1)  # the top token always stays
    assert kept.tolist() == [True, False, False, False]
    probs, _, _ = figures.sampling_distribution(logits, temperature=100.0)
    assert probs.max() - probs.min() < 0.01
    with pytest.raises(ValueError, match="temperature"):
        figures.sampling_distribution(logits, temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        figures.sampling_distribution(logits, top_p=1.5)
    # the sampler's rule (transformer_core.sampling): top_p=1 keeps every token, k past the
    # vocabulary is an error
    _, kept, renorm = figures.sampling_distribution(logits, top_p=1.0)
    assert kept.all() and renorm == pytest.approx(probs_at_t1)
    with pytest.raises(ValueError, match="vocabulary"):
        figures.sampling_distribution(logits, top_k=5)
    with pytest.raises(ValueError, match="vocabulary"):
        figures.sampling_explorer(logits, list("abcd"), top_ks=(None, 5))


def test_sampling_explorer_live_and_static():
    rng = np.random.default_rng(0)
    logits, tokens = rng.normal(size=12) * 2, [f"w{i}" for i in range(12)]
    ex = figures.sampling_explorer(
        logits, tokens, temperatures=(0.5, 1.0), top_ks=(None, 2), top_ps=(None, 0.5)
    )
    assert ex.marker == "temperature 1 · top-k all · top-p off"
    seen = {bytes(ex.image.value)}
    for name, value in (("top_k", 2), ("top_p", 0.5), ("temperature", 0.5)):
        ex.controls[name].value = value
        assert bytes(ex.image.value) not in seen
        seen.add(bytes(ex.image.value))
    assert ex.marker == "temperature 0.5 · top-k 2 · top-p 0.5"
    assert ex.info_widget.value.count("·") <= 1  # at most 2 tokens kept
    # the right panel is the renormalised kept set: it sums to 1
    fig = ex.render()
    right = fig.axes[1]
    assert sum(p.get_height() for p in right.patches) == pytest.approx(1.0)

    with pytest.raises(ValueError, match="tokens"):
        figures.sampling_explorer(logits, tokens[:-1])


def test_sampling_explorer_static_nests_three_levels(blank_figures):
    logits, tokens = np.arange(6.0), list("abcdef")
    st = figures.sampling_explorer(logits, tokens, mode="static")
    assert len(st.views) == 3 * 3 * 3
    assert len(st.stacks) == len(st.links) == 1 + 3 + 9  # temperature, then top-k, then top-p
    sources = [_link_ends(link)[0] for link in st.links]
    assert sources[0] is st.controls["temperature"]  # outermost first
    counts = {name: sum(src is ctrl for src in sources) for name, ctrl in st.controls.items()}
    assert counts == {"temperature": 1, "top_k": 3, "top_p": 9}
    markers = {v.children[0].value for v in st.views}
    assert len(markers) == 27
    assert sum("temperature 2 · top-k 5 · top-p 0.5</span>" in m for m in markers) == 1
    with pytest.raises(ValueError, match="max_views"):
        figures.sampling_explorer(
            logits,
            tokens,
            top_ps=(None, 0.9, 0.8, 0.5),
            mode="static",
            top_ks=(None, 1, 2, 3, 4, 5),
        )


def test_sampling_distribution_agrees_with_the_sampler():
    from transformer_core import sampling
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(40, generator=g) * 2
    logits[5] = logits[6]  # a tie
    for t, k, p in [(1.0, None, None), (0.7, 5, None), (1.3, None, 0.8), (1.0, 10, 0.5)]:
        _, _, renorm = figures.sampling_distribution(logits, t, k, p)
        expected = sampling.next_token_probs(logits[None], t, k, p)[0].double().numpy()
        np.testing.assert_allclose(renorm, expected, atol=1e-6)
