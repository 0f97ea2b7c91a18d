"""The attention explorer and the attention views, live in JupyterLab: run the notebook, then
change the explorer's layer, head and query, and hover and switch the views.

Starts a throwaway JupyterLab (tests/_browser.py's JupyterServer: free port, fixed token, its own
config, settings and workspaces folders, autosave off, no news or update checks) on a
temporary copy of the notebooks, opens a notebook with an AttentionExplorer, runs it
(`runmenu:run-all`), and changes the explorer's layer, head and query row through its
controls: each time the marker text above the heatmap must change to the new choice, and the
heatmap image with it. Every request that leaves this machine is blocked and counted; console
errors fail the test. Screenshots of a failing run go to test-artifacts/.

Then the notebook's TokenView and GridView (anywidget), drawn by this kernel: hovering a token
writes its row of weights, a layer or head change in the view redraws it and reaches the kernel
(the change is read back from Python); hovering a grid thumbnail names query, key and weight.

The notebooks: tests/data/attention_explorer_lab.ipynb (a tiny untrained GPT) and chapter 10,
which trains its models and then opens explorers on them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from _browser import (
    JUPYTER_TOKEN,
    NOTEBOOK_READY_JS,
    REPO,
    RUN_ALL_DONE_JS,
    JupyterServer,
    Watch,
    check_live_views,
    chromium,
    require_chromium,
    screenshot_on_failure,
)

pytestmark = pytest.mark.browser

TEST_NOTEBOOK = REPO / "tests" / "data" / "attention_explorer_lab.ipynb"

# Chapter 10 is the chapter a reader opens to browse trained models' attention: run-all trains its
# models in the kernel and then shows live explorers. The small notebook in tests/data drives the
# explorer on an untrained GPT, seconds to run, so a failure there is the widget, not the chapter.
CHAPTER = REPO / "chapters" / "10_looking_inside.ipynb"
NOTEBOOKS = [TEST_NOTEBOOK, CHAPTER]

# Every wait is bounded, so a stuck kernel or page fails the test with a screenshot instead of
# stalling the suite. Running a chapter trains models: allow it a generous multiple of its minute.
OPEN_TIMEOUT_MS = 120_000
RUN_ALL_TIMEOUT_MS = 480_000


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_chromium()
    root = tmp_path_factory.mktemp("lab-root")
    for nb in NOTEBOOKS:
        dest = root / nb.relative_to(REPO)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(nb, dest)
    server = JupyterServer(root, tmp_path_factory.mktemp("lab-home"), app="jupyterlab")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(lab):
    with chromium() as b:
        yield b


# --------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------

MARKER = ".jp-OutputArea-output .tc-marker"


def _dropdown(output, label: str):
    """The <select> of the explorer's Dropdown labelled `label` (layer, head, query)."""
    box = output.locator(".widget-dropdown").filter(
        has=output.page.locator("label", has_text=re.compile(rf"^\s*{label}\s*$"))
    )
    return box.locator("select")


def _choose(page, output, label: str, index: int, expect: str) -> None:
    """Pick option `index` of a dropdown; wait for the marker to say `expect`; image changed."""
    marker = output.locator(".tc-marker")
    image = output.locator("img").first
    before_marker, before_src = marker.inner_text(), image.get_attribute("src")
    select = _dropdown(output, label)
    assert select.count() == 1, f"no '{label}' dropdown in the explorer"
    select.select_option(index=index)
    # The explorer sets the marker last, after the image: wait for the marker, not the image.
    # (Each redraw replaces the marker's element: look it up again inside the output.)
    page.wait_for_function(
        """([out, want]) => {
            const m = out.querySelector('.tc-marker');
            return m !== null && m.textContent.includes(want);
        }""",
        arg=[output.element_handle(), expect],
        timeout=30_000,
    )
    after_marker, after_src = marker.inner_text(), image.get_attribute("src")
    assert after_marker != before_marker
    assert after_src != before_src, (
        f"changing {label}: the marker changed ({before_marker!r} -> {after_marker!r}) "
        "but the heatmap image did not"
    )


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_attention_explorer_live_in_jupyterlab(notebook: Path, lab: JupyterServer, browser):
    lab.delete_sessions()
    rel = notebook.relative_to(REPO).as_posix()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    # Lab's own console chatter that is not a failure of the book: none expected so far.
    watch = Watch()
    watch.attach(context)
    page = context.new_page()
    try:
        with screenshot_on_failure(page, f"lab-{notebook.stem}"):
            page.goto(f"{lab.url}/lab/tree/{rel}?token={JUPYTER_TOKEN}", wait_until="load")
            # the notebook panel, its file loaded and its kernel started and idle
            page.wait_for_function(NOTEBOOK_READY_JS, timeout=OPEN_TIMEOUT_MS)
            # A committed chapter holds its outputs (explorers included): clear them, so that the
            # explorer found below is the one this kernel draws.
            page.evaluate("() => jupyterapp.commands.execute('editmenu:clear-all')")
            page.wait_for_function(
                "() => document.querySelectorAll('.jp-OutputArea-output').length === 0",
                timeout=OPEN_TIMEOUT_MS,
            )
            page.evaluate("() => { jupyterapp.commands.execute('runmenu:run-all'); }")
            marker = page.locator(MARKER).first
            marker.wait_for(timeout=RUN_ALL_TIMEOUT_MS)
            # The kernel answers the explorer's controls only between cells: wait until run-all has
            # finished (every code cell numbered again, the kernel idle) before touching them.
            page.wait_for_function(RUN_ALL_DONE_JS, timeout=RUN_ALL_TIMEOUT_MS, polling=500)
            output = page.locator(".jp-OutputArea-output").filter(has=page.locator(".tc-marker"))
            output = output.first
            output.scroll_into_view_if_needed()
            start = marker.inner_text()
            assert start.startswith("layer "), f"unexpected marker {start!r}"

            # layer -> the second layer, head -> the second head, query -> position 4
            # (an option's text has non-breaking spaces; its value is the label as written)
            layer_label = _dropdown(output, "layer").locator("option").nth(1).get_attribute("value")
            _choose(page, output, "layer", 1, layer_label)
            _choose(page, output, "head", 1, "head 1")
            query_label = _dropdown(output, "query").locator("option").nth(5).get_attribute("value")
            query_pos = query_label.split(":")[0]
            _choose(page, output, "query", 5, f"query {query_pos} ")
            final = output.locator(".tc-marker").inner_text()
            assert final.startswith(f"{layer_label} · head 1 · query {query_pos} "), final

            check_live_views(page)

            watch.assert_clean()
    finally:
        context.close()
        lab.delete_sessions()
