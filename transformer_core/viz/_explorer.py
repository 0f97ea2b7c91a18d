"""The machinery every explorer shares: controls -> figure -> PNG, live or static."""

from __future__ import annotations

import html
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
from ipywidgets.widgets.widget_link import Link
from matplotlib.figure import Figure

from ._common import (
    LongInputWarning,
    Mode,
    _resolve_mode,
    figure_to_png,
)

# --------------------------------------------------------------------------------------------------
# The explorer machinery shared by every interactive figure
# --------------------------------------------------------------------------------------------------


def _marker_html(text: str) -> str:
    return f'<span class="tc-marker">{html.escape(text)}</span>'


class FigureExplorer:
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
        self.links: list[Link] = []
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

    def save_html(
        self, path: str | os.PathLike[str], embed_url: str | None = None, title: str | None = None
    ) -> Path:
        """Write a standalone HTML page holding this explorer's widgets (and its jslinks).

        Meant for static mode: the page needs no kernel, only the widget manager script
        ``@jupyter-widgets/html-manager``'s ``dist/embed.js``, loaded from ``embed_url`` (default:
        the CDN ipywidgets names; pass a local copy's URL to work offline). A live explorer's
        page shows its current view and nothing more.
        """
        from ipywidgets.embed import dependency_state, embed_minimal_html

        assert self.widget is not None
        path = Path(path)
        state = dependency_state([self.widget, *self.links], drop_defaults=True)
        kwargs: dict[str, Any] = {"requirejs": False, "state": state}
        if embed_url is not None:
            kwargs["embed_url"] = embed_url
        embed_minimal_html(str(path), views=[self.widget], title=title or self._summary(), **kwargs)
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
        pos = len(self.stacks)  # keep self.stacks / self.links outermost first (pre-order)
        children = [self._static_tree(level + 1, {**state, name: v}) for v in self._values[name]]
        stack = widgets.Stack(children=children, selected_index=ctrl.index)
        self.stacks.insert(pos, stack)
        self.links.insert(pos, widgets.jslink((ctrl, "index"), (stack, "selected_index")))
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
