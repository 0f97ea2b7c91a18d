"""The book site: it builds strictly, and every page works in a browser with no network.

The site is built once per session, exactly as `make book` builds it (npm ci when needed, then
`jupyter-book build --all -W -n --keep-going`), into a temporary folder. Then Chromium opens
every page of _toc.yml (chapters and solutions), served from localhost, with every request to
any other host blocked and counted, and checks what the page's notebook promises: math typeset
by MathJax, figures shown, widgets rendered, and each explorer's pre-rendered views switched by
its controls without a kernel. Screenshots of failing pages go to test-artifacts/.

Select these with `pytest -m browser`. Two quick checks of the committed notebooks (widget
state saved, explorers in static mode) need no browser and always run.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from _browser import REPO, Watch, chromium, require_chromium, screenshot_on_failure
from _optional import missing

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MATH = re.compile(r"\$\$|\$[^$\s][^$\n]*\$|\\\(|\\\[|\\begin\{")
EXPLORER_TEXT = re.compile(r"^\w+Explorer\(.*\)$")
VIEW_TEXT = re.compile(r"^(TokenView|GridView)\(.*\)$")  # transformer_core.viz.views
NODE_STAMP = REPO / "node_modules" / ".installed"


# --------------------------------------------------------------------------------------------------
# What each page's notebook holds
# --------------------------------------------------------------------------------------------------


def toc_pages() -> list[str]:
    """Every page of the book, in the order of _toc.yml (docnames, no extension)."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("root", "file"):
                    found.append(str(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def chapter_notebooks() -> list[Path]:
    return sorted(
        p for p in (REPO / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
    )


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


@functools.cache
def page_facts(docname: str) -> dict:
    """Math, figures, widget views and explorers of a page, read from its notebook."""
    nb = json.loads((REPO / f"{docname}.ipynb").read_text(encoding="utf-8"))
    markdown = "\n".join(_text(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    facts = {
        "math": bool(MATH.search(markdown)),
        "figures": bool(re.search(r"!\[[^\]]*\]\(|<img ", markdown)),
        "widgets": 0,
        "explorers": [],
        "views": [],
    }
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data or "image/svg+xml" in data:
                facts["figures"] = True
            if WIDGET_VIEW in data:
                facts["widgets"] += 1
                text = _text(data.get("text/plain", ""))
                if EXPLORER_TEXT.match(text):
                    facts["explorers"].append(text)
                if VIEW_TEXT.match(text):
                    facts["views"].append(text)
    return facts


# --------------------------------------------------------------------------------------------------
# Committed notebooks (no browser): what the site needs from them
# --------------------------------------------------------------------------------------------------


def _widget_outputs(nb: dict) -> list[tuple[str, str]]:
    return [
        (out["data"][WIDGET_VIEW]["model_id"], _text(out["data"].get("text/plain", "")))
        for cell in nb["cells"]
        for out in cell.get("outputs", [])
        if WIDGET_VIEW in out.get("data", {})
    ]


def widget_notebooks() -> list[Path]:
    """The chapter notebooks that show widgets."""
    return [
        p for p in chapter_notebooks() if _widget_outputs(json.loads(p.read_text(encoding="utf-8")))
    ]


@pytest.mark.parametrize("path", widget_notebooks(), ids=lambda p: p.stem)
def test_widget_outputs_are_saved_with_their_state(path: Path):
    """The site renders a widget from the state saved in the notebook's metadata, or not at all."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    outputs = _widget_outputs(nb)
    state = nb["metadata"].get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    missing = [text or model_id for model_id, text in outputs if model_id not in state]
    assert not missing, (
        f"{path.name}: widget outputs without saved state ({missing}); the book site would show "
        'nothing there. Execute the chapter with: make execute NB="'
        + str(path.relative_to(REPO))
        + '"'
    )


@pytest.mark.parametrize("path", widget_notebooks(), ids=lambda p: p.stem)
def test_explorers_are_committed_in_static_mode(path: Path):
    """A live explorer does nothing on the site (no kernel): commit the pre-rendered views."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    live = [
        text for _, text in _widget_outputs(nb) if EXPLORER_TEXT.match(text) and "live)" in text
    ]
    assert not live, (
        f"{path.name} holds explorers in live mode: {live}. Execute it with the explorers in "
        'static mode: make execute NB="' + str(path.relative_to(REPO)) + '" (see CONTRIBUTING.md)'
    )


#: a 2-layer x 4-head x 64-token view may take this much of a notebook (issue 15's budget); a
#: larger view proportionally more
VIEW_BUDGET = 200_000
VIEW_BUDGET_WEIGHTS = 2 * 4 * 64 * 64


@pytest.mark.parametrize("path", widget_notebooks(), ids=lambda p: p.stem)
def test_attention_views_are_small_and_carry_their_attention(path: Path):
    """Each TokenView / GridView saved in a chapter holds its weights and keeps to its budget."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    state = nb["metadata"].get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    views = {mid: text for mid, text in _widget_outputs(nb) if VIEW_TEXT.match(text)}
    for model_id, text in views.items():
        model = state[model_id]
        assert model["model_module"] == "anywidget", f"{path.name}: {text} is not an anywidget"
        parts = model["state"]["parts"]
        assert parts and all(p["data"] for p in parts), f"{path.name}: {text} holds no weights"
        weights = sum(p["layers"] * p["heads"] * p["queries"] * p["keys"] for p in parts)
        budget = VIEW_BUDGET * max(1.0, weights / VIEW_BUDGET_WEIGHTS)
        size = len(json.dumps(model).encode())
        layout = model["state"].get("layout", "").removeprefix("IPY_MODEL_")
        size += len(json.dumps(state.get(layout, {})).encode())
        assert size <= budget, (
            f"{path.name}: {text} takes {size / 1000:.0f} kB of the notebook, more than its "
            f"{budget / 1000:.0f} kB: view fewer layers or a shorter text"
        )


# --------------------------------------------------------------------------------------------------
# Building and serving the site
# --------------------------------------------------------------------------------------------------


def _npm_ci() -> None:
    """What `make book` does first: install the offline assets when package-lock.json changed."""
    lock = REPO / "package-lock.json"
    if NODE_STAMP.exists() and NODE_STAMP.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    if npm is None:
        missing("the book site needs Node.js and npm for its offline assets (make book)")
    subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=REPO, check=True)
    NODE_STAMP.touch()


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The site, built strictly (as make book does) into a temporary folder: its html folder."""
    require_chromium()
    _npm_ci()
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    start = time.perf_counter()
    proc = subprocess.run(
        [
            str(jupyter_book),
            "build",
            "--all",
            "-W",
            "-n",
            "--keep-going",
            "--path-output",
            str(out),
            ".",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    print(f"book built in {time.perf_counter() - start:.0f} s")
    assert proc.returncode == 0, (
        "jupyter-book build -W failed:\n" + (proc.stdout + proc.stderr)[-6000:]
    )
    return out / "_build" / "html"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def site_url(site: Path):
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")  # one Playwright at a time: test_lab_browser.py starts its own
def browser(site):
    with chromium() as b:
        yield b


@pytest.fixture()
def page_and_watch(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watch = Watch()
    watch.attach(context)
    page = context.new_page()
    yield page, watch
    context.close()


# --------------------------------------------------------------------------------------------------
# The site as a whole
# --------------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_site_has_every_page_logo_favicon_and_offline_assets(site: Path):
    for docname in toc_pages():
        assert (site / f"{docname}.html").is_file(), f"{docname}.html was not built"
    assert (site / "index.html").is_file()
    first = (site / f"{toc_pages()[0]}.html").read_text(encoding="utf-8")
    assert "logo.svg" in first and 'rel="icon"' in first
    for asset in (
        "require.js",
        "html-manager/embed-amd.js",
        "anywidget/index.js",
        "mathjax/tex-mml-chtml.js",
    ):
        assert (site / "vendor" / asset).is_file(), f"vendor/{asset} is missing"
    for docname in toc_pages():
        html = (site / f"{docname}.html").read_text(encoding="utf-8")
        for src in re.findall(r'<script[^>]*\ssrc="([^"]+)"', html):
            assert "://" not in src, f"{docname} loads a script from the network: {src}"
        if docname.startswith("chapters/"):
            assert "btn-launch-jupyterlab" in html, f"{docname} has no JupyterLab launch button"
            assert "copybutton.js" in html


@pytest.mark.browser
def test_search_works_offline(site_url, page_and_watch):
    page, watch = page_and_watch
    with screenshot_on_failure(page, "book-search"):
        page.goto(f"{site_url}/search.html?q=softmax", wait_until="load")
        results = page.locator("#search-results li")
        results.first.wait_for(timeout=20_000)
        assert results.count() >= 1
        watch.assert_clean()


def _visible_markers(subarea) -> list[str]:
    return subarea.evaluate(
        """el => [...el.querySelectorAll('.tc-marker')]
                .filter(m => m.getClientRects().length > 0)
                .map(m => m.textContent)"""
    )


def _visible_image_src(subarea) -> list[str]:
    return subarea.evaluate(
        """el => [...el.querySelectorAll('img')]
                .filter(m => m.getClientRects().length > 0)
                .map(m => m.getAttribute('src'))"""
    )


def _controls(subarea) -> list[tuple[str, object]]:
    """The explorer's controls a reader can change on the static page, outermost first."""
    found: list[tuple[str, object]] = []
    for sel in subarea.locator("select").all():
        if sel.is_visible() and sel.locator("option").count() > 1:
            found.append(("select", sel))
    for handle in subarea.locator(".noUi-handle").all():
        if handle.is_visible():
            found.append(("slider", handle))
    return found


def _change(kind: str, control) -> None:
    if kind == "select":
        n = control.locator("option").count()
        current = control.evaluate("s => s.selectedIndex")
        control.select_option(index=(current + 1) % n)
    else:  # a slider handle: one step with the keyboard
        control.focus()
        control.press("ArrowRight")


def _check_token_view(page, view, name: str) -> None:
    """Hover a query, then a key: the view writes that token's row / column with its numbers."""
    for side, index in (("query", 1), ("key", 0)):
        token = view.locator(f".av-{side}").nth(index)
        token.scroll_into_view_if_needed()
        token.hover()
        detail = view.locator(".av-detail").first
        page.wait_for_function(
            "([d, want]) => d.textContent.startsWith(want)",
            arg=[detail.element_handle(), f"{side} {index} "],
            timeout=10_000,
        )
        text = detail.inner_text()
        assert re.search(r"head \d+: .*\d\.\d\d", text), f"{name}: no weights shown: {text!r}"
    # a layer change redraws the lines: the view's layer and its status follow
    layer = view.locator("select.av-layer")
    if layer.locator("option").count() > 1:
        layer.select_option(index=1)
        page.wait_for_function("v => v.dataset.layer === '1'", arg=view.element_handle())
        assert " · layer " in view.locator(".av-status").first.inner_text()


def _check_grid_view(page, view, name: str) -> None:
    """Hover a head's thumbnail for query, key and weight; a click opens the head large."""
    thumb = view.locator(".av-cell canvas").nth(0)
    thumb.scroll_into_view_if_needed()
    box = thumb.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.7)
    status = view.locator(".av-status").first
    page.wait_for_function(
        "s => /query \\d+ .*→ key \\d+ .*: \\d\\.\\d+$/.test(s.textContent)",
        arg=status.element_handle(),
        timeout=10_000,
    )
    view.locator(".av-cell").nth(1).click()
    view.locator(".av-zoom .av-big").wait_for(timeout=10_000)
    assert view.locator(".av-zoom .av-query").count() > 0, f"{name}: the opened head has no tokens"


def _check_views(page, article, views: list[str], docname: str) -> None:
    """Every TokenView and GridView of the page renders from the page alone and answers the mouse."""
    page.wait_for_function(
        "n => document.querySelectorAll('article .attention-view').length >= n",
        arg=len(views),
        timeout=30_000,
    )
    rendered = article.locator(".attention-view")
    assert rendered.count() == len(views), f"views in the notebook: {views}, rendered: {rendered.count()}"
    for i, text in enumerate(views):
        view = rendered.nth(i)
        kind = view.get_attribute("data-view")
        assert kind == ("grid" if text.startswith("GridView") else "token"), (i, kind, text)
        if kind == "grid":
            _check_grid_view(page, view, f"{docname}: {text}")
        else:
            _check_token_view(page, view, f"{docname}: {text}")


def _check_explorer(page, subarea, name: str) -> None:
    """Every control switches the view: the visible marker and the visible image both change."""
    controls = _controls(subarea)
    assert controls, f"{name}: no control to change on the page"
    for kind, control in controls[:2]:  # e.g. layer and head of the attention explorer
        before = _visible_markers(subarea)
        images_before = _visible_image_src(subarea)
        assert len(before) == 1, f"{name}: expected one visible view, markers: {before}"
        _change(kind, control)
        handle = subarea.element_handle()
        page.wait_for_function(
            """([el, old]) => {
                const shown = [...el.querySelectorAll('.tc-marker')]
                    .filter(m => m.getClientRects().length > 0).map(m => m.textContent);
                return shown.length === 1 && shown[0] !== old;
            }""",
            arg=[handle, before[0]],
            timeout=10_000,
        )
        after = _visible_markers(subarea)
        assert _visible_image_src(subarea) != images_before, (
            f"{name}: the marker changed ({before[0]!r} -> {after[0]!r}) but not the image"
        )


@pytest.mark.browser
@pytest.mark.parametrize("docname", toc_pages())
def test_page(docname: str, site_url, page_and_watch):
    facts = page_facts(docname)
    page, watch = page_and_watch
    with screenshot_on_failure(page, f"book-{docname}"):
        page.goto(f"{site_url}/{docname}.html", wait_until="load")
        article = page.locator("article.bd-article")
        article.wait_for()

        if facts["math"]:
            page.wait_for_function(
                "() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                timeout=30_000,
            )
            page.evaluate("() => MathJax.startup.promise.then(() => true)")  # typeset done
            assert article.locator("mjx-container").count() > 0, "math was not typeset"
            assert article.locator("mjx-merror").count() == 0, "MathJax reported a TeX error"

        if facts["figures"]:
            images = article.locator("img")
            assert images.count() > 0, "no figure on the page"
            images.first.scroll_into_view_if_needed()
            assert images.first.is_visible()
            broken = article.evaluate(
                """a => [...a.querySelectorAll('img')]
                        .filter(i => i.complete && i.naturalWidth === 0).map(i => i.src)"""
            )
            assert not broken, f"images that did not load: {broken}"

        if facts["widgets"]:
            subareas = article.locator(".widget-subarea")
            page.wait_for_function(
                "n => document.querySelectorAll('article .widget-subarea').length >= n",
                arg=facts["widgets"],
                timeout=30_000,
            )
            assert "Error displaying widget" not in article.inner_text()
            with_marker = [s for s in subareas.all() if s.locator(".tc-marker").count() > 0]
            assert len(with_marker) == len(facts["explorers"]), (
                f"explorers in the notebook: {facts['explorers']}, rendered: {len(with_marker)}"
            )
            for i, subarea in enumerate(with_marker):
                text = facts["explorers"][i]
                assert "live)" not in text, (
                    f"{text} was committed in live mode: on the site its controls change nothing."
                    f' Execute the chapter with: make execute NB="{docname}.ipynb"'
                )
                subarea.scroll_into_view_if_needed()
                _check_explorer(page, subarea, f"{docname}: {text}")
            if facts["views"]:
                _check_views(page, article, facts["views"], docname)

        watch.assert_clean()
