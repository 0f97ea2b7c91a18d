"""Watching a run: the loss curve, drawn once (:func:`plot_history`) or live while a model trains
(:class:`LiveLossPlot`, a callback of :func:`transformer_core.training.train`)::

    from transformer_core.training import TrainConfig, train
    from transformer_core.viz import LiveLossPlot

    history = train(model, train_ids, val_ids, TrainConfig(max_steps=300), callbacks=[LiveLossPlot()])

matplotlib is imported when a curve is drawn, ipywidgets and IPython only in a notebook, so a
script that trains without them never needs them.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["LiveLossPlot", "plot_history"]


def plot_history(history: Sequence[dict], ax=None, log_y: bool = False, floor: float | None = None):
    """Plot training and validation loss against the step; returns the matplotlib ``Figure``.

    Without ``ax`` a new ``matplotlib.figure.Figure`` is made directly (not through pyplot), so
    nothing is left open in pyplot's list of figures. ``floor`` (in the history's loss units, e.g.
    nats per token from the book's ``attention_book.floor``) adds a dashed line: no model can go below it.
    """
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(6, 3.5), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    steps = [r["step"] for r in history]
    ax.plot(steps, [r["train_loss"] for r in history], label="train", color="tab:blue")
    val = [(r["step"], r["val_loss"]) for r in history if r.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation", color="tab:orange", markersize=3)
    if floor is not None:
        ax.axhline(float(floor), color="black", linestyle="--", linewidth=1,
                   label="floor (corpus entropy)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (cross-entropy, nats)")
    if log_y:
        ax.set_yscale("log")
    if history:
        last = history[-1]
        title = f"step {last['step']}: train {last['train_loss']:.3f}"
        if val:
            title += f", validation {val[-1][1]:.3f}"
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


class LiveLossPlot:
    """A callback that redraws the loss curve in the notebook while the model trains.

    Each redraw renders a fresh figure to PNG (matplotlib's Agg backend, no pyplot: no figures pile
    up) and swaps it into one ``ipywidgets.Image`` -- no flicker, one picture that updates in place.
    Without ipywidgets it updates an IPython display handle instead; outside a notebook it draws
    nothing, unless ``path`` is given, where it writes the PNG (handy for scripts).

    Args:
        every: redraw every ``every`` records (and whenever a validation loss arrives).
        path: optional file to write the PNG to at every redraw.
        floor: the lowest loss any model can reach (see the book's ``attention_book.floor``), drawn dashed.
    """

    def __init__(self, every: int = 1, path: str | os.PathLike | None = None, log_y: bool = False,
                 floor: float | None = None) -> None:
        self.every = max(1, int(every))
        self.floor = floor
        self.path = Path(path) if path is not None else None
        self.log_y = log_y
        self.history: list[dict] = []
        self._widget = None
        self._handle = None

    def __call__(self, record: dict) -> None:
        self.history.append(dict(record))
        if (len(self.history) - 1) % self.every == 0 or record.get("val_loss") is not None:
            self.draw()

    def png(self) -> bytes:
        """The current plot as PNG bytes."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        fig = plot_history(self.history, log_y=self.log_y, floor=self.floor)
        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        return buf.getvalue()

    def draw(self) -> None:
        if not self.history:
            return
        png = self.png()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(png)
        if self._widget is not None:
            self._widget.value = png
        elif self._handle is not None:
            from IPython.display import Image

            self._handle.update(Image(png))
        elif _in_notebook():
            from IPython.display import display

            try:
                import ipywidgets

                self._widget = ipywidgets.Image(value=png, format="png")
                display(self._widget)
            except ImportError:
                from IPython.display import Image

                self._handle = display(Image(png), display_id=True)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})

