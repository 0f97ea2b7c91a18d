"""Shared helpers of transformer_core.viz: modes, conversions, figure rendering."""

from __future__ import annotations

import io
import os
from typing import Literal

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from ._inputs import as_tokens, to_numpy  # noqa: F401  (viz's public names)

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


def tick_fontsize(n: int) -> float:
    """The font size of an axis' tick labels when it carries ``n`` of them (10 down to 4)."""
    if n <= 16:
        return 10
    if n <= 32:
        return 8
    if n <= 64:
        return 6
    return 4


def new_figure(figsize: tuple[float, float], dpi: float = 100) -> Figure:
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
