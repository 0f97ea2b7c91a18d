"""Shared pieces of the browser tests (test_book_site.py, test_lab_browser.py).

Debian's Chromium driven by playwright-python (Playwright cannot download its own browser here),
every request that is not to this machine blocked and counted, console errors and failed
requests collected, and a screenshot in test-artifacts/ when a check fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
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
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("requestfailed", self._on_request_failed)
        page.on(
            "response",
            lambda r: self.failed.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
        )

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
