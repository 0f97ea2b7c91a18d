"""Pictures of attention: heatmaps and the interactive explorers the chapters use.

Everything here works on plain arrays (numpy or torch), so it does not care which model made them.

* :func:`attention_heatmap` draws one attention matrix, queries as rows and keys as columns, on a
  fixed 0-1 colour scale, with masked cells (future positions, padding) hatched grey so that they
  never look like a weight of zero.
* :class:`AttentionExplorer` browses a whole model's attention, shaped (layers, heads, queries, keys):
  layer, head (or the mean / max over heads), query row, mask on/off, a compare view of several heads
  and an overview of every layer x head with its mean row entropy.
* :func:`softmax_temperature_explorer`, :func:`positional_encoding_explorer` and
  :func:`sampling_explorer` are the smaller figures of chapters 01, 03 and 08.

Rendering: every figure is a :class:`matplotlib.figure.Figure` drawn by the Agg canvas directly (never
``pyplot``, so no figure leaks and none is shown twice), turned into PNG bytes and put in an
``ipywidgets.Image``. Every explorer has two modes:

``mode="live"``
    A kernel is there: the controls are observed in Python and each change redraws the image.
``mode="static"``
    No kernel (the book's static site): every view is rendered in advance and put in a
    ``widgets.Stack``; ``widgets.jslink`` ties each control's ``index`` to a Stack's
    ``selected_index``, so switching happens in the browser. Two controls (layer, head) need one
    Stack per layer inside an outer Stack: the outer Stack follows the first control, every inner
    one follows the second (and so on for three controls). Only jslink, no Python callback.

The default mode is ``"live"``; :func:`set_widget_mode` or the environment variable
``TRANSFORMER_CORE_WIDGET_MODE=static`` change it for a whole book build, and every explorer has a
``.static()`` method that returns a pre-rendered copy.

Every explorer prints a small text marker above its image (``layer 1 · head 2 · query 5 'c'``) that
changes with each redraw; in static mode each pre-rendered view carries its own marker.
"""

from __future__ import annotations

import html
import io
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

try:
    import ipywidgets as widgets
    from matplotlib import colormaps
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Colormap, Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "transformer_core.viz needs matplotlib and ipywidgets; install the book extras: "
        "pip install 'transformer_core[book]'"
    ) from err

__all__ = [
    "AttentionExplorer",
    "LongInputWarning",
    "PositionalEncodingExplorer",
    "SamplingExplorer",
    "SoftmaxTemperatureExplorer",
    "attention_entropy",
    "attention_heatmap",
    "causal_mask",
    "figure_to_png",
    "infer_causal_mask",
    "positional_encoding_explorer",
    "sampling_distribution",
    "sampling_explorer",
    "set_widget_mode",
    "sinusoidal_encoding",
    "softmax_temperature_explorer",
    "token_label",
]

Mode = Literal["live", "static"]
MODE_ENV_VAR = "TRANSFORMER_CORE_WIDGET_MODE"
MASK_COLOR = "#d9d9d9"
HATCH_COLOR = "#8c8c8c"
HIGHLIGHT_COLOR = "#e4572e"
DEFAULT_CMAP = "viridis"

_default_mode: Mode | None = None


class LongInputWarning(UserWarning):
    """An explorer was given more tokens than ``max_tokens`` and shows only the last ones."""


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def set_widget_mode(mode: Mode | None) -> None:
    """Set the mode every explorer uses when it is not given one (``None``: back to the default).

    The default is ``"live"`` unless the environment variable ``TRANSFORMER_CORE_WIDGET_MODE`` says
    ``"static"``: a book build can set it once instead of editing every chapter.
    """
    global _default_mode
    if mode is not None:
        _check_mode(mode)
    _default_mode = mode


def _check_mode(mode: str) -> Mode:
    if mode not in ("live", "static"):
        raise ValueError(f"mode must be 'live' or 'static', not {mode!r}")
    return mode  # type: ignore[return-value]


def _resolve_mode(mode: str | None) -> Mode:
    if mode is None:
        mode = _default_mode or os.environ.get(MODE_ENV_VAR, "").strip().lower() or "live"
    return _check_mode(mode)


def _to_numpy(x: Any, name: str = "array") -> np.ndarray:
    """A float64 (or bool) numpy copy of a numpy array, torch tensor or nested list."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bool":
            return x.numpy().copy()
        return x.double().numpy()
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr.copy()
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _as_tokens(tokens: Any, name: str = "tokens") -> list[str]:
    """Tokens as a list of strings: a string counts as its characters, ids become ``str(id)``."""
    if isinstance(tokens, str):
        return list(tokens)
    if hasattr(tokens, "tolist"):
        tokens = tokens.tolist()
    try:
        return [str(t) for t in tokens]
    except TypeError:
        raise ValueError(
            f"{name} must be a sequence of tokens, got {type(tokens).__name__}"
        ) from None


def token_label(token: str) -> str:
    """How a token is written on an axis: spaces as ``␣``, newlines as ``↵``, tabs as ``⇥``.

    BPE tokens often start with a space (``" the"``); without this they would be indistinguishable
    from the token without it.
    """
    if token == "":
        return "''"
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")


def _token_repr(token: str) -> str:
    return repr(token)


def _tick_fontsize(n: int) -> float:
    if n <= 16:
        return 10
    if n <= 32:
        return 8
    if n <= 64:
        return 6
    return 4


def _new_figure(figsize: tuple[float, float], dpi: float = 100) -> Figure:
    """A Figure on its own Agg canvas: not registered with pyplot, so it can never leak."""
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_to_png(fig: Figure, dpi: float | None = None) -> bytes:
    """PNG bytes of a figure (deterministic: no software version written into the file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _get_cmap(cmap: str | Colormap) -> Colormap:
    return colormaps[cmap] if isinstance(cmap, str) else cmap


# --------------------------------------------------------------------------------------------------
# Masks and entropy
# --------------------------------------------------------------------------------------------------


def causal_mask(n_queries: int, n_keys: int | None = None) -> np.ndarray:
    """Bool mask, shape (n_queries, n_keys), True where a query may **not** look (the future).

    With fewer queries than keys (the last queries of a longer sequence, as with a KV cache) query
    ``i`` sits at position ``i + n_keys - n_queries``.
    """
    n_keys = n_queries if n_keys is None else n_keys
    offset = n_keys - n_queries
    q = np.arange(n_queries)[:, None]
    k = np.arange(n_keys)[None, :]
    return k > q + offset


def infer_causal_mask(weights: Any) -> np.ndarray:
    """The causal mask of ``weights`` (..., queries, keys), after checking it really is causal.

    Raises ValueError when any weight above the diagonal is non-zero: a causal model gives exactly
    0 there, so a non-zero entry means the weights are not causal and a causal mask would hide real
    attention.
    """
    w = _to_numpy(weights, "weights")
    if w.ndim < 2:
        raise ValueError(f"weights must have at least 2 dimensions (queries, keys), got {w.shape}")
    m = causal_mask(w.shape[-2], w.shape[-1])
    above = w[..., m]
    bad = np.count_nonzero(above)
    if bad:
        raise ValueError(
            "mask='causal' needs weights that are exactly 0 above the diagonal, but "
            f"{bad} of them are not (largest {np.abs(above).max():.3g}); these weights are not "
            "causal. Pass an explicit bool mask (True = masked) or mask=None."
        )
    return m


def _resolve_mask(mask: Any, weights: np.ndarray) -> np.ndarray | None:
    """``mask`` (None, "causal" or bool array broadcastable to weights) -> bool array or None."""
    if mask is None:
        return None
    if isinstance(mask, str):
        if mask != "causal":
            raise ValueError(f"mask must be None, 'causal' or a bool array, not {mask!r}")
        return np.broadcast_to(infer_causal_mask(weights), weights.shape).copy()
    m = _to_numpy(mask, "mask")
    if m.dtype != bool:
        raise ValueError(
            f"mask must be a bool array (True = masked / not allowed), got dtype {m.dtype}"
        )
    try:
        return np.broadcast_to(m, weights.shape).copy()
    except ValueError:
        raise ValueError(
            f"mask of shape {m.shape} does not fit weights of shape {weights.shape}: use "
            "(queries, keys), or (keys,) for a padding mask over the keys"
        ) from None


def attention_entropy(weights: Any, mask: Any = None) -> np.ndarray:
    """Entropy in nats of every attention row: shape ``weights.shape[:-1]``.

    0 means the query puts all its weight on one key; ``log(n)`` means it spreads evenly over ``n``
    keys. Masked entries (``mask`` True) are left out.
    """
    w = _to_numpy(weights, "weights")
    if mask is not None:
        w = np.where(_resolve_mask(mask, w), 0.0, w)
    safe = np.where(w > 0, w, 1.0)
    return -(np.where(w > 0, w * np.log(safe), 0.0)).sum(-1)


def _mean_row_entropy(w: np.ndarray, mask: np.ndarray | None) -> float:
    """Mean entropy of the rows of w (q, k) that are not fully masked."""
    ent = attention_entropy(w, mask)
    valid = np.ones(w.shape[0], bool) if mask is None else ~mask.all(-1)
    return float(ent[valid].mean()) if valid.any() else 0.0


# --------------------------------------------------------------------------------------------------
# The heatmap
# --------------------------------------------------------------------------------------------------


def _draw_heatmap(
    ax: Axes,
    w: np.ndarray,
    mask: np.ndarray | None,
    keys: Sequence[str] | None,
    queries: Sequence[str] | None,
    *,
    vmin: float,
    vmax: float,
    cmap: str | Colormap,
    highlight_query: int | None = None,
    annotate: bool = False,
    title: str | None = None,
    axis_labels: bool = True,
):
    """Draw w (q, k) into ax and return the AxesImage. Tick labels only where tokens are given."""
    nq, nk = w.shape
    # masked cells are transparent, so the hatched grey patch below them shows through
    cm = _get_cmap(cmap).with_extremes(bad=(0, 0, 0, 0))
    full_mask = np.zeros(w.shape, bool) if mask is None else mask
    data = np.ma.masked_array(w, mask=full_mask)
    if full_mask.any():
        ax.add_patch(
            Rectangle(
                (-0.5, -0.5),
                nk,
                nq,
                facecolor=MASK_COLOR,
                edgecolor=HATCH_COLOR,
                hatch="///",
                linewidth=0,
                zorder=0.5,
            )
        )
    im = ax.imshow(
        data,
        cmap=cm,
        norm=Normalize(vmin=vmin, vmax=vmax),
        interpolation="nearest",
        aspect="equal",
        zorder=1,
    )
    ax.set_xlim(-0.5, nk - 0.5)
    ax.set_ylim(nq - 0.5, -0.5)
    if keys is not None:
        ax.set_xticks(
            range(nk), [token_label(t) for t in keys], rotation=90, fontsize=_tick_fontsize(nk)
        )
    else:
        ax.set_xticks([])
    if queries is not None:
        ax.set_yticks(range(nq), [token_label(t) for t in queries], fontsize=_tick_fontsize(nq))
    else:
        ax.set_yticks([])
    if axis_labels:
        xlabel = "key (attended to)"
        if full_mask.any():
            xlabel += "   ▨ hatched = masked"
        ax.set_xlabel(xlabel)
        ax.set_ylabel("query (attending)")
    if annotate:
        mid = vmin + 0.5 * (vmax - vmin)
        for i in range(nq):
            for j in range(nk):
                if full_mask[i, j]:
                    continue
                ax.text(
                    j,
                    i,
                    f"{w[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    zorder=3,
                    color="white" if w[i, j] < mid else "black",
                )
    if highlight_query is not None:
        ax.add_patch(
            Rectangle(
                (-0.5, highlight_query - 0.5),
                nk,
                1,
                fill=False,
                edgecolor=HIGHLIGHT_COLOR,
                linewidth=2,
                zorder=4,
                clip_on=False,
            )
        )
        if queries is not None:
            label = ax.get_yticklabels()[highlight_query]
            label.set_color(HIGHLIGHT_COLOR)
            label.set_fontweight("bold")
    if title:
        ax.set_title(title, fontsize=10)
    return im


def _heatmap_figsize(nq: int, nk: int, extra_w: float = 1.6) -> tuple[float, float]:
    cell = min(max(5.0 / max(nq, nk), 0.13), 0.45)
    return (nk * cell + 1.2 + extra_w, nq * cell + 1.6)


def _check_query_index(q: int | None, nq: int, name: str = "highlight_query") -> int | None:
    if q is None:
        return None
    if not isinstance(q, (int, np.integer)) or isinstance(q, bool):
        raise ValueError(f"{name} must be an int row index or None, got {q!r}")
    if not -nq <= q < nq:
        raise ValueError(f"{name}={q} is out of range for {nq} queries")
    return int(q) % nq


def attention_heatmap(
    weights: Any,
    tokens: Any,
    query_tokens: Any = None,
    ax: Axes | None = None,
    title: str | None = None,
    vmin: float = 0.0,
    vmax: float = 1.0,
    mask: Any = None,
    highlight_query: int | None = None,
    cmap: str | Colormap = DEFAULT_CMAP,
    *,
    annotate: bool | None = None,
    colorbar: bool = True,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
) -> Figure:
    """Draw one attention matrix and return its matplotlib Figure.

    Parameters
    ----------
    weights
        (queries, keys) attention weights (numpy or torch), each row a softmax that sums to 1.
    tokens
        The keys' tokens, one per column (a string counts as its characters).
    query_tokens
        The queries' tokens, one per row; defaults to ``tokens`` (self-attention). Pass it for
        cross-attention, where the queries (decoder) and keys (encoder) are different sequences.
    ax
        Draw into this Axes instead of a new figure (its figure is returned).
    vmin, vmax
        The colour scale, fixed at 0-1 by default so that two heatmaps can be compared by colour.
    mask
        None, a bool array broadcastable to (queries, keys) with True where a query may not look
        (a (keys,) vector is a padding mask), or ``"causal"`` to build the causal mask after
        checking that the weights are exactly 0 above the diagonal. Masked cells are drawn hatched
        grey, never as a 0 weight.
    highlight_query
        A row to outline (and whose tick label is set in bold).
    annotate
        Write each weight in its cell; by default only when both sides have at most 10 tokens.

    What to notice: each row is one query's distribution over the keys, so read the picture row by
    row; a bright cell means "this query takes much of its value from that key".
    """
    w = _to_numpy(weights, "weights")
    if w.ndim != 2:
        raise ValueError(
            f"attention_heatmap expects 2-D weights (queries, keys), got shape {tuple(w.shape)}; "
            "pick one layer and head first, e.g. attn[layer, batch, head]"
        )
    nq, nk = w.shape
    keys = _as_tokens(tokens, "tokens")
    if len(keys) != nk:
        raise ValueError(f"weights have {nk} key columns but {len(keys)} tokens were given")
    if query_tokens is None:
        if nq != nk:
            raise ValueError(
                f"weights have {nq} query rows and {nk} key columns: for cross-attention pass "
                "query_tokens (one per row) as well as tokens (one per column)"
            )
        queries = keys
    else:
        queries = _as_tokens(query_tokens, "query_tokens")
        if len(queries) != nq:
            raise ValueError(
                f"weights have {nq} query rows but {len(queries)} query_tokens were given"
            )
    m = _resolve_mask(mask, w)
    hq = _check_query_index(highlight_query, nq)
    if annotate is None:
        annotate = max(nq, nk) <= 10
    if ax is None:
        fig = _new_figure(figsize or _heatmap_figsize(nq, nk), dpi)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    im = _draw_heatmap(
        ax,
        w,
        m,
        keys,
        queries,
        vmin=vmin,
        vmax=vmax,
        cmap=cmap,
        highlight_query=hq,
        annotate=annotate,
        title=title,
    )
    if colorbar:
        fig.colorbar(im, ax=ax, shrink=0.8, label="attention weight")
    return fig  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# The explorer machinery shared by every interactive figure
# --------------------------------------------------------------------------------------------------


def _marker_html(text: str) -> str:
    return f'<span class="tc-marker">{html.escape(text)}</span>'


class _FigureExplorer:
    """Controls -> a matplotlib figure -> PNG in a ``widgets.Image``; live or static.

    Subclasses fill ``self.controls`` (name -> selection widget whose options are (label, value)
    pairs, recorded in ``self._values``), list in ``_static_controls`` the controls a static page
    enumerates (outermost first), implement ``_figure(state)`` and ``_marker_text(state)``, and
    call ``_build()``.
    """

    _static_controls: tuple[str, ...] = ()
    _css_class = "tc-explorer"

    def __init__(self, mode: str | None, dpi: float, max_views: int) -> None:
        self.mode: Mode = _resolve_mode(mode)
        self.dpi = dpi
        self.max_views = max_views
        self.controls: dict[str, widgets.ValueWidget] = {}
        self._values: dict[str, list[Any]] = {}
        self._init_kwargs: dict[str, Any] = {}
        #: static mode: the pre-rendered views (each a VBox of marker, image, notes)
        self.views: list[widgets.Widget] = []
        #: static mode: every Stack, outermost first
        self.stacks: list[widgets.Stack] = []
        #: static mode: every jslink (control.index -> Stack.selected_index)
        self.links: list[widgets.Link] = []
        self.image: widgets.Image | None = None
        self.marker_widget = widgets.HTML()
        self.info_widget = widgets.HTML()
        self.widget: widgets.Widget | None = None

    # -- to be provided by subclasses -------------------------------------------------------------
    def _figure(self, state: dict[str, Any]) -> Figure:  # pragma: no cover - abstract
        raise NotImplementedError

    def _marker_text(self, state: dict[str, Any]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _info_html(self, state: dict[str, Any]) -> str:
        return ""

    def _live_layout(self) -> list[widgets.Widget]:
        """The controls shown above the image in live mode."""
        return [widgets.HBox(list(self.controls.values()))]

    def _static_note(self, n_views: int) -> str:
        return f"pre-rendered: {n_views} views (no kernel needed)"

    def _static_layout(self, root: widgets.Widget) -> widgets.Widget:
        controls = [self.controls[n] for n in self._static_controls]
        note = widgets.HTML(f"<small>{html.escape(self._static_note(len(self.views)))}</small>")
        return widgets.VBox([widgets.HBox(controls), root, note])

    # -- helpers for subclasses -------------------------------------------------------------------
    def _add_control(
        self,
        name: str,
        widget_cls: type,
        options: Sequence[tuple[str, Any]],
        value: Any,
        **kwargs: Any,
    ) -> widgets.ValueWidget:
        values = [v for _, v in options]
        if value not in values:
            raise ValueError(f"{name}={value!r} is not one of the choices {values}")
        ctrl = widget_cls(options=list(options), value=value, **kwargs)
        self.controls[name] = ctrl
        self._values[name] = values
        return ctrl

    def _state(self) -> dict[str, Any]:
        return {name: ctrl.value for name, ctrl in self.controls.items()}

    # -- public -----------------------------------------------------------------------------------
    def render(self, **overrides: Any) -> Figure:
        """The figure of the current view (controls can be overridden by name)."""
        return self._figure({**self._state(), **overrides})

    def png(self, **overrides: Any) -> bytes:
        """PNG bytes of the current view."""
        return figure_to_png(self.render(**overrides), dpi=self.dpi)

    @property
    def marker(self) -> str:
        """The text marker of the current view, e.g. ``"layer 1 · head 2 · query 5 'c'"``."""
        return self._marker_text(self._state())

    def save_png(self, path: str | os.PathLike[str], dpi: float | None = None) -> Path:
        """Save the current view as a PNG file and return its path."""
        path = Path(path)
        path.write_bytes(figure_to_png(self.render(), dpi=dpi or self.dpi))
        return path

    def static(self, **overrides: Any):
        """A copy of this explorer in static mode (every view pre-rendered, jslinked)."""
        kwargs = {**self._init_kwargs, **self._static_defaults(), **overrides, "mode": "static"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LongInputWarning)
            return type(self)(**kwargs)

    def _static_defaults(self) -> dict[str, Any]:
        return {}

    # -- building ---------------------------------------------------------------------------------
    def _build(self) -> None:
        if self.mode == "live":
            self._build_live()
        else:
            self._build_static()
        assert self.widget is not None
        self.widget.add_class(self._css_class)

    def _build_live(self) -> None:
        self.image = widgets.Image(format="png")
        self._redraw()
        for ctrl in self.controls.values():
            ctrl.observe(self._on_change, names="value")
        self.widget = widgets.VBox(
            [*self._live_layout(), self.marker_widget, self.image, self.info_widget]
        )

    def _on_change(self, change: Mapping[str, Any]) -> None:
        self._redraw()

    def _redraw(self) -> None:
        state = self._state()
        assert self.image is not None
        self.image.value = figure_to_png(self._figure(state), dpi=self.dpi)
        self.info_widget.value = self._info_html(state)
        # the marker last: a browser test that waits for it finds the image already there
        self.marker_widget.value = _marker_html(self._marker_text(state))

    def _count_static_views(self) -> int:
        return math.prod(len(self._values[n]) for n in self._static_controls)

    def _build_static(self) -> None:
        n_views = self._count_static_views()
        if n_views > self.max_views:
            sizes = " × ".join(f"{len(self._values[n])} {n}" for n in self._static_controls)
            raise ValueError(
                f"static mode would pre-render {n_views} views ({sizes}), more than "
                f"max_views={self.max_views}; offer fewer choices or raise max_views"
            )
        base = self._state()
        root = self._static_tree(0, base)
        self.widget = self._static_layout(root)

    def _static_view(self, state: dict[str, Any]) -> widgets.Widget:
        png = figure_to_png(self._figure(state), dpi=self.dpi)
        parts: list[widgets.Widget] = [
            widgets.HTML(_marker_html(self._marker_text(state))),
            widgets.Image(value=png, format="png"),
        ]
        info = self._info_html(state)
        if info:
            parts.append(widgets.HTML(info))
        view = widgets.VBox(parts)
        self.views.append(view)
        return view

    def _static_tree(self, level: int, state: dict[str, Any]) -> widgets.Widget:
        """Nested Stacks: level i is switched by control i through jslink, the leaves are views."""
        names = self._static_controls
        if level == len(names):
            return self._static_view(state)
        name = names[level]
        ctrl = self.controls[name]
        children = [self._static_tree(level + 1, {**state, name: v}) for v in self._values[name]]
        stack = widgets.Stack(children=children, selected_index=ctrl.index)
        self.stacks.append(stack)
        self.links.append(widgets.jslink((ctrl, "index"), (stack, "selected_index")))
        return stack

    # -- display ----------------------------------------------------------------------------------
    def _summary(self) -> str:
        return f"{type(self).__name__}({self.mode})"

    def __repr__(self) -> str:
        return self._summary()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        assert self.widget is not None
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(bundle, tuple):  # (data, metadata)
            bundle = bundle[0]
        bundle = dict(bundle or {})
        bundle["text/plain"] = self._summary()  # stable text: no model ids, no PNG bytes
        return bundle


# --------------------------------------------------------------------------------------------------
# The attention explorer
# --------------------------------------------------------------------------------------------------

HeadChoice = int | str  # a head index, "mean" or "max"


def _normalize_attn(attn: Any, batch_index: int | None) -> np.ndarray:
    """Any accepted attention layout -> float array (layers, heads, queries, keys)."""
    if isinstance(attn, (list, tuple)):
        if not attn:
            raise ValueError("attn is empty")
        w = np.stack([_to_numpy(a, "attn") for a in attn])
    else:
        w = _to_numpy(attn, "attn")
    if batch_index is not None and w.ndim != 5:
        raise ValueError(
            f"batch_index is for attn shaped (layers, batch, heads, queries, keys); got {w.shape}"
        )
    if w.ndim == 5:
        n_batch = w.shape[1]
        if batch_index is None:
            if n_batch != 1:
                raise ValueError(
                    f"attn of shape {w.shape} holds a batch of {n_batch} sequences; pass "
                    "batch_index=i to choose which one to explore"
                )
            batch_index = 0
        if not -n_batch <= batch_index < n_batch:
            raise ValueError(f"batch_index={batch_index} is out of range for a batch of {n_batch}")
        w = w[:, batch_index]
    elif w.ndim == 3:
        w = w[None]  # one layer
    elif w.ndim != 4:
        raise ValueError(
            "attn must be shaped (layers, heads, queries, keys), (layers, batch, heads, queries, "
            f"keys) or (heads, queries, keys); got shape {tuple(w.shape)}"
        )
    if w.size == 0:
        raise ValueError(f"attn is empty (shape {w.shape})")
    if not np.isfinite(w).all():
        raise ValueError("attn contains NaN or infinite values")
    return w


def _encode_input(text_or_ids: Any, tokenizer: Any) -> list[int]:
    if isinstance(text_or_ids, str):
        if tokenizer is None:
            raise ValueError("text was given without a tokenizer: pass tokenizer=... or token ids")
        ids = tokenizer.encode(text_or_ids)
    else:
        ids = text_or_ids
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    ids = list(ids)
    if ids and isinstance(ids[0], (list, tuple)):
        if len(ids) != 1:
            raise ValueError(f"from_model explores one sequence, got a batch of {len(ids)}")
        ids = list(ids[0])
    if not ids:
        raise ValueError("no tokens to explore")
    return [int(i) for i in ids]


class AttentionExplorer(_FigureExplorer):
    """Browse a model's attention: every layer and head, one query row at a time.

    Parameters
    ----------
    attn
        Attention weights shaped (layers, heads, queries, keys), numpy or torch. Also accepted:
        (layers, batch, heads, queries, keys) as ``model(idx, return_attention=True)`` returns it
        (a batch of one is squeezed; for a larger batch choose ``batch_index``), a list of
        per-layer tensors, or (heads, queries, keys) for a single layer.
    tokens
        The key tokens (one per key position); also the query tokens unless ``query_tokens`` is
        given (cross-attention: decoder queries attending to encoder keys).
    layer_names
        Labels of the layers (default "0", "1", ...), e.g. ``["enc 0", "enc 1"]``.
    max_tokens
        Longer inputs are cut to their **last** ``max_tokens`` positions (queries and keys each)
        with a :class:`LongInputWarning`: a heatmap past ~64 tokens is unreadable. A cut causal map
        loses its first keys, so its rows no longer sum to 1. Raise ``max_tokens`` to see more.
    mask
        None, ``"causal"`` (checked against the weights) or a bool array broadcastable to
        (layers, heads, queries, keys), True = masked. Masked cells are drawn hatched grey.
    layer, head, query
        The view to start on: ``head`` may be an int, ``"mean"`` or ``"max"`` (over heads);
        ``query`` a row to highlight (negative counts from the end) or None.
    mode
        ``"live"`` (redraw on each change, needs a kernel) or ``"static"`` (pre-render every
        layer × head view, including mean and max, for the chosen query; switchable with no
        kernel). In static mode the query, mask toggle and compare view are fixed; ``overview``
        adds the all-layers × heads grid as one more view.
    max_views
        Static mode refuses to pre-render more than this many views (layers × (heads + 2)).

    Controls (live): layer, head (incl. mean / max), query row (its top weights printed under the
    image), show mask, and a view switch: ``single`` heatmap, ``compare`` (the heads picked in
    the list, side by side on one colour scale) and ``overview`` (every layer × head, each titled
    with its mean row entropy in nats: low = sharp, focused heads; ``log(keys)`` = uniform).
    """

    _static_controls = ("layer", "head")
    _css_class = "tc-attention-explorer"

    def __init__(
        self,
        attn: Any,
        tokens: Any,
        query_tokens: Any = None,
        layer_names: Sequence[str] | None = None,
        max_tokens: int = 64,
        mask: Any = None,
        *,
        batch_index: int | None = None,
        layer: int = 0,
        head: HeadChoice = 0,
        query: int | None = None,
        mode: Mode | None = None,
        max_views: int = 96,
        overview: bool = True,
        compare_heads: Sequence[HeadChoice] | None = None,
        cmap: str | Colormap = DEFAULT_CMAP,
        dpi: float = 100,
    ) -> None:
        super().__init__(mode, dpi, max_views)
        self._init_kwargs = dict(
            attn=attn,
            tokens=tokens,
            query_tokens=query_tokens,
            layer_names=layer_names,
            max_tokens=max_tokens,
            mask=mask,
            batch_index=batch_index,
            layer=layer,
            head=head,
            query=query,
            max_views=max_views,
            overview=overview,
            compare_heads=compare_heads,
            cmap=cmap,
            dpi=dpi,
        )
        w = _normalize_attn(attn, batch_index)
        n_layer, n_head, nq, nk = w.shape
        keys = _as_tokens(tokens, "tokens")
        if len(keys) != nk:
            raise ValueError(f"attn has {nk} key positions but {len(keys)} tokens were given")
        if query_tokens is None:
            if nq != nk:
                raise ValueError(
                    f"attn has {nq} queries and {nk} keys: for cross-attention pass query_tokens"
                )
            queries = keys
        else:
            queries = _as_tokens(query_tokens, "query_tokens")
            if len(queries) != nq:
                raise ValueError(
                    f"attn has {nq} query positions but {len(queries)} query_tokens were given"
                )
        m = _resolve_mask(mask, w)
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        if nq > max_tokens or nk > max_tokens:
            warnings.warn(
                f"attention over {nq} queries × {nk} keys is more than max_tokens={max_tokens}: "
                f"showing only the last {max_tokens} positions (a cut causal map loses its first "
                "keys, so rows no longer sum to 1). Pass max_tokens=... to show more.",
                LongInputWarning,
                stacklevel=2,
            )
            q0, k0 = max(nq - max_tokens, 0), max(nk - max_tokens, 0)
            w = w[:, :, q0:, k0:]
            m = None if m is None else m[:, :, q0:, k0:]
            queries = queries[q0:]
            keys = keys[k0:]
            # a long query index given from the start of the sequence: shift it into the crop
            if query is not None and query >= 0:
                query = query - q0 if query >= q0 else None
            nq, nk = len(queries), len(keys)
        if layer_names is None:
            layer_names = [str(i) for i in range(n_layer)]
        layer_names = [str(n) for n in layer_names]
        if len(layer_names) != n_layer:
            raise ValueError(f"{len(layer_names)} layer_names for {n_layer} layers")

        self.weights = w  #: (layers, heads, queries, keys), after any cut
        self.mask = m  #: None or bool (layers, heads, queries, keys)
        self.tokens = keys
        self.query_tokens = queries
        self.cross = query_tokens is not None  #: queries and keys are different sequences
        self.layer_names = layer_names
        self.n_layer, self.n_head, self.n_queries, self.n_keys = w.shape
        self.cmap = cmap
        self.overview = overview
        #: mean row entropy (nats) of every layer and head, shape (layers, heads)
        self.entropy = np.array(
            [
                [
                    _mean_row_entropy(w[li, h], None if m is None else m[li, h])
                    for h in range(n_head)
                ]
                for li in range(n_layer)
            ]
        )

        head_opts: list[tuple[str, HeadChoice]] = [(f"head {h}", h) for h in range(n_head)]
        head_opts += [("mean over heads", "mean"), ("max over heads", "max")]
        if isinstance(head, (int, np.integer)) and not isinstance(head, bool):
            if not -n_head <= head < n_head:
                raise ValueError(f"head={head} is out of range for {n_head} heads")
            head = int(head) % n_head
        if not -n_layer <= layer < n_layer:
            raise ValueError(f"layer={layer} is out of range for {n_layer} layers")
        query = _check_query_index(query, nq, "query")

        self._add_control(
            "layer",
            widgets.Dropdown,
            [(f"layer {n}", i) for i, n in enumerate(layer_names)],
            int(layer) % n_layer,
            description="layer",
        )
        self._add_control("head", widgets.Dropdown, head_opts, head, description="head")
        self._add_control(
            "query",
            widgets.Dropdown,
            [("none", -1)] + [(f"{i}: {token_label(t)}", i) for i, t in enumerate(queries)],
            -1 if query is None else query,
            description="query",
        )
        self.controls["show_mask"] = widgets.Checkbox(
            value=m is not None,
            description="show mask",
            disabled=m is None,
            indent=False,
        )
        self._add_control(
            "view",
            widgets.ToggleButtons,
            [("single", "single"), ("compare", "compare"), ("overview", "overview")],
            "single",
            description="view",
        )
        if compare_heads is None:
            compare_heads = list(range(min(n_head, 4)))
        self.controls["compare_heads"] = widgets.SelectMultiple(
            options=head_opts,
            value=tuple(compare_heads),
            description="compare",
            rows=min(len(head_opts), 6),
        )
        self._build()

    # -- construction from a model ----------------------------------------------------------------
    @classmethod
    def from_model(
        cls,
        model: Any,
        text_or_ids: Any,
        tokenizer: Any = None,
        *,
        attention_key: str | None = None,
        **kwargs: Any,
    ) -> AttentionExplorer:
        """Run ``model(idx, return_attention=True)`` on one sequence and explore its attention.

        ``text_or_ids`` is a string (encoded with ``tokenizer.encode``) or token ids (a list, a
        (T,) or (1, T) tensor). Tokens are labelled ``tokenizer.decode([id])`` per position when a
        tokenizer is given, else ``str(id)``. The model runs in eval mode (no dropout) under
        ``torch.no_grad()`` and is put back in its previous mode. If the model returns attention
        as a mapping (e.g. encoder self / decoder self / cross), name the one to explore with
        ``attention_key``. Other keyword arguments go to :class:`AttentionExplorer`.
        """
        import torch

        ids = _encode_input(text_or_ids, tokenizer)
        params = getattr(model, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        device = first.device if first is not None else torch.device("cpu")
        idx = torch.tensor([ids], dtype=torch.long, device=device)
        was_training = getattr(model, "training", None)
        if was_training is not None:
            model.eval()
        try:
            with torch.no_grad():
                out = model(idx, return_attention=True)
        finally:
            if was_training is not None:
                model.train(was_training)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("model(idx, return_attention=True) should return (logits, attn)")
        attn = out[1]
        if isinstance(attn, Mapping):
            if attention_key is None or attention_key not in attn:
                raise ValueError(
                    f"the model returned attention for {sorted(attn)}; choose one with "
                    "attention_key=..."
                )
            attn = attn[attention_key]
        if tokenizer is not None:
            tokens = [tokenizer.decode([i]) for i in ids]
        else:
            tokens = [str(i) for i in ids]
        return cls(attn, tokens, **kwargs)

    # -- state ------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        s = super()._state()
        s["query"] = None if s["query"] == -1 else s["query"]
        return s

    def _static_defaults(self) -> dict[str, Any]:
        # hand over the data as already cut, so the copy neither warns nor cuts again
        s = self._state()
        return dict(
            attn=self.weights,
            tokens=self.tokens,
            query_tokens=self.query_tokens if self.cross else None,
            mask=self.mask,
            layer_names=self.layer_names,
            batch_index=None,
            max_tokens=max(self.n_queries, self.n_keys),
            layer=s["layer"],
            head=s["head"],
            query=s["query"],
            compare_heads=s["compare_heads"],
        )

    def head_weights(self, layer: int, head: HeadChoice) -> tuple[np.ndarray, np.ndarray | None]:
        """(queries, keys) weights of one head, or the mean / max over heads, and its mask."""
        w = self.weights[layer]
        m = None if self.mask is None else self.mask[layer]
        if head == "mean":
            return w.mean(0), None if m is None else m.all(0)
        if head == "max":
            return w.max(0), None if m is None else m.all(0)
        h = int(head)
        return w[h], None if m is None else m[h]

    def _head_label(self, head: HeadChoice) -> str:
        return f"{head} over heads" if isinstance(head, str) else f"head {head}"

    def _head_title(self, layer: int, head: HeadChoice) -> str:
        title = f"layer {self.layer_names[layer]} · {self._head_label(head)}"
        if not isinstance(head, str):
            title += f"\nmean row entropy {self.entropy[layer, int(head)]:.2f} nats"
        return title

    # -- figures ----------------------------------------------------------------------------------
    def _figure(self, state: dict[str, Any]) -> Figure:
        view = state.get("view", "single")
        if view == "overview":
            return self._overview_figure(state)
        if view == "compare":
            return self._compare_figure(state)
        return self._single_figure(state)

    def _mask_for_view(self, m: np.ndarray | None, state: dict[str, Any]) -> np.ndarray | None:
        return m if state.get("show_mask", True) else None

    def _single_figure(self, state: dict[str, Any]) -> Figure:
        layer, head = state["layer"], state["head"]
        w, m = self.head_weights(layer, head)
        return attention_heatmap(
            w,
            self.tokens,
            self.query_tokens,
            title=self._head_title(layer, head),
            mask=self._mask_for_view(m, state),
            highlight_query=state["query"],
            cmap=self.cmap,
            dpi=self.dpi,
        )

    def _compare_figure(self, state: dict[str, Any]) -> Figure:
        layer = state["layer"]
        heads = list(state.get("compare_heads") or [state["head"]])
        nq, nk = self.n_queries, self.n_keys
        w0, h0 = _heatmap_figsize(nq, nk, extra_w=0.0)
        fig = _new_figure((w0 * len(heads) + 1.2, h0 + 0.3), self.dpi)
        axes = fig.subplots(1, len(heads), squeeze=False)[0]
        im = None
        for i, (ax, head) in enumerate(zip(axes, heads, strict=True)):
            w, m = self.head_weights(layer, head)
            im = _draw_heatmap(
                ax,
                w,
                self._mask_for_view(m, state),
                self.tokens,
                self.query_tokens if i == 0 else None,
                vmin=0.0,
                vmax=1.0,
                cmap=self.cmap,
                highlight_query=state["query"],
                annotate=False,
                title=self._short_head_title(layer, head),
                axis_labels=i == 0,
            )
        fig.colorbar(im, ax=list(axes), shrink=0.8, label="attention weight (one scale)")
        fig.suptitle(
            f"layer {self.layer_names[layer]}: heads side by side, one colour scale", fontsize=10
        )
        return fig

    def _short_head_title(self, layer: int, head: HeadChoice) -> str:
        if isinstance(head, str):
            return f"{head} over heads"
        return f"head {head} · ent {self.entropy[layer, int(head)]:.2f}"

    def _overview_figure(self, state: dict[str, Any]) -> Figure:
        n_layer, n_head = self.n_layer, self.n_head
        panel = min(1.9, 15.0 / max(n_layer, n_head))
        fig = _new_figure((panel * n_head + 1.0, panel * n_layer + 0.6), self.dpi)
        axes = fig.subplots(n_layer, n_head, squeeze=False)
        im = None
        for li in range(n_layer):
            for h in range(n_head):
                w, m = self.head_weights(li, h)
                ax = axes[li, h]
                im = _draw_heatmap(
                    ax,
                    w,
                    self._mask_for_view(m, state),
                    None,
                    None,
                    vmin=0.0,
                    vmax=1.0,
                    cmap=self.cmap,
                    axis_labels=False,
                )
                ax.set_title(
                    f"L{self.layer_names[li]} H{h}  ent {self.entropy[li, h]:.2f}", fontsize=8
                )
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="attention weight")
        fig.suptitle("every layer × head (ent = mean row entropy, nats)", fontsize=10)
        return fig

    # -- text -------------------------------------------------------------------------------------
    def _marker_text(self, state: dict[str, Any]) -> str:
        view = state.get("view", "single")
        if view == "overview":
            return f"overview · {self.n_layer} layers × {self.n_head} heads"
        q = state["query"]
        qtext = "query none" if q is None else f"query {q} {_token_repr(self.query_tokens[q])}"
        layer = self.layer_names[state["layer"]]
        if view == "compare":
            heads = ",".join(str(h) for h in (state.get("compare_heads") or [state["head"]]))
            return f"compare · layer {layer} · heads {heads} · {qtext}"
        return f"layer {layer} · head {state['head']} · {qtext}"

    def top_weights(
        self, layer: int, head: HeadChoice, query: int, k: int = 5
    ) -> list[tuple[int, str, float]]:
        """The ``k`` keys the query row puts most weight on: (position, token, weight)."""
        w, m = self.head_weights(layer, head)
        row = w[query].copy()
        if m is not None:
            row[m[query]] = -np.inf
        order = np.argsort(-row, kind="stable")[:k]
        return [(int(j), self.tokens[j], float(row[j])) for j in order if np.isfinite(row[j])]

    def _info_html(self, state: dict[str, Any]) -> str:
        q = state["query"]
        if q is None or state.get("view", "single") == "overview":
            return ""
        head = state["head"]
        top = self.top_weights(state["layer"], head, q)
        items = " · ".join(f"{html.escape(_token_repr(t))}@{j} {v:.2f}" for j, t, v in top)
        who = html.escape(f"query {q} {_token_repr(self.query_tokens[q])}")
        return (
            f"<small>top weights of {who} ({html.escape(self._head_label(head))}): {items}</small>"
        )

    # -- layouts ----------------------------------------------------------------------------------
    def _live_layout(self) -> list[widgets.Widget]:
        c = self.controls
        return [
            widgets.HBox([c["layer"], c["head"], c["query"], c["show_mask"]]),
            widgets.HBox([c["view"], c["compare_heads"]]),
        ]

    def _count_static_views(self) -> int:
        return self.n_layer * (self.n_head + 2)

    def _static_note(self, n_views: int) -> str:
        q = self._state()["query"]
        qtext = "no query row highlighted" if q is None else f"query row {q} highlighted"
        return (
            f"pre-rendered: {self.n_layer} layers × {self.n_head + 2} heads (incl. mean, max) = "
            f"{self.n_layer * (self.n_head + 2)} views, {qtext}; run the notebook for every "
            "control"
        )

    def _static_layout(self, root: widgets.Widget) -> widgets.Widget:
        note = widgets.HTML(f"<small>{html.escape(self._static_note(len(self.views)))}</small>")
        controls = widgets.HBox([self.controls["layer"], self.controls["head"]])
        if not self.overview:
            return widgets.VBox([controls, root, note])
        # one more level: a "per head / overview" switch, jslinked like the others
        state = {**self._state(), "view": "overview"}
        overview_view = self._static_view(state)
        switch = widgets.ToggleButtons(options=["per head", "overview"], value="per head")
        self.controls["static_view"] = switch
        top = widgets.Stack(
            children=[widgets.VBox([controls, root]), overview_view], selected_index=0
        )
        self.stacks.insert(0, top)
        self.links.insert(0, widgets.jslink((switch, "index"), (top, "selected_index")))
        return widgets.VBox([switch, top, note])

    def _summary(self) -> str:
        cross = " (cross-attention)" if self.cross else ""
        return (
            f"AttentionExplorer({self.n_layer} layers × {self.n_head} heads, "
            f"{self.n_queries} queries × {self.n_keys} keys{cross}, {self.mode})"
        )


# --------------------------------------------------------------------------------------------------
# Softmax temperature
# --------------------------------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max()
    e = np.exp(z)
    return e / e.sum()


def _logits_1d(logits: Any) -> np.ndarray:
    z = _to_numpy(logits, "logits")
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


class SoftmaxTemperatureExplorer(_FigureExplorer):
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
        mode: Mode | None = None,
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
            _as_tokens(labels, "labels")
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
        fig = _new_figure((min(max(0.45 * n + 1.5, 6.0), 11.0), 3.2), self.dpi)
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
        ax.set_xticks(x, [token_label(s) for s in self.labels], fontsize=_tick_fontsize(n))
        ax.set_ylabel("probability")
        ent = float(attention_entropy(p))
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
    mode: Mode | None = None,
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


def sinusoidal_encoding(max_len: int, d_model: int, base: float = 10000.0) -> np.ndarray:
    """The paper's sinusoidal encodings, (max_len, d_model) float64.

    ``PE[pos, 2i] = sin(pos / base^(2i/d_model))``, ``PE[pos, 2i+1] = cos(pos / base^(2i/d_model))``:
    dimension pair ``i`` is a sine/cosine of wavelength ``2π · base^(2i/d_model)`` positions.
    """
    if max_len < 1 or d_model < 1:
        raise ValueError(f"max_len and d_model must be positive, got {max_len}, {d_model}")
    pos = np.arange(max_len, dtype=np.float64)[:, None]
    freq = base ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    pe = np.zeros((max_len, d_model))
    pe[:, 0::2] = np.sin(pos * freq)
    pe[:, 1::2] = np.cos(pos * freq[: d_model // 2])
    return pe


def _geometric_pairs(n_pairs: int, limit: int = 9) -> list[int]:
    pairs = sorted({0, n_pairs - 1} | {2**k - 1 for k in range(n_pairs.bit_length() + 1)})
    pairs = [p for p in pairs if 0 <= p < n_pairs]
    if len(pairs) > limit:
        idx = np.linspace(0, len(pairs) - 1, limit).round().astype(int)
        pairs = [pairs[i] for i in sorted(set(idx))]
    return pairs


class PositionalEncodingExplorer(_FigureExplorer):
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
        base: float = 10000.0,
        mode: Mode | None = None,
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
            base=base,
            dpi=dpi,
            max_views=max_views,
        )
        if encodings is None:
            self.encodings = sinusoidal_encoding(max_len, d_model, base)
            self.sinusoidal = True
        else:
            enc = _to_numpy(encodings, "encodings")
            if enc.ndim != 2:
                raise ValueError(f"encodings must be (max_len, d_model), got shape {enc.shape}")
            self.encodings = enc
            self.sinusoidal = False
        self.max_len, self.d_model = self.encodings.shape
        self.base = base
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
        fig = _new_figure((8.0, 6.0), self.dpi)
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
            wavelength = 2 * math.pi * self.base ** (2 * pair / self.d_model)
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
    mode: Mode | None = None,
    dpi: float = 100,
) -> PositionalEncodingExplorer:
    """Heatmap of positional encodings plus the curves of one chosen dimension pair.

    The sinusoidal encodings are computed here (:func:`sinusoidal_encoding`), or pass any
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
    ``kept`` (bool) the tokens that survive top-k (the k most likely) and then top-p (the
    smallest set of the most likely tokens, among those left, whose probability reaches p; at
    least one token always stays); ``renormalised`` the kept probabilities divided by their sum
    (0 elsewhere), which is what is actually sampled.
    """
    z = _logits_1d(logits)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature} (use greedy for T=0)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1 or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
    probs = _softmax(z / temperature)
    order = np.argsort(-z, kind="stable")
    kept = np.ones(z.size, bool)
    if top_k is not None and top_k < z.size:
        kept[:] = False
        kept[order[:top_k]] = True
    if top_p is not None and top_p < 1:
        p_kept = np.where(kept, probs, 0.0)
        p_kept = p_kept / p_kept.sum()
        sorted_p = p_kept[order]
        before = np.cumsum(sorted_p) - sorted_p  # mass of the more likely tokens
        keep_sorted = (before < top_p) & (sorted_p > 0)
        keep_sorted[0] = True
        nucleus = np.zeros(z.size, bool)
        nucleus[order[keep_sorted]] = True
        kept &= nucleus
    renorm = np.where(kept, probs, 0.0)
    renorm = renorm / renorm.sum()
    return probs, kept, renorm


class SamplingExplorer(_FigureExplorer):
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
        mode: Mode | None = None,
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
        self.tokens = _as_tokens(tokens, "tokens")
        if len(self.tokens) != self.logits.size:
            raise ValueError(f"{len(self.tokens)} tokens for {self.logits.size} logits")
        temps = [float(t) for t in temperatures]
        if not temps or any(t <= 0 for t in temps):
            raise ValueError(f"temperatures must be positive, got {list(temperatures)}")
        for k in top_ks:
            if k is not None and k < 1:
                raise ValueError(f"top_ks must be positive ints or None, got {list(top_ks)}")
        for p in top_ps:
            if p is not None and not 0 < p <= 1:
                raise ValueError(f"top_ps must lie in (0, 1] or be None, got {list(top_ps)}")
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
        fig = _new_figure((min(max(0.7 * n + 2.0, 7.0), 13.0), 3.4), self.dpi)
        ax_p, ax_r = fig.subplots(1, 2, sharey=True)
        x = np.arange(n)
        colors = ["#3b75af" if kept[i] else "#c8c8c8" for i in order]
        ax_p.bar(x, probs[order], color=colors)
        ax_r.bar(x, renorm[order], color="#e4572e")
        for ax in (ax_p, ax_r):
            ax.set_xticks(x, labels, rotation=90, fontsize=_tick_fontsize(n))
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
            f"{html.escape(_token_repr(self.tokens[i]))} {renorm[i]:.2f}" for i in idx
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
    mode: Mode | None = None,
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
