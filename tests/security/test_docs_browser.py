"""Swagger UI at /docs and ReDoc at /redoc render the API in headless Chromium with every request to
another origin blocked (as on a machine with no network), and break no Content-Security-Policy rule."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.testing import RedisServer, free_port
from tests.dashboard.conftest import UI_TIMEOUT_MS, browser  # noqa: F401 - the Chromium fixture

ROOT = Path(__file__).resolve().parents[2]
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
# Parsing 1.5 MB of Swagger UI and rendering the whole API takes a while on a machine running two
# copies of the suite: a generous deadline, as for every wait.
RENDER_TIMEOUT_MS = UI_TIMEOUT_MS * 9


def _wait_until_serving(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2) as client:
        while True:
            try:
                client.get(f"{url}/docs")
                return
            except httpx.TransportError:
                if proc.poll() is not None:
                    raise RuntimeError(f"conveyor api exited with {proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    """`conveyor api` for the sample app as a real process, on a Redis of its own."""
    with RedisServer() as redis_server:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env.update({"REDIS_URL": redis_server.url, "API_TEST_QUEUE": "docs-browser"})
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("conveyor")), "api", "tests.api.sample_app:app", "--port", str(port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_serving(url, proc)
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize(("page", "marker"), [("/docs", ".opblock-summary"), ("/redoc", "h2")])
def test_docs_render_offline(browser: Any, api_url: str, page: str, marker: str) -> None:  # noqa: F811
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(RENDER_TIMEOUT_MS)
    elsewhere: list[str] = []
    console_errors: list[str] = []
    tab.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)

    def only_this_origin(route: Any) -> None:
        if route.request.url.startswith(api_url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    tab.route("**/*", only_this_origin)
    try:
        tab.goto(f"{api_url}{page}")
        tab.locator(marker, has_text="Enqueue a job").first.wait_for()
        assert elsewhere == [], f"{page} asked for files from another origin: {elsewhere}"
        # ReDoc's sidebar links a Redocly logo from its CDN: the page's policy blocks it, and nothing else.
        violations = [m for m in console_errors if "Content Security Policy" in m and REDOC_LOGO not in m]
        assert not violations, console_errors
    finally:
        context.close()
