"""Flashcards appear on the dashboard's job page while the AI handler is still generating them: a
headless Chromium sees the first card while the provider holds its stream (so the job is active),
then every card once the stream is released and the job completes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.testing import RedisServer
from tests.dashboard.conftest import START_TIMEOUT_S, UI_TIMEOUT_MS, DashboardServer, Ui, _read_first_line
from tests.dashboard.conftest import browser as browser  # the fixture

expect = pytest.importorskip("playwright.sync_api").expect
SERVER = Path(__file__).with_name("stream_server.py")


@pytest.fixture(scope="module")
def stream_server() -> Iterator[tuple[DashboardServer, str]]:
    with RedisServer() as redis_server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        proc = subprocess.Popen(
            [sys.executable, str(SERVER), redis_server.url, f"strm{uuid.uuid4().hex[:8]}"],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        try:
            info = json.loads(_read_first_line(proc, START_TIMEOUT_S))
            keys = dict(info["keys"])
            chat_url = keys.pop("__chat__")
            yield DashboardServer(f"http://127.0.0.1:{info['port']}", keys, proc), chat_url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_flashcards_appear_on_the_job_page_while_they_are_generated(
    browser: Any, stream_server: tuple[DashboardServer, str]
) -> None:
    server, chat_url = stream_server
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS * 3)
    expect.set_options(timeout=UI_TIMEOUT_MS * 3)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    ui = Ui(page, server, [], errors, [])
    try:
        ui.sign_in("admin")
        with server.http("enqueue") as c:
            r = c.post("/api/queues/ai/jobs", json={"name": "ai.flashcards", "data": {"content": "facts", "count": 6}})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
        ui.go(f"#/jobs/ai/{job_id}")
        cards = page.get_by_test_id("output-cards").locator("li")
        expect(cards).to_have_count(1)  # the first card, while the provider holds the rest
        expect(cards.first).to_contain_text("What is fact 0?")
        with server.http("admin") as c:
            job = c.get(f"/api/jobs/ai/{job_id}").json()
            assert job["state"] == "active" and job["result"] is None  # not finished: the text is partial
            out = c.get(f"/api/jobs/ai/{job_id}/output").json()
            assert 0 < out["bytes"] < len(json.dumps({"cards": [{"front": "x"}] * 6}))
        assert httpx.post(f"{chat_url}/release").status_code == 200
        expect(cards).to_have_count(6)
        expect(cards.last).to_contain_text("Fact 5 explained")
        expect(page.locator(".job-header")).to_contain_text("completed")
        assert errors == []
    finally:
        context.close()
