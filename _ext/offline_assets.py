"""Sphinx extension of the book site: every script a page loads comes from the site itself.

A Jupyter Book 1 page loads require.js, the Jupyter widget manager (``embed-amd.js`` of
``@jupyter-widgets/html-manager``) and MathJax from CDNs by default, and the widget manager
fetches any other widget module (anywidget's, for the attention views) from a CDN too, so offline
it shows neither widgets nor math. ``make book`` installs them with ``npm ci`` (package.json, package-lock.json)
into ``node_modules/``; this extension copies them into ``_build/html/vendor/`` and checks that
``mathjax_path`` and ``nb_ipywidgets_js`` (set in _config.yml) point there and not to the network.

The folder is ``vendor/``, not ``_static/``: Jupyter Book 1 adds every ``.js`` under a source
``_static`` folder to every page. Sphinx prefixes a relative script path with ``_static/``, so
_config.yml writes ``../vendor/...`` (the browser resolves ``_static/../vendor/x.js``).

It also adds a "JupyterLab" launch button to every notebook page, a link into the reader's own
JupyterLab (``make lab``, at ``tc_lab_url``), which needs no repository URL (Binder and Colab
buttons do: see ``launch_buttons`` in _config.yml).
"""

from __future__ import annotations

import posixpath
import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

VENDOR = "vendor"

#: (path under node_modules, path under the site's vendor/ folder, file patterns to leave out)
ASSETS: list[tuple[str, str, tuple[str, ...]]] = [
    ("requirejs/require.js", "require.js", ()),
    # embed-amd.js holds the manager with @jupyter-widgets/base, controls and output; it loads
    # its Font Awesome fonts from its own folder, so the fonts come along.
    (
        "@jupyter-widgets/html-manager/dist",
        "html-manager",
        ("*.map", "embed.js", "libembed-amd.js"),
    ),
    # anywidget's front-end (an AMD module on @jupyter-widgets/base): the widget manager loads
    # it through require.js (widgets-offline.js maps "anywidget" here) for the attention views;
    # each view's own code travels in its widget state
    ("anywidget/dist/index.js", "anywidget/index.js", ()),
    # tex-mml-chtml.js loads its fonts and any TeX extension it needs from its own folder.
    ("mathjax/es5", "mathjax", ()),
]

#: files of this folder the site serves next to them
OWN_FILES = ["widgets-offline.js"]

MISSING_HELP = (
    "the book site serves require.js, the widget manager, anywidget and MathJax itself, from npm packages "
    "that are not installed ({missing}). Run `npm ci` in the repository root (`make book` does "
    "it; it needs Node.js and npm)."
)


def _node_modules(app: Sphinx) -> Path:
    return Path(app.srcdir, app.config.tc_node_modules)


def copy_assets(app: Sphinx) -> None:
    """Copy the npm assets into <html output>/vendor/ (before pages are written)."""
    if app.builder is None or app.builder.format != "html":
        return
    root = _node_modules(app)
    missing = [src for src, _, _ in ASSETS if not (root / src).exists()]
    if missing:
        raise ExtensionError(MISSING_HELP.format(missing=", ".join(missing)))
    out = Path(app.outdir, VENDOR)
    for src, dst, ignore in ASSETS:
        source, target = root / src, out / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(
                source, target, ignore=shutil.ignore_patterns(*ignore), dirs_exist_ok=True
            )
        else:
            shutil.copy2(source, target)
    for name in OWN_FILES:
        shutil.copy2(Path(__file__).with_name(name), out / name)
    check_script_paths(app)


def _site_path(script: str) -> str:
    """Where a script path from the config lands in the site (Sphinx prefixes ``_static/``)."""
    return posixpath.normpath(posixpath.join("_static", script))


def check_script_paths(app: Sphinx) -> None:
    """Fail the build when a page would load MathJax or the widget manager from the network."""
    scripts = [("mathjax_path", app.config.mathjax_path)]
    scripts += [("nb_ipywidgets_js", path) for path in app.config.nb_ipywidgets_js]
    problems = []
    for name, script in scripts:
        if "://" in script or script.startswith("//"):
            problems.append(f"{name} loads {script} from the network")
            continue
        target = _site_path(script)
        if not target.startswith(f"{VENDOR}/") or not Path(app.outdir, target).is_file():
            problems.append(f"{name}: {script} is not a file the site serves under {VENDOR}/")
    if problems:
        raise ExtensionError(
            "the book must work offline: " + "; ".join(problems) + ". Point it at a file under "
            f"../{VENDOR}/ (see _config.yml)"
        )


def drop_duplicate_scripts(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """Load each script once: sphinx-thebe and sphinx-togglebutton add their inline settings
    twice (once with filename None, once with ""), and the second copy fails in the browser
    ("Identifier 'THEBE_JS_URL' has already been declared")."""
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (
            str(getattr(script, "filename", script) or ""),  # inline scripts: None or ""
            tuple(sorted(getattr(script, "attributes", {}).items())),
        )
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"][:] = unique


def add_lab_button(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """A launch button that opens this page's notebook in the reader's own JupyterLab."""
    lab_url = (app.config.tc_lab_url or "").rstrip("/")
    buttons = context.get("header_buttons")
    if not lab_url or buttons is None or not pagename.startswith("chapters/"):
        return
    if not Path(app.srcdir, pagename + ".ipynb").is_file():
        return
    button = {
        "type": "link",
        "text": "JupyterLab",
        "tooltip": "Open this notebook in your JupyterLab (start it with: make lab)",
        "icon": "_static/images/logo_jupyterhub.svg",
        "url": f"{lab_url}/lab/tree/{pagename}.ipynb",
        "label": "launch-jupyterlab",
    }
    for group in buttons:
        if group.get("label") == "launch-buttons":
            group["buttons"].insert(0, button)
            return
    buttons.append(
        {
            "type": "group",
            "tooltip": "Launch interactive content",
            "icon": "fas fa-rocket",
            "buttons": [button],
            "label": "launch-buttons",
        }
    )


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("tc_node_modules", "node_modules", "html")
    app.add_config_value("tc_lab_url", "http://localhost:8888", "html")
    app.connect("builder-inited", copy_assets)
    # after sphinx-book-theme has made its header buttons (priority 501)
    app.connect("html-page-context", add_lab_button, priority=510)
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
