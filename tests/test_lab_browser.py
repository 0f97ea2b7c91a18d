"""The attention explorer and the attention views, live in JupyterLab: run the notebook, then
change the explorer's layer, head and query, and hover and switch the views.

Starts a throwaway JupyterLab from this Python environment (free port, fixed token, its own
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

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _browser import REPO, Watch, chromium, free_port, require_chromium, screenshot_on_failure

pytestmark = pytest.mark.browser

TOKEN = "attention-zero-to-one-browser-test"
TEST_NOTEBOOK = REPO / "tests" / "data" / "attention_explorer_lab.ipynb"

# Settings of the throwaway JupyterLab (user settings folder): nothing saved behind the test's
# back, no news toast or update check (they fetch from the web), every cell in the DOM.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
SERVER_CONFIG = {
    "LabApp": {
        "news_url": None,
        "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
        "expose_app_in_browser": True,  # window.jupyterapp, to run menu commands
    },
    "ServerApp": {"open_browser": False, "port_retries": 0},
}


# Chapter 10 is the chapter a reader opens to browse trained models' attention: run-all trains its
# models in the kernel and then shows live explorers. The small notebook in tests/data drives the
# explorer on an untrained GPT, seconds to run, so a failure there is the widget, not the chapter.
CHAPTER = REPO / "chapters" / "10_looking_inside.ipynb"
NOTEBOOKS = [TEST_NOTEBOOK, CHAPTER]

# Every wait is bounded, so a stuck kernel or page fails the test with a screenshot instead of
# stalling the suite. Running a chapter trains models: allow it a generous multiple of its minute.
OPEN_TIMEOUT_MS = 120_000
RUN_ALL_TIMEOUT_MS = 480_000


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class Lab:
    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config, settings = home / "config", home / "settings"
        for folder in (config, settings, home / "workspaces", home / "runtime"):
            folder.mkdir(parents=True, exist_ok=True)
        (config / "jupyter_server_config.json").write_text(json.dumps(SERVER_CONFIG))
        for rel, values in LAB_SETTINGS.items():
            path = settings / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND",)}
        env.pop("TRANSFORMER_CORE_WIDGET_MODE", None)  # a reader's Lab: the explorers are live
        env.update(
            JUPYTER_CONFIG_DIR=str(config),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        )
        self.log = (home / "lab.log").open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--allow-root",
                "--ip=127.0.0.1",
                f"--port={self.port}",
                f"--IdentityProvider.token={TOKEN}",
                f"--ServerApp.root_dir={root}",
                f"--LabApp.user_settings_dir={settings}",
                f"--LabApp.workspaces_dir={home / 'workspaces'}",
            ],
            env=env,
            cwd=root,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def api(self, method: str, path: str):
        req = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {TOKEN}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.logs()}")
            with contextlib.suppress(OSError):
                self.api("GET", "/api/status")
                return
            time.sleep(0.3)
        raise RuntimeError(f"JupyterLab did not start in {timeout} s:\n{self.logs()}")

    def delete_sessions(self) -> None:
        """Kernels outlive the browser: end every session the server holds."""
        for session in self.api("GET", "/api/sessions") or []:
            self.api("DELETE", f"/api/sessions/{session['id']}")

    def logs(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.delete_sessions()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_chromium()
    root = tmp_path_factory.mktemp("lab-root")
    for nb in NOTEBOOKS:
        dest = root / nb.relative_to(REPO)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(nb, dest)
    server = Lab(root, tmp_path_factory.mktemp("lab-home"))
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


VIEW = ".jp-OutputArea-output .attention-view"


def _kernel_eval(page, code: str) -> str:
    """Run `code` in the notebook's kernel (not in a cell) and return what it printed."""
    return page.evaluate(
        """async (code) => {
            const kernel = jupyterapp.shell.currentWidget.sessionContext.session.kernel;
            let text = "";
            const future = kernel.requestExecute({ code, store_history: false, silent: false });
            future.onIOPub = (msg) => {
                if (msg.header.msg_type === "stream") text += msg.content.text;
            };
            await future.done;
            return text;
        }""",
        code,
    )


def _check_live_views(page) -> None:
    """The views this kernel drew: hover, a layer and a head change, the kernel told of both."""
    views = page.locator(VIEW)
    assert views.count() >= 1, "the notebook shows no TokenView or GridView"
    token = page.locator(f"{VIEW}.av-token-view").first
    token.scroll_into_view_if_needed()
    token.locator(".av-query").nth(2).hover()
    page.wait_for_function(
        "v => v.querySelector('.av-detail').textContent.startsWith('query 2 ')",
        arg=token.element_handle(),
        timeout=10_000,
    )
    assert "head 0:" in token.locator(".av-detail").inner_text()
    if token.locator("select.av-layer option").count() > 1:
        token.locator("select.av-layer").select_option(index=1)
        page.wait_for_function("v => v.dataset.layer === '1'", arg=token.element_handle())
    token.locator(".av-head[data-head='0']").dblclick()  # only head 0
    page.wait_for_function("v => v.dataset.heads === '0'", arg=token.element_handle())
    # the kernel's side of the widget followed the reader's clicks
    found = _kernel_eval(
        page,
        "from transformer_core.viz import TokenView as _TV\n"
        "from ipywidgets.widgets.widget import _instances as _wi\n"
        "print([(v.layer, v.heads) for v in list(_wi.values()) if isinstance(v, _TV)])",
    )
    want_layer = 1 if token.locator("select.av-layer option").count() > 1 else 0
    assert f"({want_layer}, [0])" in found, f"the kernel's TokenView did not follow: {found!r}"
    grids = page.locator(f"{VIEW}.av-grid-view")
    if grids.count():
        grid = grids.first
        grid.scroll_into_view_if_needed()
        thumb = grid.locator(".av-cell canvas").first
        box = thumb.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.8)
        page.wait_for_function(
            "v => /→ key \\d+ .*: \\d\\.\\d+$/.test(v.querySelector('.av-status').textContent)",
            arg=grid.element_handle(),
            timeout=10_000,
        )


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_attention_explorer_live_in_jupyterlab(notebook: Path, lab: Lab, browser):
    lab.delete_sessions()
    rel = notebook.relative_to(REPO).as_posix()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    # Lab's own console chatter that is not a failure of the book: none expected so far.
    watch = Watch()
    watch.attach(context)
    page = context.new_page()
    try:
        with screenshot_on_failure(page, f"lab-{notebook.stem}"):
            page.goto(f"{lab.url}/lab/tree/{rel}?token={TOKEN}", wait_until="load")
            # The notebook panel, its file loaded and its kernel started and idle. (Polled: an
            # `await sessionContext.ready` inside page.evaluate has no timeout of its own.)
            page.wait_for_function(
                """() => {
                    const panel = window.jupyterapp && jupyterapp.shell.currentWidget;
                    const kernel = panel && panel.sessionContext
                        && panel.sessionContext.session && panel.sessionContext.session.kernel;
                    return panel && panel.context && panel.context.isReady
                        && kernel && kernel.status === 'idle';
                }""",
                timeout=OPEN_TIMEOUT_MS,
            )
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
            page.wait_for_function(
                """() => {
                    const panel = jupyterapp.shell.currentWidget;
                    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
                    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
                    return kernel && kernel.status === 'idle'
                        && cells.every(c => c.model.executionCount !== null);
                }""",
                timeout=RUN_ALL_TIMEOUT_MS,
                polling=500,
            )
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

            _check_live_views(page)

            watch.assert_clean()
    finally:
        context.close()
        lab.delete_sessions()
