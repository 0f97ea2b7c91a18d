"""The reader's JupyterLab (make lab, scripts/lab/): each chapter listed once, no news prompt."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "scripts" / "lab"
NOTIFICATION = "@jupyterlab/apputils-extension:notification"


def lab_config_args() -> list[str]:
    """The arguments the Makefile's lab target gives `jupyter lab` (LAB_CONFIG)."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^LAB_CONFIG := ((?:.*\\\n)*.*)$", makefile, re.M)
    assert match, "the Makefile defines no LAB_CONFIG"
    assert "$(LAB_CONFIG)" in makefile.split("\nlab:", 1)[1].split("\n\n", 1)[0]
    text = match[1].replace("\\\n", " ").replace("$(CURDIR)", str(REPO))
    return shlex.split(text)


def test_the_file_browser_hides_the_md_twins_only():
    from jupyter_server.services.contents.filemanager import FileContentsManager

    config = json.loads((LAB / "jupyter_server_config.json").read_text(encoding="utf-8"))
    manager = FileContentsManager(root_dir=str(REPO), **config["ContentsManager"])
    listed = {item["name"] for item in manager.get("chapters")["content"]}
    notebooks = {p.name for p in (REPO / "chapters").glob("*.ipynb")}
    assert notebooks <= listed
    assert not {name for name in listed if name.endswith(".md")}
    solutions = {item["name"] for item in manager.get("chapters/solutions")["content"]}
    assert solutions == {p.name for p in (REPO / "chapters" / "solutions").glob("*.ipynb")}
    top = {item["name"] for item in manager.get("")["content"]}
    assert {"README.md", "CONTRIBUTING.md"} <= top
    # a hidden twin can still be opened (jupytext pairs through the same manager)
    assert manager.get("chapters/01_attention_as_a_soft_lookup.md", content=False)["type"] == "file"


def test_lab_serves_the_config_and_asks_no_news(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
    )
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.token=t",
    ]
    cmd += ["--ServerApp.ip=127.0.0.1", "--allow-root", *lab_config_args()]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def get(path):
            req = urllib.request.Request(base + path, headers={"Authorization": "token t"})
            with urllib.request.urlopen(req, timeout=10) as response:
                return json.loads(response.read())

        deadline = time.monotonic() + 90
        while True:
            try:
                listing = get("/api/contents/chapters")
                break
            except OSError:
                assert proc.poll() is None, "jupyter lab exited"
                assert time.monotonic() < deadline, "jupyter lab did not start"
                time.sleep(0.5)
        names = {item["name"] for item in listing["content"]}
        assert "01_attention_as_a_soft_lookup.ipynb" in names
        assert "01_attention_as_a_soft_lookup.md" not in names
        settings = get(f"/lab/api/settings/{NOTIFICATION}")
        assert settings["schema"]["properties"]["fetchNews"]["default"] == "false"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
