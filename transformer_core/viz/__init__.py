"""Pictures of attention and of training: attention views, heatmaps, the explorer, the loss curve.

The optional part of transformer_core: it needs matplotlib, ipywidgets and anywidget (the ``book`` extra,
``pip install 'transformer_core[book]'``), imported when a name below is first used, so that
``import transformer_core.viz`` works without them. It is built on the core's own functions
(:func:`transformer_core.causal_mask`, :func:`transformer_core.interpret.attention_entropy`) and
takes plain arrays (numpy or torch), so it does not care which model made them.

* :class:`TokenView` and :class:`GridView` are attention a reader can touch: tokens on both sides
  with lines weighted by attention, hover for a token's row or column with the numbers; every
  layer x head as small heatmaps, hover for query, key and weight, click to open a head, ordered
  or coloured by a head score. anywidget widgets whose attention and front-end live in the page,
  so they work in JupyterLab and, with no kernel, on the static book site (``views``).
* :func:`attention_heatmap` draws one attention matrix, queries as rows and keys as columns, on a
  fixed 0-1 colour scale, with masked cells (future positions, padding) hatched grey so that they
  never look like a weight of zero.
* :class:`AttentionExplorer` browses a whole model's attention, shaped (layers, heads, queries, keys):
  layer, head (or the mean / max over heads), query row, mask on/off, a compare view of several heads
  and an overview of every layer x head with its mean row entropy.
* :func:`plot_history` and :class:`LiveLossPlot` draw the loss curve of a training run, the second
  while it runs (a callback of :func:`transformer_core.training.train`).
* :class:`FigureExplorer` is what every explorer is built on, for explorers of one's own (the
  book's smaller figures, in ``attention_book.figures``, are built on it).

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

Modules: ``views`` (TokenView, GridView; ``views.js`` and ``views.css`` are their front-end),
``heatmap`` (the heatmap and its masks), ``attention`` (AttentionExplorer),
``training_plots`` (the loss curve), ``_explorer`` (the live/static machinery every explorer
shares), ``_common`` (helpers).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that holds it (imported on first use: matplotlib, ipywidgets)
_WHERE = {
    "AttentionExplorer": "attention",
    "AttentionPart": "views",
    "GridView": "views",
    "TokenView": "views",
    "attention_parts": "views",
    "FigureExplorer": "_explorer",
    "HIGHLIGHT_COLOR": "_common",
    "LiveLossPlot": "training_plots",
    "LongInputWarning": "_common",
    "as_tokens": "_common",
    "attention_heatmap": "heatmap",
    "figure_to_png": "_common",
    "infer_causal_mask": "heatmap",
    "new_figure": "_common",
    "plot_history": "training_plots",
    "set_widget_mode": "_common",
    "tick_fontsize": "_common",
    "to_numpy": "_common",
    "token_label": "_common",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f".{_WHERE[name]}", __name__)
    except ImportError as err:
        raise ImportError(
            f"transformer_core.viz.{name} needs matplotlib, ipywidgets and anywidget ({err}); install the "
            "book extra: pip install 'transformer_core[book]'"
        ) from err
    value = getattr(module, name)
    globals()[name] = value  # the next look-up finds it directly
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
