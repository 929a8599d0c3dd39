"""Browser-test fixtures: the API + workers in a uvicorn subprocess, and headless Debian Chromium.

Chromium comes from Debian (`make test` installs it); Playwright only drives it, so no browser
download is ever attempted. Tests skip, saying why, only when Chromium cannot be found.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.testing import RedisServer

SERVER = Path(__file__).with_name("server.py")
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")  # not CONVEYOR_*: Settings rejects unknown ones
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
START_TIMEOUT_S = 120  # a cold start imports the whole API; on a machine at load 10+ that took over 30 s
UI_TIMEOUT_MS = 30_000  # generous: the machine may be busy with a second copy of the suite


@dataclass
class DashboardServer:
    base_url: str
    keys: dict[str, str]
    proc: subprocess.Popen[str]
    redis_url: str = ""
    prefix: str = ""

    def http(self, role: str = "admin") -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.keys[role]}"},
                            timeout=10)

    @property
    def dashboard_url(self) -> str:
        return f"{self.base_url}/dashboard/"


def _read_first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    box: list[str] = []
    reader = threading.Thread(
        target=lambda: box.append(proc.stdout.readline() if proc.stdout else ""), daemon=True
    )
    reader.start()
    reader.join(timeout)
    if not box or not box[0]:
        proc.kill()
        raise RuntimeError(f"dashboard test server did not start within {timeout}s (exit {proc.poll()})")
    return box[0]


@pytest.fixture(scope="session")
def dashboard_server() -> Iterator[DashboardServer]:
    """Its own Redis: the server's workers and registry beat keep talking to it between tests, which
    would disturb tests that count the shared server's commands."""
    with RedisServer() as redis_server:
        yield from _serve(redis_server)


def _serve(redis_server: RedisServer, script: Path = SERVER, mount_path: str = "") -> Iterator[DashboardServer]:
    """Run `script` (server.py, or mount_server.py serving the API under `mount_path`)."""
    prefix = f"dash{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    proc = subprocess.Popen([sys.executable, str(script), redis_server.url, prefix],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        info = json.loads(_read_first_line(proc, START_TIMEOUT_S))
        yield DashboardServer(f"http://127.0.0.1:{info['port']}{mount_path}", info["keys"], proc,
                              redis_server.url, prefix)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def chromium_path() -> str | None:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    return shutil.which("chromium")


@pytest.fixture
def browser() -> Iterator[Any]:
    """A fresh Chromium per test. Function scope on purpose: Playwright's sync API keeps an event
    loop running while it is started, which would break async tests that xdist schedules next in
    the same process; stopping it after each test leaves the process clean (~0.5 s per test)."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e '.[test]')")
    path = chromium_path()
    if path is None:
        pytest.skip(f"Chromium not found at {CHROMIUM}; `make test` installs Debian's chromium with apt-get")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Ui:
    """One browser tab plus what it saw: JS dialogs (alert/confirm), uncaught page errors and
    console errors (where Chromium reports Content-Security-Policy violations)."""

    page: Any
    server: DashboardServer
    dialogs: list[str]
    errors: list[str]
    console_errors: list[str]

    def csp_violations(self) -> list[str]:
        return [m for m in self.console_errors if "Content Security Policy" in m]

    def sign_in(self, role: str = "admin") -> None:
        self.page.goto(self.server.dashboard_url)
        self.page.get_by_label("API key").fill(self.server.keys[role])
        self.page.get_by_role("button", name="Sign in").click()
        self.page.get_by_test_id("identity").wait_for()

    def go(self, hash_route: str) -> None:
        self.page.evaluate("r => { location.hash = r; }", hash_route)


@pytest.fixture
def ui(browser: Any, dashboard_server: DashboardServer) -> Iterator[Ui]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    # expect() has its own 5 s default; the page polls every 2 s and the machine may be busy.
    from playwright.sync_api import expect

    expect.set_options(timeout=UI_TIMEOUT_MS)
    dialogs: list[str] = []
    errors: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    console_errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    yield Ui(page, dashboard_server, dialogs, errors, console_errors)
    context.close()
