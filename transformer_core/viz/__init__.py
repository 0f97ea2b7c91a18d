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

Modules: ``heatmap`` (the heatmap, masks, entropy), ``attention`` (AttentionExplorer), ``figures``
(the smaller explorers), ``_explorer`` (the live/static machinery they share), ``_common`` (helpers).
"""

try:
    import ipywidgets  # noqa: F401
    import matplotlib  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "transformer_core.viz needs matplotlib and ipywidgets; install the book extras: "
        "pip install 'transformer_core[book]'"
    ) from err

from ._common import LongInputWarning, figure_to_png, set_widget_mode, token_label
from .attention import AttentionExplorer
from .figures import (
    PositionalEncodingExplorer,
    SamplingExplorer,
    SoftmaxTemperatureExplorer,
    positional_encoding_explorer,
    sampling_distribution,
    sampling_explorer,
    sinusoidal_encoding,
    softmax_temperature_explorer,
)
from .heatmap import attention_entropy, attention_heatmap, causal_mask, infer_causal_mask

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
