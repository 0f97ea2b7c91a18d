"""Shared pieces of the browser tests (test_book_site.py, test_lab_browser.py,
test_notebook_browser.py).

Debian's Chromium driven by playwright-python (Playwright cannot download its own browser here),
every request that is not to this machine blocked and counted, console errors and failed
requests collected, and a screenshot in test-artifacts/ when a check fails. A throwaway Jupyter
server (JupyterLab or Notebook 7) to open notebooks in, and the checks of a live attention view.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from _optional import missing, require_module

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
LOCAL_SCHEMES = {"data", "blob", "file", "about"}


def require_chromium() -> None:
    """Skip (with the reason) where the browser or playwright is missing; under CI, fail."""
    if not Path(CHROMIUM).is_file():
        missing(
            f"no Chromium at {CHROMIUM}: the browser tests need Debian's chromium "
            "(apt-get install chromium; .ci/run installs it) or CHROMIUM=/path/to/chrome"
        )
    require_module("playwright.sync_api", "playwright is not installed (pip install -e '.[dev]')")


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Chromium (playwright Browser) for the duration of the block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return True
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname in LOCAL_HOSTS


@dataclass
class Watch:
    """What a page did that it should not: blocked, failed requests and errors in its console."""

    ignore_console: tuple[str, ...] = ()
    #: patterns (re.search) of uncaught errors that are not the book's, matched against the
    #: error's message and stack, so that one can name the file that throws it
    ignore_uncaught: tuple[str, ...] = ()
    blocked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def attach(self, context) -> None:
        """Block every request that leaves this machine (and count it), on the whole context."""

        def route(r) -> None:
            if is_local(r.request.url):
                r.continue_()
            else:
                self.blocked.append(r.request.url)
                r.abort("blockedbyclient")

        context.route("**/*", route)
        context.on("page", self.watch_page)

    def watch_page(self, page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)
        page.on("requestfailed", self._on_request_failed)
        page.on(
            "response",
            lambda r: self.failed.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
        )

    def _on_page_error(self, exc) -> None:
        text = f"{exc.message}\n{exc.stack or ''}"
        if any(re.search(pattern, text) for pattern in self.ignore_uncaught):
            return
        self.errors.append(f"uncaught: {exc}")

    def _on_console(self, msg) -> None:
        if msg.type != "error":
            return
        text = msg.text
        if any(re.search(pattern, text) for pattern in self.ignore_console):
            return
        if text.startswith("Failed to load resource"):  # reported by the response handler
            return
        self.errors.append(f"console: {text}")

    def _on_request_failed(self, request) -> None:
        if not is_local(request.url):
            return  # blocked on purpose, counted in .blocked
        self.failed.append(f"{request.failure} {request.url}")

    def problems(self) -> list[str]:
        out = [f"blocked (not local): {u}" for u in self.blocked]
        out += [f"failed request: {f}" for f in self.failed]
        out += self.errors
        return out

    def assert_clean(self) -> None:
        problems = self.problems()
        assert not problems, "the page did not stay clean offline:\n  " + "\n  ".join(problems)


def artifact_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


@contextlib.contextmanager
def screenshot_on_failure(page, name: str) -> Iterator[None]:
    """Keep a full-page screenshot in test-artifacts/NAME.png when the block fails."""
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{artifact_name(name)}.png"
        with contextlib.suppress(Exception):
            page.screenshot(path=str(path), full_page=True, timeout=15_000)
            print(f"screenshot: {path}")
        raise


# --------------------------------------------------------------------------------------------------
# A throwaway Jupyter server: JupyterLab or Jupyter Notebook 7
# --------------------------------------------------------------------------------------------------

JUPYTER_TOKEN = "attention-zero-to-one-browser-test"

# Settings of the throwaway server (its user settings folder; Notebook 7 reads JupyterLab's
# plugins' settings too): nothing saved behind the test's back, no news toast or update check
# (they fetch from the web), every cell in the DOM.
JUPYTER_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

#: the server applications: module to run, its configurable class, what it needs besides
JUPYTER_APPS = {
    "jupyterlab": (
        "jupyterlab",
        "LabApp",
        {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"},
    ),
    "notebook": ("notebook", "JupyterNotebookApp", {}),
}


class JupyterServer:
    """JupyterLab (``app="jupyterlab"``) or Notebook 7 (``app="notebook"``) from this Python
    environment, on a free port with a fixed token, its own config, settings, workspaces and
    runtime folders under ``home``, serving ``root``. ``window.jupyterapp`` is exposed, so that
    a test can run the app's commands and reach the kernel."""

    def __init__(self, root: Path, home: Path, app: str = "jupyterlab") -> None:
        module, app_class, extra = JUPYTER_APPS[app]
        self.app = app
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config, settings = home / "config", home / "settings"
        for folder in (config, settings, home / "workspaces", home / "runtime"):
            folder.mkdir(parents=True, exist_ok=True)
        server_config = {
            app_class: {**extra, "expose_app_in_browser": True},  # window.jupyterapp
            "ServerApp": {"open_browser": False, "port_retries": 0},
        }
        (config / "jupyter_server_config.json").write_text(json.dumps(server_config))
        for rel, values in JUPYTER_SETTINGS.items():
            path = settings / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND",)}
        env.pop("TRANSFORMER_CORE_WIDGET_MODE", None)  # a reader's Jupyter: the explorers are live
        env.update(
            JUPYTER_CONFIG_DIR=str(config),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        )
        self.log = (home / f"{app}.log").open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                module,
                "--allow-root",
                "--ip=127.0.0.1",
                f"--port={self.port}",
                f"--IdentityProvider.token={JUPYTER_TOKEN}",
                f"--ServerApp.root_dir={root}",
                f"--{app_class}.user_settings_dir={settings}",
                f"--{app_class}.workspaces_dir={home / 'workspaces'}",
            ],
            env=env,
            cwd=root,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # a server that never answered must not outlive the test
            raise

    def api(self, method: str, path: str):
        req = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {JUPYTER_TOKEN}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def _wait_ready(self, timeout: float = 180) -> None:  # 2 s on a quiet machine
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.app} exited with {self.proc.returncode}:\n{self.logs()}")
            with contextlib.suppress(OSError):
                self.api("GET", "/api/status")
                return
            time.sleep(0.3)
        raise RuntimeError(f"{self.app} did not start in {timeout} s:\n{self.logs()}")

    def delete_sessions(self) -> None:
        """Kernels outlive the browser: end every session the server holds."""
        for session in self.api("GET", "/api/sessions") or []:
            self.api("DELETE", f"/api/sessions/{session['id']}")

    def logs(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.delete_sessions()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# The notebook panel of the page (JupyterLab's current widget, Notebook 7's only one), its file
# loaded and its kernel started and idle. (Polled: an `await sessionContext.ready` inside
# page.evaluate has no timeout of its own.)
NOTEBOOK_READY_JS = """() => {
    const panel = window.jupyterapp && jupyterapp.shell.currentWidget;
    const kernel = panel && panel.sessionContext
        && panel.sessionContext.session && panel.sessionContext.session.kernel;
    return panel && panel.context && panel.context.isReady
        && kernel && kernel.status === 'idle';
}"""

# Run-all has finished: every code cell numbered again and the kernel idle. (The kernel answers
# a widget's messages only between cells.)
RUN_ALL_DONE_JS = """() => {
    const panel = jupyterapp.shell.currentWidget;
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    return kernel && kernel.status === 'idle'
        && cells.every(c => c.model.executionCount !== null);
}"""


def kernel_eval(page, code: str) -> str:
    """Run `code` in the open notebook's kernel (not in a cell) and return what it printed."""
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


# --------------------------------------------------------------------------------------------------
# A live attention view (transformer_core.viz.TokenView / GridView) in JupyterLab or Notebook 7
# --------------------------------------------------------------------------------------------------

LIVE_VIEW = ".jp-OutputArea-output .attention-view"


def check_live_views(page) -> None:
    """The views this kernel drew: hover, a layer and a head change, the kernel told of both."""
    views = page.locator(LIVE_VIEW)
    assert views.count() >= 1, "the notebook shows no TokenView or GridView"
    token = page.locator(f"{LIVE_VIEW}.av-token-view").first
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
    found = kernel_eval(
        page,
        "from transformer_core.viz import TokenView as _TV\n"
        "from ipywidgets.widgets.widget import _instances as _wi\n"
        "print([(v.layer, v.heads) for v in list(_wi.values()) if isinstance(v, _TV)])",
    )
    want_layer = 1 if token.locator("select.av-layer option").count() > 1 else 0
    assert f"({want_layer}, [0])" in found, f"the kernel's TokenView did not follow: {found!r}"
    grids = page.locator(f"{LIVE_VIEW}.av-grid-view")
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
