"""AttentionExplorer: every layer and head of a model's attention, one query row at a time."""

from __future__ import annotations

import html
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from ._common import (
    DEFAULT_CMAP,
    LongInputWarning,
    Mode,
    _token_repr,
    new_figure,
    token_label,
)
from ._explorer import FigureExplorer
from ._inputs import attention_stack, run_for_attention
from ._inputs import encode_input as _encode_input
from .heatmap import (
    _check_query_index,
    _draw_heatmap,
    _heatmap_figsize,
    _keys_and_queries,
    _mean_row_entropy,
    _resolve_mask,
    attention_heatmap,
)

# --------------------------------------------------------------------------------------------------
# The attention explorer
# --------------------------------------------------------------------------------------------------

HeadChoice = int | str  # a head index, "mean" or "max"


def _normalize_attn(attn: Any, batch_index: int | None) -> np.ndarray:
    """Any accepted attention layout -> float array (layers, heads, queries, keys)."""
    return attention_stack(attn, batch_index, "attn")


class AttentionExplorer(FigureExplorer):
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
        keys, queries = _keys_and_queries(tokens, query_tokens, nq, nk, "attn")
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
        target: Any = None,
        target_tokenizer: Any = None,
        **kwargs: Any,
    ) -> AttentionExplorer:
        """Run ``model(idx, return_attention=True)`` on one sequence and explore its attention.

        ``text_or_ids`` is a string (encoded with ``tokenizer.encode``) or token ids (a list, a
        (T,) or (1, T) tensor). Tokens are labelled ``tokenizer.decode([id])`` per position when a
        tokenizer is given, else ``str(id)``. The model runs in eval mode (no dropout) under
        ``torch.no_grad()`` and is put back in its previous mode. If the model returns attention
        as a mapping or NamedTuple (e.g. encoder self / decoder self / cross), name the one to
        explore with ``attention_key``. Other keyword arguments go to :class:`AttentionExplorer`.

        An encoder-decoder (the book's :class:`~transformer_core.Transformer`) takes a source and a
        target: pass the source as ``text_or_ids`` and the decoder's input as ``target`` (text,
        encoded with ``target_tokenizer``, which defaults to ``tokenizer``, or ids); the model runs
        as ``model(src, tgt, return_attention=True)``. Then ``attention_key="encoder"`` explores
        the source attending to itself, ``"decoder"`` the target to itself (causal) and
        ``"cross"`` the target's queries over the source's keys.
        """
        ids = _encode_input(text_or_ids, tokenizer)
        tgt_ids = None
        if target is not None:
            target_tokenizer = tokenizer if target_tokenizer is None else target_tokenizer
            tgt_ids = _encode_input(target, target_tokenizer)
        attn = run_for_attention(model, ids, tgt_ids)
        if hasattr(attn, "_asdict"):  # a NamedTuple of attention tensors
            attn = attn._asdict()
        if isinstance(attn, Mapping):
            if attention_key is None or attention_key not in attn:
                raise ValueError(
                    f"the model returned attention for {sorted(attn)}; choose one with "
                    "attention_key=..."
                )
            attn = attn[attention_key]

        def labels(seq: list[int], tok: Any) -> list[str]:
            return [tok.decode([i]) for i in seq] if tok is not None else [str(i) for i in seq]

        tokens = labels(ids, tokenizer)
        if tgt_ids is not None:
            tgt_tokens = labels(tgt_ids, target_tokenizer)
            n_queries, n_keys = int(attn.shape[-2]), int(attn.shape[-1])
            if (n_queries, n_keys) == (len(tgt_ids), len(ids)):  # cross: target queries, source keys
                kwargs.setdefault("query_tokens", tgt_tokens)
            elif (n_queries, n_keys) == (len(tgt_ids), len(tgt_ids)):  # the decoder's self-attention
                tokens = tgt_tokens
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
        fig = new_figure((w0 * len(heads) + 1.2, h0 + 0.3), self.dpi)
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
        fig = new_figure((panel * n_head + 1.0, panel * n_layer + 0.6), self.dpi)
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
