"""The chapters' smaller interactive figures: softmax temperature (01), positional encodings (03),
sampling (08).

Each is an explorer built on :class:`transformer_core.viz.FigureExplorer` (live or static, like the
attention explorer) and draws what the library computes: the sinusoidal table of
:func:`transformer_core.sinusoidal_encoding`, the entropy of
:func:`transformer_core.interpret.attention_entropy`, the top-k / top-p rule of
:mod:`transformer_core.sampling`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from transformer_core import sinusoidal_encoding
from transformer_core.interpret import attention_entropy
from transformer_core.sampling import check_sampling_args, filter_logits
from transformer_core.viz import (
    HIGHLIGHT_COLOR,
    FigureExplorer,
    as_tokens,
    new_figure,
    tick_fontsize,
    to_numpy,
    token_label,
)

__all__ = [
    "PositionalEncodingExplorer",
    "SamplingExplorer",
    "SoftmaxTemperatureExplorer",
    "positional_encoding_explorer",
    "sampling_distribution",
    "sampling_explorer",
    "softmax_temperature_explorer",
]

# --------------------------------------------------------------------------------------------------
# Softmax temperature
# --------------------------------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(x), dim=-1).numpy()


def _logits_1d(logits: Any) -> np.ndarray:
    z = to_numpy(logits, "logits")
    if z.ndim != 1:
        raise ValueError(f"logits must be 1-D (one score per token), got shape {tuple(z.shape)}")
    if z.size == 0:
        raise ValueError("logits is empty")
    if not np.isfinite(z).all():
        raise ValueError("logits contain NaN or infinite values")
    return z


def _choice_options(values: Sequence[Any], fmt: Callable[[Any], str]) -> list[tuple[str, Any]]:
    return [(fmt(v), v) for v in values]


def _nearest(values: Sequence[float], x: float) -> float:
    return min(values, key=lambda v: abs(math.log(v) - math.log(x)))


class SoftmaxTemperatureExplorer(FigureExplorer):
    """Bar chart of ``softmax(logits / T)`` with a temperature slider.

    What to notice: a small T sharpens the distribution towards the largest logit (T -> 0 is
    argmax), a large T flattens it towards uniform; the order of the bars never changes. The
    outline shows T = 1 for reference.
    """

    _static_controls = ("temperature",)
    _css_class = "tc-softmax-explorer"

    def __init__(
        self,
        logits: Any,
        temperatures: Sequence[float] = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0),
        labels: Any = None,
        *,
        temperature: float = 1.0,
        mode: str | None = None,
        dpi: float = 100,
        max_views: int = 64,
    ) -> None:
        super().__init__(mode, dpi, max_views)
        self._init_kwargs = dict(
            logits=logits,
            temperatures=temperatures,
            labels=labels,
            temperature=temperature,
            dpi=dpi,
            max_views=max_views,
        )
        self.logits = _logits_1d(logits)
        temps = [float(t) for t in temperatures]
        if not temps or any(t <= 0 for t in temps):
            raise ValueError(f"temperatures must be positive, got {list(temperatures)}")
        self.labels = (
            as_tokens(labels, "labels")
            if labels is not None
            else [str(i) for i in range(self.logits.size)]
        )
        if len(self.labels) != self.logits.size:
            raise ValueError(f"{len(self.labels)} labels for {self.logits.size} logits")
        self._add_control(
            "temperature",
            widgets.SelectionSlider,
            _choice_options(temps, lambda t: f"{t:g}"),
            _nearest(temps, temperature),
            description="temperature",
            continuous_update=False,
        )
        self._build()

    def _figure(self, state: dict[str, Any]) -> Figure:
        t = state["temperature"]
        p = _softmax(self.logits / t)
        ref = _softmax(self.logits)
        n = p.size
        fig = new_figure((min(max(0.45 * n + 1.5, 6.0), 11.0), 3.2), self.dpi)
        ax = fig.add_subplot()
        x = np.arange(n)
        ax.bar(x, p, color="#3b75af", label=f"T = {t:g}")
        ax.bar(
            x,
            ref,
            fill=False,
            edgecolor="black",
            linewidth=1,
            linestyle="--",
            label="T = 1 (reference)",
        )
        ax.set_ylim(0, 1)
        ax.set_xticks(x, [token_label(s) for s in self.labels], fontsize=tick_fontsize(n))
        ax.set_ylabel("probability")
        ent = float(attention_entropy(torch.from_numpy(p)[None]))  # one row: (1, n) -> (1,)
        ax.set_title(
            f"softmax(logits / {t:g}): max p {p.max():.2f}, entropy {ent:.2f} nats", fontsize=10
        )
        ax.legend(loc="upper right", fontsize=8)
        return fig

    def _marker_text(self, state: dict[str, Any]) -> str:
        return f"temperature {state['temperature']:g}"

    def _static_defaults(self) -> dict[str, Any]:
        return dict(temperature=self._state()["temperature"])

    def _summary(self) -> str:
        return f"SoftmaxTemperatureExplorer({self.logits.size} logits, {self.mode})"


def softmax_temperature_explorer(
    logits: Any,
    temperatures: Sequence[float] = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0),
    labels: Any = None,
    *,
    temperature: float = 1.0,
    mode: str | None = None,
    dpi: float = 100,
) -> SoftmaxTemperatureExplorer:
    """A bar chart of ``softmax(logits / T)``, T chosen on a slider of ``temperatures``.

    ``logits`` (n,) scores; ``labels`` names the bars (default their index). Static mode
    pre-renders one view per temperature.
    """
    return SoftmaxTemperatureExplorer(
        logits, temperatures, labels, temperature=temperature, mode=mode, dpi=dpi
    )


# --------------------------------------------------------------------------------------------------
# Positional encodings
# --------------------------------------------------------------------------------------------------


def _geometric_pairs(n_pairs: int, limit: int = 9) -> list[int]:
    pairs = sorted({0, n_pairs - 1} | {2**k - 1 for k in range(n_pairs.bit_length() + 1)})
    pairs = [p for p in pairs if 0 <= p < n_pairs]
    if len(pairs) > limit:
        idx = np.linspace(0, len(pairs) - 1, limit).round().astype(int)
        pairs = [pairs[i] for i in sorted(set(idx))]
    return pairs


class PositionalEncodingExplorer(FigureExplorer):
    """Heatmap of positional encodings (positions × dimensions) and the curves of one pair.

    What to notice: the low dimensions oscillate fast (short wavelength), the high ones slowly, so
    every position gets a distinct pattern; each pair (2i, 2i+1) is a sine and a cosine of the
    same frequency, which makes ``PE[pos + k]`` a rotation of ``PE[pos]``.
    """

    _static_controls = ("pair",)
    _css_class = "tc-positional-explorer"

    def __init__(
        self,
        d_model: int = 64,
        max_len: int = 128,
        *,
        encodings: Any = None,
        pairs: Sequence[int] | None = None,
        pair: int | None = None,
        mode: str | None = None,
        dpi: float = 100,
        max_views: int = 32,
    ) -> None:
        super().__init__(mode, dpi, max_views)
        self._init_kwargs = dict(
            d_model=d_model,
            max_len=max_len,
            encodings=encodings,
            pairs=pairs,
            pair=pair,
            dpi=dpi,
            max_views=max_views,
        )
        if encodings is None:
            self.encodings = sinusoidal_encoding(max_len, d_model).double().numpy()
            self.sinusoidal = True
        else:
            enc = to_numpy(encodings, "encodings")
            if enc.ndim != 2:
                raise ValueError(f"encodings must be (max_len, d_model), got shape {enc.shape}")
            self.encodings = enc
            self.sinusoidal = False
        self.max_len, self.d_model = self.encodings.shape
        n_pairs = (self.d_model + 1) // 2
        if pairs is None:
            pairs = list(range(n_pairs)) if self.mode == "live" else _geometric_pairs(n_pairs)
        pairs = [int(p) for p in pairs]
        if not pairs or any(not 0 <= p < n_pairs for p in pairs):
            raise ValueError(f"pairs must lie in 0..{n_pairs - 1}, got {pairs}")
        if pair is None or pair not in pairs:
            pair = pairs[0] if pair is None else min(pairs, key=lambda p: abs(p - pair))
        self._add_control(
            "pair",
            widgets.SelectionSlider,
            _choice_options(pairs, lambda p: f"{2 * p},{min(2 * p + 1, self.d_model - 1)}"),
            pair,
            description="dims",
            continuous_update=False,
        )
        self._build()

    def _dims(self, pair: int) -> list[int]:
        return [d for d in (2 * pair, 2 * pair + 1) if d < self.d_model]

    def _figure(self, state: dict[str, Any]) -> Figure:
        pair = state["pair"]
        dims = self._dims(pair)
        pe = self.encodings
        fig = new_figure((8.0, 6.0), self.dpi)
        ax_map, ax_curve = fig.subplots(2, 1, height_ratios=[3, 2])
        lim = 1.0 if self.sinusoidal else float(np.abs(pe).max() or 1.0)
        im = ax_map.imshow(
            pe, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest"
        )
        ax_map.add_patch(
            Rectangle(
                (dims[0] - 0.5, -0.5),
                len(dims),
                self.max_len,
                fill=False,
                edgecolor=HIGHLIGHT_COLOR,
                linewidth=2,
            )
        )
        ax_map.set_xlabel("dimension")
        ax_map.set_ylabel("position")
        ax_map.set_title(
            f"encodings ({self.max_len} positions × {self.d_model} dimensions)", fontsize=10
        )
        fig.colorbar(im, ax=ax_map, shrink=0.8)
        pos = np.arange(self.max_len)
        for d, style in zip(dims, ("-", "--"), strict=False):
            name = ("sin" if d % 2 == 0 else "cos") if self.sinusoidal else "dim"
            ax_curve.plot(pos, pe[:, d], style, label=f"{name} · dim {d}")
        ax_curve.set_xlabel("position")
        ax_curve.set_ylim(-lim * 1.1, lim * 1.1)
        title = f"dims {', '.join(map(str, dims))}"
        if self.sinusoidal:
            wavelength = 2 * math.pi * 10000.0 ** (2 * pair / self.d_model)  # the paper's base
            title += f": wavelength {wavelength:.3g} positions"
        ax_curve.set_title(title, fontsize=10)
        ax_curve.legend(loc="upper right", fontsize=8)
        return fig

    def _marker_text(self, state: dict[str, Any]) -> str:
        return f"pair {state['pair']} · dims {', '.join(map(str, self._dims(state['pair'])))}"

    def _static_defaults(self) -> dict[str, Any]:
        return dict(pair=self._state()["pair"])

    def _summary(self) -> str:
        return (
            f"PositionalEncodingExplorer({self.max_len} positions × {self.d_model} dims, "
            f"{self.mode})"
        )


def positional_encoding_explorer(
    d_model: int = 64,
    max_len: int = 128,
    *,
    encodings: Any = None,
    pairs: Sequence[int] | None = None,
    mode: str | None = None,
    dpi: float = 100,
) -> PositionalEncodingExplorer:
    """Heatmap of positional encodings plus the curves of one chosen dimension pair.

    The sinusoidal encodings are the library's (:func:`transformer_core.sinusoidal_encoding`,
    an even ``d_model``), or pass any
    precomputed ``encodings`` (max_len, d_model), e.g. a learned embedding table. ``pairs`` are
    the dimension pairs (2i, 2i+1) offered on the slider: all of them in live mode, about nine
    spread geometrically in static mode.
    """
    return PositionalEncodingExplorer(
        d_model, max_len, encodings=encodings, pairs=pairs, mode=mode, dpi=dpi
    )


# --------------------------------------------------------------------------------------------------
# Sampling: temperature, top-k, top-p
# --------------------------------------------------------------------------------------------------


def sampling_distribution(
    logits: Any,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The next-token distribution a sampler draws from, step by step.

    Returns ``(probs, kept, renormalised)``, each (vocab,): ``probs = softmax(logits / T)``;
    ``kept`` (bool) the tokens that survive top-k and then top-p, by the sampler's own rule
    (:func:`transformer_core.sampling.filter_logits`: the k most likely, ties with the k-th too;
    then the smallest set of the most likely whose probability reaches p, at least one token;
    ``top_p=1`` keeps all); ``renormalised`` the kept probabilities divided by their sum (0
    elsewhere), which is what :func:`transformer_core.sampling.next_token_probs` samples from.
    """
    z = torch.from_numpy(_logits_1d(logits))
    check_sampling_args(temperature, top_k, top_p, z.numel())
    scaled = z / temperature
    filtered = filter_logits(scaled[None], top_k, top_p)[0]
    probs = torch.softmax(scaled, dim=-1)
    return probs.numpy(), torch.isfinite(filtered).numpy(), torch.softmax(filtered, dim=-1).numpy()


class SamplingExplorer(FigureExplorer):
    """Next-token probabilities under temperature, top-k and top-p, kept tokens highlighted.

    Left: ``softmax(logits / T)``, the kept set in colour, the cut tokens in grey. Right: the
    kept probabilities renormalised to sum to 1, the distribution the sampler really draws from.
    What to notice: top-k keeps a fixed number of tokens however flat the distribution is; top-p
    keeps few tokens when the model is sure and many when it is not.
    """

    _static_controls = ("temperature", "top_k", "top_p")
    _css_class = "tc-sampling-explorer"

    def __init__(
        self,
        logits: Any,
        tokens: Any,
        *,
        temperatures: Sequence[float] = (0.5, 1.0, 2.0),
        top_ks: Sequence[int | None] = (None, 1, 5),
        top_ps: Sequence[float | None] = (None, 0.9, 0.5),
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        max_bars: int = 20,
        mode: str | None = None,
        dpi: float = 100,
        max_views: int = 64,
    ) -> None:
        super().__init__(mode, dpi, max_views)
        self._init_kwargs = dict(
            logits=logits,
            tokens=tokens,
            temperatures=temperatures,
            top_ks=top_ks,
            top_ps=top_ps,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            max_bars=max_bars,
            dpi=dpi,
            max_views=max_views,
        )
        self.logits = _logits_1d(logits)
        self.tokens = as_tokens(tokens, "tokens")
        if len(self.tokens) != self.logits.size:
            raise ValueError(f"{len(self.tokens)} tokens for {self.logits.size} logits")
        temps = [float(t) for t in temperatures]
        if not temps or any(t <= 0 for t in temps):
            raise ValueError(f"temperatures must be positive, got {list(temperatures)}")
        for k in top_ks:  # the sampler's own checks: k from 1 to the vocabulary size
            check_sampling_args(1.0, k, None, self.logits.size)
        for p in top_ps:
            check_sampling_args(1.0, None, p)
        self.max_bars = max_bars
        self._add_control(
            "temperature",
            widgets.SelectionSlider,
            _choice_options(temps, lambda t: f"{t:g}"),
            _nearest(temps, temperature),
            description="temperature",
            continuous_update=False,
        )
        # a selection widget reads the value None as "nothing selected": "off" is stored as
        # top_k=0 and top_p=1.0 in the controls and turned back into None in _state
        ks = list(dict.fromkeys(int(k or 0) for k in [*top_ks, top_k]))
        self._add_control(
            "top_k",
            widgets.Dropdown,
            _choice_options(ks, lambda k: "all" if k == 0 else str(k)),
            int(top_k or 0),
            description="top-k",
        )
        ps = list(dict.fromkeys(float(p or 1.0) for p in [*top_ps, top_p]))
        self._add_control(
            "top_p",
            widgets.Dropdown,
            _choice_options(ps, lambda p: "1 (off)" if p >= 1 else f"{p:g}"),
            float(top_p or 1.0),
            description="top-p",
        )
        self._build()

    def _state(self) -> dict[str, Any]:
        s = super()._state()
        s["top_k"] = s["top_k"] or None
        s["top_p"] = None if s["top_p"] >= 1 else s["top_p"]
        return s

    def _figure(self, state: dict[str, Any]) -> Figure:
        return self._sampling_figure(self._normalize(state))

    def _normalize(self, state: dict[str, Any]) -> dict[str, Any]:
        # static mode enumerates the raw control values (0, 1.0): map them to None as well
        k, p = state["top_k"], state["top_p"]
        return {**state, "top_k": k or None, "top_p": None if p is None or p >= 1 else p}

    def _sampling_figure(self, state: dict[str, Any]) -> Figure:
        t, k, p = state["temperature"], state["top_k"], state["top_p"]
        probs, kept, renorm = sampling_distribution(self.logits, t, k, p)
        order = np.argsort(-self.logits, kind="stable")[: self.max_bars]
        n = order.size
        labels = [token_label(self.tokens[i]) for i in order]
        fig = new_figure((min(max(0.7 * n + 2.0, 7.0), 13.0), 3.4), self.dpi)
        ax_p, ax_r = fig.subplots(1, 2, sharey=True)
        x = np.arange(n)
        colors = ["#3b75af" if kept[i] else "#c8c8c8" for i in order]
        ax_p.bar(x, probs[order], color=colors)
        ax_r.bar(x, renorm[order], color="#e4572e")
        for ax in (ax_p, ax_r):
            ax.set_xticks(x, labels, rotation=90, fontsize=tick_fontsize(n))
            ax.set_ylim(0, 1)
        ax_p.set_ylabel("probability")
        ax_p.set_title(f"softmax(logits / {t:g}): kept in colour", fontsize=10)
        n_kept = int(kept.sum())
        ax_r.set_title(
            f"renormalised over the {n_kept} kept (mass {probs[kept].sum():.2f})", fontsize=10
        )
        if self.logits.size > n:
            fig.suptitle(f"the {n} most likely of {self.logits.size} tokens", fontsize=9)
        return fig

    def _marker_text(self, state: dict[str, Any]) -> str:
        state = self._normalize(state)
        k, p = state["top_k"], state["top_p"]
        ktext = "all" if k is None else str(k)
        ptext = "off" if p is None else f"{p:g}"
        return f"temperature {state['temperature']:g} · top-k {ktext} · top-p {ptext}"

    def _info_html(self, state: dict[str, Any]) -> str:
        state = self._normalize(state)
        _, kept, renorm = sampling_distribution(
            self.logits, state["temperature"], state["top_k"], state["top_p"]
        )
        idx = np.flatnonzero(kept)
        idx = idx[np.argsort(-renorm[idx], kind="stable")][:10]
        items = " · ".join(
            f"{html.escape(repr(self.tokens[i]))} {renorm[i]:.2f}" for i in idx
        )
        more = "" if kept.sum() <= 10 else f" … ({int(kept.sum())} kept)"
        return f"<small>sampled from: {items}{more}</small>"

    def _static_defaults(self) -> dict[str, Any]:
        s = self._state()
        return dict(temperature=s["temperature"], top_k=s["top_k"], top_p=s["top_p"])

    def _summary(self) -> str:
        return f"SamplingExplorer({self.logits.size} tokens, {self.mode})"


def sampling_explorer(
    logits: Any,
    tokens: Any,
    *,
    temperatures: Sequence[float] = (0.5, 1.0, 2.0),
    top_ks: Sequence[int | None] = (None, 1, 5),
    top_ps: Sequence[float | None] = (None, 0.9, 0.5),
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    max_bars: int = 20,
    mode: str | None = None,
    dpi: float = 100,
) -> SamplingExplorer:
    """Next-token probabilities under temperature, top-k (None = off) and top-p (None = off).

    ``logits`` (vocab,) and ``tokens`` (one label per logit). The chart shows the ``max_bars``
    most likely tokens. Static mode pre-renders every combination
    (temperatures × top_ks × top_ps, 27 by default, about 0.2 s each) as three nested jslinked Stacks.
    See :func:`sampling_distribution` for the exact rule.
    """
    return SamplingExplorer(
        logits,
        tokens,
        temperatures=temperatures,
        top_ks=top_ks,
        top_ps=top_ps,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_bars=max_bars,
        mode=mode,
        dpi=dpi,
    )
