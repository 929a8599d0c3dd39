"""Document parser threads are bounded: parses that outlive their job (timed out, cancelled) still
count, a new parse waits for a free thread and is put back (RateLimited) when none frees, and each
parse left running is logged. Before, parses ran on the event loop's shared executor: each timed-out
job left its parse queued or running there, and a flood of them piled up behind each other."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fpdf import FPDF

from conveyor import Conveyor, JobState, RateLimited
from conveyor.errors import ConfigurationError, Unrecoverable
from conveyor.handlers import documents as documents_module
from conveyor.handlers import install
from conveyor.handlers.documents import DocumentReader, DocumentRequest, docx_text, pdf_text
from conveyor.handlers.parsers import THREAD_NAME, ParseAbandoned, ParserPool
from conveyor.handlers.ssrf import AllowList, SsrfGuard
from conveyor.service import WorkerService, plan_queues
from conveyor.service.health import HealthServer
from conveyor.settings import Settings
from conveyor.testing import free_port
from conveyor.worker.context import JobContext
from tests.conftest import running, wait_for
from tests.service.test_health_server import get
from tests.service.test_process import metric


def parser_threads() -> int:
    return sum(t.name.startswith(THREAD_NAME) for t in threading.enumerate())


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Parses that block until the test opens the gate (opened at the end whatever happens)."""
    event = threading.Event()
    yield event
    event.set()


def blocked(gate: threading.Event, value: str) -> str:
    if not gate.wait(60):
        raise AssertionError("the test never opened the gate")
    return value


async def abandon(pool: ParserPool, gate: threading.Event, count: int) -> None:
    """`count` parses whose jobs stop waiting (as a job's timeout cancels it) while they still run."""
    tasks = [asyncio.ensure_future(pool.run(blocked, gate, "late")) for _ in range(count)]
    await wait_for(lambda: pool.running == count, what=f"{count} parses running")
    for task in tasks:
        task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_parses_that_outlive_their_job_stay_bounded_and_visible(
    gate: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    await wait_for(lambda: parser_threads() == 0, what="parser threads of earlier tests ended")
    before = 0
    pool = ParserPool(2, wait_s=0.2)
    with caplog.at_level(logging.WARNING, logger="conveyor.handlers.parsers"):
        await abandon(pool, gate, 2)
        assert pool.running == 2 and pool.abandoned == 2
        assert "2 of 2 parser threads are still busy" in caplog.text
        for _ in range(20):  # a flood of new parses starts no thread while the old ones run
            with pytest.raises(RateLimited, match=r"all 2 document parsers are busy \(2 with documents of jobs"):
                await pool.run(blocked, gate, "new")
        assert parser_threads() - before == 2
    pool.wait_s = 60.0
    waiting = asyncio.ensure_future(pool.run(str.upper, "freed"))
    gate.set()
    assert await waiting == "FREED"  # a waiting parse takes the first thread that frees
    await wait_for(lambda: pool.running == 0 and pool.abandoned == 0, what="the abandoned parses ended")
    await wait_for(lambda: parser_threads() == before, what="the parser threads ended")


async def test_a_parse_that_fails_hands_its_error_to_the_job_and_frees_its_thread() -> None:
    pool = ParserPool(1)

    def broken() -> None:
        raise Unrecoverable("not a readable PDF")

    for _ in range(3):
        with pytest.raises(Unrecoverable, match="not a readable PDF"):
            await pool.run(broken)
    await wait_for(lambda: pool.running == 0, what="the parser thread freed")


def test_the_parser_count_is_checked() -> None:
    for bad in (0, 65):
        with pytest.raises(ConfigurationError, match="CONVEYOR_DOCUMENTS_PARSERS"):
            ParserPool(bad)


async def test_a_document_job_waits_for_a_parser_without_using_an_attempt(
    app: Conveyor, gate: threading.Event, tmp_path: Path
) -> None:
    """Through a worker: with every parser busy for jobs that ended, a document job goes back to the
    queue (delayed, no attempt used) and is read once a parser frees."""
    (tmp_path / "notes.md").write_bytes(b"# Cells\n\nThey *divide*.")
    pool = ParserPool(1, wait_s=0.2)
    reader = DocumentReader(
        SsrfGuard(AllowList.parse("")), root=str(tmp_path), max_bytes=100_000, max_chars=1000, parsers=pool
    )

    async def extract(ctx: JobContext, payload: DocumentRequest) -> str:
        return (await reader.read(payload)).text

    task = app.task(extract, queue="docs", name="docs.extract", attempts=1)
    await abandon(pool, gate, 1)
    job = await task.enqueue(DocumentRequest(path="notes.md"))
    queue = app.queue("docs")
    async with running(app.worker("docs", lease_ms=5000)):
        await wait_for(lambda: _state_is(queue, job.id, JobState.DELAYED), what="the job put back")
        assert parser_threads() >= 1 and pool.running == 1
        gate.set()
        assert await job.result(timeout=60) == "Cells\n\nThey divide."


async def _state_is(queue: object, job_id: str, state: JobState) -> bool:
    return await queue.get_state(job_id) == state  # type: ignore[attr-defined]


async def test_a_parse_whose_job_ended_is_told_to_stop(gate: threading.Event) -> None:
    pool = ParserPool(1)
    seen: list[bool] = []

    def parse(stop: threading.Event) -> None:
        gate.wait(60)
        seen.append(stop.is_set())

    stop = threading.Event()
    task = asyncio.ensure_future(pool.run(parse, stop, stop=stop))
    await wait_for(lambda: pool.running == 1, what="the parse running")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    await wait_for(lambda: seen == [True] and pool.running == 0, what="the parse saw its stop and ended")


def empty_pages(count: int) -> bytes:
    pdf = FPDF()
    for _ in range(count):
        pdf.add_page()
    return bytes(pdf.output())


def test_a_pdf_stops_at_the_next_page_once_told() -> None:
    """Pages without text never reach the text cut-off, so a PDF of thousands of them was read to its
    last page (about 2.5 ms of CPU a page: a 20 MiB file of minimal pages, minutes) after its job had
    ended; it now stops at the next page."""
    data = empty_pages(2000)
    stop = threading.Event()
    stop.set()
    with pytest.raises(ParseAbandoned, match="stopped after 0 of 2000 pages"):
        pdf_text(data, 1_000_000, stop)
    assert pdf_text(data, 1_000_000)[1:] == (2000, 2000)


def test_a_docx_stops_at_the_next_table_row_once_told() -> None:
    from tests.handlers.test_hostile_peers import docx_with_body, merged_table

    data = docx_with_body(merged_table(50, 2))
    stop = threading.Event()
    stop.set()
    with pytest.raises(ParseAbandoned, match="stopped in a table"):
        docx_text(data, 1_000_000, stop)
    assert docx_text(data, 1_000_000).startswith("c0 | c1")


@asynccontextmanager
async def serving(app: Conveyor, redis_url: str) -> AsyncIterator[int]:
    """A worker service for every queue of `app`, with its /health and /metrics server: the port."""
    app.use_redis(redis_url)
    settings = Settings(metrics_interval_s=0.1, heartbeat_s=0.5, stats_interval_s=0, lease_ms=3000)
    service = WorkerService(app, settings, plan_queues(app, None, {}))
    task = asyncio.create_task(service.run())
    server = HealthServer(service, "127.0.0.1", free_port())
    try:
        await wait_for(lambda: service.state == "running", timeout=30, what="service running")
        await server.start()
        yield server.bound_port
    finally:
        await server.close()
        service.request_stop()
        await asyncio.wait_for(task, 30)
        await app.close()


async def scrape(port: int) -> tuple[float, float]:
    """(running, abandoned) parser threads as the service's /metrics endpoint reports them."""
    status, body, _ = await asyncio.to_thread(get, port, "/metrics")
    assert status == 200, status
    text = body.decode()
    return metric(text, "conveyor_document_parsers_running"), metric(text, "conveyor_document_parsers_abandoned")


async def test_the_worker_service_exports_its_parser_threads_running_and_abandoned(
    redis_url: str, gate: threading.Event, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, nothing outside the log said how many parser threads were busy, nor how many with the
    documents of jobs that had ended: the worker's metrics had no such series."""
    (tmp_path / "a.md").write_bytes(b"# One")
    (tmp_path / "b.md").write_bytes(b"# Two")
    real_extract = documents_module.extract

    def slow_extract(*args: Any) -> Any:  # the real parse, once the test opens the gate
        if not gate.wait(60):
            raise AssertionError("the test never opened the gate")
        return real_extract(*args)

    monkeypatch.setattr(documents_module, "extract", slow_extract)
    app = Conveyor(prefix=f"prs{uuid.uuid4().hex[:10]}")
    handlers = install(app, documents=True, settings=Settings(documents_root=str(tmp_path), documents_parsers=3))
    assert handlers.documents is not None
    task = handlers.documents.task
    async with serving(app, redis_url) as port:
        queue = app.queue(task.queue_name)
        assert await scrape(port) == (0, 0)
        kept = await task.enqueue(DocumentRequest(path="a.md"))
        dropped = await task.enqueue(DocumentRequest(path="b.md"))

        async def both_parsing() -> bool:
            return await scrape(port) == (2, 0)

        await wait_for(both_parsing, timeout=60, what="two parses running in the metrics")
        await queue.cancel(dropped.id)  # its parse goes on without its job

        async def one_abandoned() -> bool:
            return await scrape(port) == (2, 1)

        await wait_for(one_abandoned, timeout=60, what="the cancelled job's parse counted as abandoned")
        assert await _state_is(queue, dropped.id, JobState.CANCELLED)
        gate.set()
        assert (await kept.result(timeout=60)).text == "One"

        async def all_ended() -> bool:
            return await scrape(port) == (0, 0)

        await wait_for(all_ended, timeout=60, what="the parser gauges back at 0")


async def test_a_worker_service_without_the_documents_handler_exports_its_parser_gauges_at_0(redis_url: str) -> None:
    app = Conveyor(prefix=f"prs{uuid.uuid4().hex[:10]}")

    async def noop(ctx: JobContext) -> None:
        return None

    app.task(noop, queue="plain", name="noop")
    async with serving(app, redis_url) as port:
        assert await scrape(port) == (0, 0)
