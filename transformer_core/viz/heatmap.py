"""The attention heatmap, masks and entropy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .. import causal_mask
from ..interpret import attention_entropy
from ._common import (
    DEFAULT_CMAP,
    HATCH_COLOR,
    HIGHLIGHT_COLOR,
    MASK_COLOR,
    _get_cmap,
    as_tokens,
    new_figure,
    tick_fontsize,
    to_numpy,
    token_label,
)

# --------------------------------------------------------------------------------------------------
# Masks and entropy (both the core's: transformer_core.causal_mask, interpret.attention_entropy)
# --------------------------------------------------------------------------------------------------


def infer_causal_mask(weights: Any) -> np.ndarray:
    """Where ``weights`` (..., queries, keys) hide the future, after checking they are causal.

    Returns a bool (queries, keys) array, True where a query may **not** look: the cells a heatmap
    hatches, the opposite of :func:`transformer_core.causal_mask` (True where a query may look),
    from which it is built. With fewer queries than keys (the last queries of a longer sequence,
    as with a KV cache) query ``i`` sits at position ``i + keys - queries``.

    Raises ValueError when any weight above the diagonal is non-zero: a causal model gives exactly
    0 there, so a non-zero entry means the weights are not causal and a causal mask would hide real
    attention.
    """
    w = to_numpy(weights, "weights")
    if w.ndim < 2:
        raise ValueError(f"weights must have at least 2 dimensions (queries, keys), got {w.shape}")
    m = ~causal_mask(w.shape[-2], w.shape[-1]).numpy()  # the core's mask says where a query may look
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
    m = to_numpy(mask, "mask")
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


def _mean_row_entropy(w: np.ndarray, mask: np.ndarray | None) -> float:
    """Mean entropy (nats) of the rows of w (q, k) that are not fully masked; masked cells left out."""
    if mask is not None:
        w = np.where(mask, 0.0, w)
    ent = attention_entropy(torch.from_numpy(w)).numpy()
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
            range(nk), [token_label(t) for t in keys], rotation=90, fontsize=tick_fontsize(nk)
        )
    else:
        ax.set_xticks([])
    if queries is not None:
        ax.set_yticks(range(nq), [token_label(t) for t in queries], fontsize=tick_fontsize(nq))
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


def _keys_and_queries(
    tokens: Any, query_tokens: Any, nq: int, nk: int, what: str
) -> tuple[list[str], list[str]]:
    """The key and query labels of attention over ``nq`` queries and ``nk`` keys, checked.

    Without ``query_tokens`` the queries are the keys (self-attention), so they must be as many.
    """
    keys = as_tokens(tokens, "tokens")
    if len(keys) != nk:
        raise ValueError(f"{what} has {nk} keys (columns) but {len(keys)} tokens were given")
    if query_tokens is None:
        if nq != nk:
            raise ValueError(
                f"{what} has {nq} queries (rows) and {nk} keys (columns): for cross-attention "
                "pass query_tokens (one per query) as well as tokens (one per key)"
            )
        return keys, keys
    queries = as_tokens(query_tokens, "query_tokens")
    if len(queries) != nq:
        raise ValueError(
            f"{what} has {nq} queries (rows) but {len(queries)} query_tokens were given"
        )
    return keys, queries


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
    w = to_numpy(weights, "weights")
    if w.ndim != 2:
        raise ValueError(
            f"attention_heatmap expects 2-D weights (queries, keys), got shape {tuple(w.shape)}; "
            "pick one layer and head first, e.g. attn[layer, batch, head]"
        )
    nq, nk = w.shape
    keys, queries = _keys_and_queries(tokens, query_tokens, nq, nk, "the weight matrix")
    m = _resolve_mask(mask, w)
    hq = _check_query_index(highlight_query, nq)
    if annotate is None:
        annotate = max(nq, nk) <= 10
    if ax is None:
        fig = new_figure(figsize or _heatmap_figsize(nq, nk), dpi)
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
