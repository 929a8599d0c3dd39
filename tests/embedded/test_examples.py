"""The example app's tasks do real work: run each through a real worker on a real server, with a real
local HTTP server for the fetch task."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conveyor import JobState, PayloadValidationError, Queue, Worker, examples
from conveyor.examples import app, csv_report_task, echo_task, fetch_url_task, render_markdown_task
from conveyor.handlers.ssrf import AllowList, SsrfGuard
from conveyor.redis.connection import RedisClient, connect
from tests.conftest import running

PAGE = b"<html><head><title> Hello   Conveyor </title></head><body>" + b"x" * 5000 + b"</body></html>"


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/page")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.send_header("X-Secret-Header", "not shown")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
async def rclient(redis_url: str) -> AsyncIterator[RedisClient]:
    c = connect(redis_url)
    yield c
    await c.aclose()


async def run_task(client: RedisClient, qname: str, task: Any, payload: Any) -> Any:
    """Enqueue the task's validated payload on a private queue and run it with a real worker."""
    queue = Queue(qname, redis=client)
    try:
        job = await queue.add(task.name, task.validate(payload))
        async with running(Worker(queue, {task.name: task.handler}, concurrency=2)):
            return await job.result(timeout=30)
    finally:
        await queue.obliterate(force=True)


def test_example_app_declares_its_queues() -> None:
    assert set(app.queue_configs) == {
        "default", "web", "docs", "reports", "ai", "webhooks", "email", "documents", "examples", "questions"
    }
    assert app.get_task("default", "echo") is echo_task


async def test_echo_returns_its_data(rclient: RedisClient, qname: str) -> None:
    data = {"ping": [1, 2, {"three": None}]}
    assert await run_task(rclient, qname, echo_task, data) == data


async def test_fetch_url_summarises_size_and_headers(
    rclient: RedisClient, qname: str, http_site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The task goes through the SSRF guard, which refuses loopback unless allow-listed.
    monkeypatch.setattr(examples.handlers, "guard", SsrfGuard(AllowList.parse("127.0.0.1")))
    result = await run_task(rclient, qname, fetch_url_task, {"url": f"{http_site}/moved"})
    assert result["status"] == 200 and result["bytes"] == len(PAGE) and not result["truncated"]
    assert result["final_url"] == f"{http_site}/page"
    assert result["title"] == "Hello Conveyor"
    assert result["headers"]["content-type"].startswith("text/html")
    assert "x-secret-header" not in result["headers"]


def test_fetch_url_rejects_non_http_urls() -> None:
    with pytest.raises(PayloadValidationError):
        fetch_url_task.validate({"url": "file:///etc/passwd"})
    with pytest.raises(PayloadValidationError):
        fetch_url_task.validate({"url": "http://example.com", "timeout_s": 600})


async def test_render_markdown(rclient: RedisClient, qname: str) -> None:
    doc = ("# Title\n\nSome *text* and <script>alert(1)</script>.\n\n"
           "## Part two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    result = await run_task(rclient, qname, render_markdown_task, {"markdown": doc})
    assert result["headings"] == ["Title", "Part two"]
    assert "<h1>Title</h1>" in result["html"] and "<em>text</em>" in result["html"]
    assert "<table>" in result["html"]
    assert "<script>" not in result["html"]  # raw HTML is escaped


async def test_csv_report(rclient: RedisClient, qname: str) -> None:
    text = "city,temp,rain\nOslo,4,12.5\nRome,18,3\nOslo,6,\nLima,20,0.5\n"
    result = await run_task(rclient, qname, csv_report_task, {"csv": text})
    assert result["rows"] == 4 and result["columns"] == ["city", "temp", "rain"]
    assert result["text"] == {"city": 3}
    assert result["numeric"]["temp"] == {"count": 4, "mean": 12.0, "median": 12.0, "min": 4.0, "max": 20.0,
                                         "stdev": pytest.approx((200 / 3) ** 0.5)}
    assert result["numeric"]["rain"]["count"] == 3


async def test_csv_report_of_empty_text_fails_without_retrying(rclient: RedisClient, qname: str) -> None:
    queue = Queue(qname, redis=rclient)
    try:
        job = await queue.add("csv_report", {"csv": ""}, attempts=3)
        async with running(Worker(queue, {"csv_report": csv_report_task.handler})):
            record = await job.wait(timeout=20)
        assert record.state is JobState.FAILED and record.attempts_made == 1
        assert "header row" in (record.error or {}).get("message", "")
    finally:
        await queue.obliterate(force=True)
