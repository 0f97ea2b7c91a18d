"""The attention views live in Jupyter Notebook 7: run a notebook, then hover and switch them.

Starts a throwaway Notebook 7 server from this Python environment (tests/_browser.py's
JupyterServer: free port, fixed token, its own config and settings, autosave off, no news), opens
tests/data/attention_views_notebook7.ipynb (a tiny untrained GPT, 2 layers x 4 heads), runs it,
and checks in Chromium, with every request that leaves this machine blocked and counted and
console errors failing the test:

- several heads at once: near the left end of a query's lines each shown head's own colour is
  there, head by head from top to bottom (the heads' lines lie side by side, not on top of each
  other);
- the views this kernel drew answer the mouse as in JupyterLab (tests/_browser.py's
  check_live_views): a hovered token writes its row, a layer change and a double-clicked head
  redraw the TokenView and reach the kernel, a GridView thumbnail names query, key and weight;
- a view of 130 tokens (past 64): the token list scrolls inside a view that stays within the
  window's height, hovering query 100 and key 120 writes their weights, a pinned token stays in
  sight after the redraw, and the view keeps to its size in a saved notebook.

Screenshots of a failing run go to test-artifacts/.
"""

from __future__ import annotations

import re
import shutil

import pytest
from _browser import (
    JUPYTER_TOKEN,
    LIVE_VIEW,
    NOTEBOOK_READY_JS,
    REPO,
    RUN_ALL_DONE_JS,
    JupyterServer,
    Watch,
    check_live_views,
    chromium,
    kernel_eval,
    require_chromium,
    screenshot_on_failure,
)

pytestmark = pytest.mark.browser

NOTEBOOK = REPO / "tests" / "data" / "attention_views_notebook7.ipynb"
OPEN_TIMEOUT_MS = 120_000
RUN_ALL_TIMEOUT_MS = 240_000
ROW = 18  # px per token row in the token view (views.js)
HEAD_COLORS = ["#1f77b4", "#e4572e", "#2ca02c", "#9467bd"]  # views.js, heads 0-3
LONG = 130  # tokens of the long view
VIEWPORT = {"width": 1400, "height": 1000}

# Notebook 7.6's own start-up, not the book's: its keyboard-shortcuts plugin reacts to another
# plugin's settings before its own are loaded and throws (seen with no user settings at all, and
# never in JupyterLab 4.6). Ignored only when thrown from Notebook 7's core bundle.
NOTEBOOK7_STARTUP_ERROR = (
    r"^Cannot read properties of undefined \(reading 'schema'\)\n[\s\S]*"
    r"/static/notebook/notebook_core\.[0-9a-f]+\.js"
)


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory):
    require_chromium()
    root = tmp_path_factory.mktemp("nb7-root")
    shutil.copy2(NOTEBOOK, root / NOTEBOOK.name)
    server = JupyterServer(root, tmp_path_factory.mktemp("nb7-home"), app="notebook")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ran(notebook7):
    """A page of Notebook 7 with the notebook open and run (every cell), and what it watched."""
    notebook7.delete_sessions()
    with chromium() as browser:
        context = browser.new_context(viewport=VIEWPORT)
        watch = Watch(ignore_uncaught=(NOTEBOOK7_STARTUP_ERROR,))
        watch.attach(context)
        page = context.new_page()
        try:
            with screenshot_on_failure(page, "notebook7-open-and-run"):
                page.goto(
                    f"{notebook7.url}/notebooks/{NOTEBOOK.name}?token={JUPYTER_TOKEN}",
                    wait_until="load",
                )
                page.wait_for_function(NOTEBOOK_READY_JS, timeout=OPEN_TIMEOUT_MS)
                assert page.evaluate("() => jupyterapp.name") == "Jupyter Notebook"
                page.evaluate("() => { jupyterapp.commands.execute('notebook:run-all-cells'); }")
                page.locator(LIVE_VIEW).nth(2).wait_for(timeout=RUN_ALL_TIMEOUT_MS)
                page.wait_for_function(RUN_ALL_DONE_JS, timeout=RUN_ALL_TIMEOUT_MS, polling=500)
            yield page, watch
        finally:
            context.close()
            notebook7.delete_sessions()


def _line_colours_near_the_start(page, view, query: int) -> list[list[float]]:
    """For each head colour of views.js: the rows (css px, from the top of the query's row) of
    the pixels 1 px right of where the query's lines start (x = 2) whose colour is nearest that head's.
    Pixels fainter than an eighth are left out (a hovered token's lines are at least 0.15
    opaque); so are blends far from every head's colour."""
    return view.evaluate(
        """(v, [q, row, colors]) => {
            const c = v.querySelector('canvas.av-lines');
            const scale = c.width / c.getBoundingClientRect().width;
            const x = Math.round(3 * scale), y0 = Math.round(q * row * scale);
            const h = Math.round(row * scale);
            const d = c.getContext('2d').getImageData(x, y0, 1, h).data;
            const rgb = colors.map(s => [1, 3, 5].map(i => parseInt(s.slice(i, i + 2), 16)));
            const found = colors.map(() => []);
            for (let i = 0; i < h; i++) {
                if (d[4 * i + 3] < 32) continue;
                const dist = rgb.map(([r, g, b]) =>
                    Math.hypot(d[4 * i] - r, d[4 * i + 1] - g, d[4 * i + 2] - b));
                const best = dist.indexOf(Math.min(...dist));
                if (dist[best] < 60) found[best].push(i / scale);
            }
            return found;
        }""",
        [query, ROW, HEAD_COLORS],
    )


def test_several_heads_lines_lie_side_by_side(ran):
    page, watch = ran
    with screenshot_on_failure(page, "notebook7-heads-side-by-side"):
        view = page.locator(f"{LIVE_VIEW}.av-token-view").first
        view.scroll_into_view_if_needed()
        assert view.get_attribute("data-heads") == "0,1,2,3"  # every head to start with
        view.locator(".av-query").nth(8).hover()
        page.wait_for_function(
            "v => v.querySelector('.av-detail').textContent.startsWith('query 8 ')",
            arg=view.element_handle(),
            timeout=10_000,
        )
        found = _line_colours_near_the_start(page, view, 8)
        rows = [sum(ys) / len(ys) if ys else None for ys in found]
        assert all(ys for ys in found), (
            "near the start of query 8's lines some head's colour is missing (lines drawn on top "
            f"of each other?): pixels per head {[len(ys) for ys in found]}"
        )
        assert rows == sorted(rows), f"the heads' lines are not in head order: {rows}"
        assert rows[-1] - rows[0] >= 4, f"the heads' lines are hardly apart: {rows}"
        watch.assert_clean()


def test_live_views_answer_hover_layer_and_head(ran):
    page, watch = ran
    with screenshot_on_failure(page, "notebook7-live-views"):
        check_live_views(page)
        watch.assert_clean()


def test_a_view_of_130_tokens_scrolls_and_answers_past_64(ran):
    page, watch = ran
    with screenshot_on_failure(page, "notebook7-long-view"):
        view = page.locator(f"{LIVE_VIEW}.av-token-view").filter(has_text="130 tokens")
        assert view.count() == 1, "the 130-token view is missing"
        assert view.locator(".av-query").count() == LONG and view.locator(".av-key").count() == LONG
        view.scroll_into_view_if_needed()
        wrap = view.locator(".av-tokens-wrap")
        box = view.bounding_box()
        scroll = wrap.evaluate("w => [w.scrollHeight, w.clientHeight]")
        print(f"130-token view: {box['width']:.0f} x {box['height']:.0f} px, token list {scroll[0]} "
              f"px in a {scroll[1]} px box")
        assert scroll[0] >= LONG * ROW and scroll[1] < scroll[0], "the token list does not scroll"
        assert box["height"] <= VIEWPORT["height"] * 0.9, f"the view is {box['height']:.0f} px tall"
        assert box["width"] <= VIEWPORT["width"], f"the view is {box['width']:.0f} px wide"

        for side, index in (("query", 100), ("key", 120)):
            view.locator(f".av-{side}").nth(index).hover()  # scrolls the token list to it
            page.wait_for_function(
                "([v, want]) => v.querySelector('.av-detail').textContent.startsWith(want)",
                arg=[view.element_handle(), f"{side} {index} "],
                timeout=10_000,
            )
            detail = view.locator(".av-detail").inner_text()
            assert re.search(r"head 3: .*@\d+ \d\.\d\d", detail), detail
        assert wrap.evaluate("w => w.scrollTop") > 0

        # pin query 110: the view redraws (the kernel is told) and keeps it in sight
        view.locator(".av-query").nth(110).click()
        page.wait_for_function(
            "v => v.querySelector('.av-status').textContent.includes('query 110 ')",
            arg=view.element_handle(),
            timeout=10_000,
        )
        page.mouse.move(5, 5)  # off the view: the pinned token stays shown
        token, frame = view.locator(".av-query").nth(110).bounding_box(), wrap.bounding_box()
        assert frame["y"] <= token["y"] and token["y"] + token["height"] <= frame["y"] + frame["height"], (
            "after the redraw the pinned token is out of sight: the scroll position was lost"
        )
        found = kernel_eval(
            page,
            "print(long_view.focus, f'{long_view.embedded_size()}')",
        )
        focus, size = found.rsplit(" ", 1)
        assert focus == "{'side': 'query', 'index': 110}", found
        # issue 15's budget: 200 kB for 2 x 4 x 64 x 64 weights, proportionally more for more
        budget = 200_000 * (LONG / 64) ** 2
        print(f"130-token view: {int(size) / 1000:.0f} kB in a saved notebook (budget "
              f"{budget / 1000:.0f} kB)")
        assert int(size) <= budget

        # a layer change redraws every line of 4 heads x 130 x 130: time it
        ms = view.evaluate(
            """async (v) => {
                const t = performance.now();
                const s = v.querySelector('select.av-layer');
                s.value = '1';
                s.dispatchEvent(new Event('change'));
                while (v.dataset.layer !== '1') await new Promise(r => setTimeout(r, 5));
                return performance.now() - t;
            }"""
        )
        print(f"130-token view: a layer change redrew in {ms:.0f} ms")
        assert ms < 5_000
        watch.assert_clean()
