"""Streamed output (JobContext.stream): kept with the job, bounded, one attempt's text, removed with
the job, read whole through GET /api/jobs/{q}/{id}/output and live through the job's SSE stream,
where a client that disconnects mid-stream and resumes with Last-Event-ID neither loses nor repeats
a chunk - also when the chunks it missed were trimmed from the capped events stream meanwhile.

The API is served by uvicorn over real TCP; the worker runs in the test's event loop, so a handler
can wait on the test's gates (asyncio events) between chunks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conveyor import Conveyor, JobContext
from conveyor.errors import LeaseLostError
from conveyor.events import EVENT_VALUE_BYTES
from conveyor.worker.context import MAX_OUTPUT_BYTES
from tests.api.conftest import api_settings
from tests.api.live import LiveApi, live_api
from tests.api.sse_parse import SseEvent, parse_sse
from tests.conftest import wait_for

# Output pieces, a progress value and a log line over the bytes an event carries (EVENT_VALUE_BYTES):
# each event then carries its size only (a log line its first bytes), the value is on the record.
MIXED_CHUNKS = ["small ", "é" * 3000, "tiny", "c" * 40_000, "end"]
BIG_PROGRESS = {"rows": ["x" * 100] * 200}
LONG_LINE = "ü" * 4000


class Gates:
    """Per-test gates a handler waits on between chunks (index -> event)."""

    def __init__(self) -> None:
        self.events: dict[int, asyncio.Event] = {}
        self.streamed = 0

    def gate(self, i: int) -> asyncio.Event:
        return self.events.setdefault(i, asyncio.Event())


def build(redis_url: str, queue: str, gates: Gates) -> Conveyor:
    app = Conveyor(redis_url)

    @app.task(queue=queue)
    async def words(ctx: JobContext, payload: dict[str, Any]) -> int:
        """Streams `n` chunks; before chunk i in `pause_at` waits for the test's gate i."""
        for i in range(payload["n"]):
            if i in payload.get("pause_at", []):
                await gates.gate(i).wait()
            await ctx.stream(f"w{i} ")
            gates.streamed = i + 1
        return int(payload["n"])

    @app.task(queue=queue)
    async def big(ctx: JobContext, payload: dict[str, Any]) -> list[bool]:
        return [await ctx.stream(letter * size) for letter, size in payload["chunks"]]

    @app.task(queue=queue)
    async def mixed(ctx: JobContext) -> str:
        """Values small and too large for an event: output pieces, a progress value, a log line."""
        await gates.gate(0).wait()
        for chunk in MIXED_CHUNKS:
            await ctx.stream(chunk)
        await ctx.progress(BIG_PROGRESS)
        await ctx.log(LONG_LINE)
        await gates.gate(1).wait()  # a progress event too large for the stream is read from the record
        await ctx.progress({"small": 1})
        return "ok"

    @app.task(queue=queue)
    async def twice(ctx: JobContext) -> str:
        await ctx.stream(f"attempt {ctx.attempt} says hello")
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "done"

    @app.task(queue=queue)
    def sync_words(ctx: JobContext, payload: dict[str, Any]) -> str:
        assert threading.current_thread() is not threading.main_thread()
        for i in range(payload["n"]):
            ctx.stream_sync(f"s{i}|")
        return "ok"

    return app


@pytest.fixture
async def live(redis_url: str, qname: str) -> AsyncIterator[tuple[LiveApi, Gates]]:
    gates = Gates()
    app = build(redis_url, qname, gates)
    worker = app.worker(qname, lease_ms=5000, idle_block_s=1.0, concurrency=4)
    await worker.start()
    try:
        async with live_api(app, api_settings(redis_url)) as api:
            yield api, gates
    finally:
        for event in gates.events.values():
            event.set()
        await worker.close(5.0)
        await app.queue(qname).obliterate(force=True)
        await app.close()


async def _enqueue(api: LiveApi, queue: str, name: str, data: Any = None, **options: Any) -> str:
    body: dict[str, Any] = {"name": name, "data": data}
    if options:
        body["options"] = options
    r = await api.http.post(f"/api/queues/{queue}/jobs", json=body, headers=api.auth("client"))
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def _output(api: LiveApi, queue: str, job_id: str, who: str = "reader") -> dict[str, Any]:
    r = await api.http.get(f"/api/jobs/{queue}/{job_id}/output", headers=api.auth(who))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _wait_done(api: LiveApi, queue: str, job_id: str) -> dict[str, Any]:
    r = await api.http.get(f"/api/jobs/{queue}/{job_id}/wait", params={"timeout": 60}, headers=api.auth("reader"))
    body: dict[str, Any] = r.json()
    assert body["state"] in ("completed", "failed", "cancelled"), body
    return body


async def test_output_is_kept_with_the_job_and_removed_with_it(live: tuple[LiveApi, Gates], qname: str) -> None:
    api, _ = live
    job_id = await _enqueue(api, qname, "words", {"n": 50})
    assert (await _wait_done(api, qname, job_id))["state"] == "completed"
    expected = "".join(f"w{i} " for i in range(50))
    out = await _output(api, qname, job_id)
    assert out == {
        "job_id": job_id, "queue": qname, "text": expected, "attempt": 1, "bytes": len(expected),
        "truncated": False, "max_bytes": MAX_OUTPUT_BYTES,
    }
    assert (await _output(api, qname, job_id, who="read"))["text"] is None  # no read-data scope
    queue = api.app.queue(qname)
    assert await queue.client.exists(queue.keys.output(job_id)) == 1
    await queue.remove(job_id)
    assert await queue.client.exists(queue.keys.output(job_id)) == 0
    r = await api.http.get(f"/api/jobs/{qname}/{job_id}/output", headers=api.auth("reader"))
    assert r.status_code == 404


async def test_output_follows_the_record_ttl_and_immediate_deletion(
    live: tuple[LiveApi, Gates], qname: str
) -> None:
    api, _ = live
    queue = api.app.queue(qname)
    gone = await _enqueue(api, qname, "words", {"n": 3}, result_ttl=0)
    kept = await _enqueue(api, qname, "words", {"n": 3}, result_ttl=3600)
    await wait_for(lambda: queue.get_state(kept), what="second job recorded")
    await _wait_done(api, qname, kept)
    await wait_for(lambda: _missing(queue, gone), what="first job deleted at once")
    assert await queue.client.exists(queue.keys.output(gone)) == 0
    ttl = await queue.client.pttl(queue.keys.output(kept))
    assert 0 < ttl <= 3600 * 1000  # expires with the record


async def _missing(queue: Any, job_id: str) -> bool:
    return await queue.get_job(job_id) is None


async def test_output_past_the_limit_is_dropped_and_marked_truncated(
    live: tuple[LiveApi, Gates], qname: str
) -> None:
    api, _ = live
    third = MAX_OUTPUT_BYTES // 3 + 10
    sizes = [("a", third), ("b", third), ("c", third), ("d", 1)]  # the third passes the limit; all after it dropped
    chunks = [letter * size for letter, size in sizes]
    job_id = await _enqueue(api, qname, "big", {"chunks": sizes})
    done = await _wait_done(api, qname, job_id)
    assert done["state"] == "completed" and done["result"] == [True, True, False, False]
    out = await _output(api, qname, job_id)
    assert out["truncated"] is True and out["text"] == chunks[0] + chunks[1] and out["bytes"] == 2 * third
    r = await api.http.get(
        f"/api/jobs/{qname}/{job_id}/events", headers={**api.auth("reader"), "Last-Event-ID": "0-0"}
    )
    outputs = [e.data for e in parse_sse(r.text)[0] if e.event == "output"]
    assert "".join(o["chunk"] for o in outputs) == chunks[0] + chunks[1]
    flags = [o["truncated"] for o in outputs]
    assert flags[-1] is True and not any(flags[:-1])
    assert max(len(o["chunk"].encode()) for o in outputs) <= 64 * 1024  # long chunks went in pieces


async def test_a_new_attempt_starts_the_output_again(live: tuple[LiveApi, Gates], qname: str) -> None:
    api, _ = live
    job_id = await _enqueue(api, qname, "twice", None, attempts=2, backoff={"type": "fixed", "delay": 0})
    assert (await _wait_done(api, qname, job_id))["state"] == "completed"
    out = await _output(api, qname, job_id)
    assert out["text"] == "attempt 2 says hello" and out["attempt"] == 2
    r = await api.http.get(
        f"/api/jobs/{qname}/{job_id}/events", headers={**api.auth("reader"), "Last-Event-ID": "0-0"}
    )
    outputs = [e.data for e in parse_sse(r.text)[0] if e.event == "output"]
    assert [(o["attempt"], o["offset"], o["chunk"]) for o in outputs] == [
        (1, 0, "attempt 1 says hello"), (2, 0, "attempt 2 says hello")
    ]


async def test_sync_handlers_stream_too(live: tuple[LiveApi, Gates], qname: str) -> None:
    api, _ = live
    job_id = await _enqueue(api, qname, "sync_words", {"n": 20})
    assert (await _wait_done(api, qname, job_id))["state"] == "completed"
    assert (await _output(api, qname, job_id))["text"] == "".join(f"s{i}|" for i in range(20))


async def test_stream_after_the_lease_is_gone_is_rejected(live: tuple[LiveApi, Gates], qname: str) -> None:
    api, _ = live
    queue = api.app.queue(qname)
    job_id = await _enqueue(api, qname, "words", {"n": 1})
    await _wait_done(api, qname, job_id)
    from conveyor.worker.context import JobContext as Ctx

    ctx = Ctx(queue.scripts, qname, "w", job_id, "not-the-token", 1, "words", None, {})
    with pytest.raises(LeaseLostError):
        await ctx.stream("late")
    assert (await _output(api, qname, job_id))["text"] == "w0 "


class Reader:
    """Reads one SSE connection live, one event at a time."""

    def __init__(self, api: LiveApi, queue: str, job_id: str, last_id: str | None) -> None:
        headers = api.auth("reader")
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        self.ctx = api.http.stream("GET", f"/api/jobs/{queue}/{job_id}/events", headers=headers)
        self.buffer = ""
        self.pending: list[SseEvent] = []

    async def __aenter__(self) -> Reader:
        self.response: httpx.Response = await self.ctx.__aenter__()
        assert self.response.status_code == 200
        self.chunks = self.response.aiter_text()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ctx.__aexit__(None, None, None)

    async def next(self) -> SseEvent:
        while not self.pending:
            self.buffer += await asyncio.wait_for(anext(self.chunks), 60)
            while "\n\n" in self.buffer:
                block, self.buffer = self.buffer.split("\n\n", 1)
                self.pending += parse_sse(block + "\n\n")[0]
        return self.pending.pop(0)


def _apply(text: str, event: SseEvent, attempt: int) -> tuple[str, int]:
    """A client's view: append a chunk at its offset; a new attempt starts again at offset 0."""
    data = event.data
    if data["attempt"] != attempt:
        assert data["offset"] == 0
        text, attempt = "", data["attempt"]
    assert data["offset"] == len(text.encode()), (data, len(text))  # no gap, no repeat
    return text + data["chunk"], attempt


@pytest.mark.parametrize("trim", [False, True], ids=["kept", "trimmed"])
async def test_sse_resume_mid_stream_loses_and_repeats_nothing(
    live: tuple[LiveApi, Gates], qname: str, trim: bool
) -> None:
    api, gates = live
    n = 300
    job_id = await _enqueue(api, qname, "words", {"n": n, "pause_at": [10, 200]})
    text, attempt, last_id = "", 0, None
    async with Reader(api, qname, job_id, None) as reader:
        assert (await reader.next()).event == "state"
        while len(text) < len("".join(f"w{i} " for i in range(7))):  # some chunks live, then drop
            event = await reader.next()
            last_id = event.id
            if event.event == "output":
                text, attempt = _apply(text, event, attempt)
    gates.gate(10).set()  # chunks 10..199 are written while the client is away
    await wait_for(lambda: gates.streamed == 200, what="chunks written while disconnected")
    queue = api.app.queue(qname)
    if trim:
        await queue.client.xtrim(queue.keys.events, maxlen=0)  # the capped stream dropped them
    assert last_id is not None and "." in last_id
    async with Reader(api, qname, job_id, last_id) as reader:
        gates.gate(200).set()
        while True:
            event = await reader.next()
            assert event.event != "state" or trim  # a resume starts with no snapshot
            if event.event == "output":
                text, attempt = _apply(text, event, attempt)
            if event.event in ("completed", "failed"):
                break
    assert text == "".join(f"w{i} " for i in range(n))
    assert (await _output(api, qname, job_id))["text"] == text


async def test_a_client_joining_mid_stream_gets_the_output_so_far_first(
    live: tuple[LiveApi, Gates], qname: str
) -> None:
    api, gates = live
    job_id = await _enqueue(api, qname, "words", {"n": 20, "pause_at": [5]})
    await wait_for(lambda: gates.streamed == 5, what="five chunks streamed")
    text, attempt = "", 0
    async with Reader(api, qname, job_id, None) as reader:
        first = await reader.next()
        assert first.event == "state" and first.data["state"] == "active"
        so_far = await reader.next()
        assert so_far.event == "output" and so_far.data["chunk"] == "w0 w1 w2 w3 w4 "
        text, attempt = _apply(text, so_far, attempt)
        gates.gate(5).set()
        while (event := await reader.next()).event != "completed":
            if event.event == "output":
                text, attempt = _apply(text, event, attempt)
    assert text == "".join(f"w{i} " for i in range(20))


async def test_output_on_standalone_and_cluster(queue: Any) -> None:
    from conveyor import Worker

    async def talk(ctx: JobContext, data: Any) -> str:
        for word in ("héllo ", "wörld"):
            assert await ctx.stream(word)
        return "ok"

    worker = Worker(queue, {"talk": talk}, concurrency=1, lease_ms=5000, idle_block_s=0.5)
    await worker.start()
    try:
        job = await queue.add("talk", {})
        assert await job.result(timeout=30) == "ok"
    finally:
        await worker.close(5.0)
    out = await queue.get_output(job.id)
    assert out is not None and out.text == "héllo wörld" and out.size == len("héllo wörld".encode())
    tail = await queue.get_output(job.id, len("héllo ".encode()))
    assert tail is not None and tail.text == "wörld"
    await queue.remove(job.id)
    assert await queue.get_output(job.id) is None
    assert await queue.client.exists(queue.keys.output(job.id)) == 0


async def test_output_chunks_are_withheld_without_read_data(live: tuple[LiveApi, Gates], qname: str) -> None:
    api, _ = live
    job_id = await _enqueue(api, qname, "words", {"n": 3})
    await _wait_done(api, qname, job_id)
    for url in (f"/api/jobs/{qname}/{job_id}/events", f"/api/jobs/{qname}/{job_id}/output"):
        r = await api.http.get(url, headers={**api.auth("read"), "Last-Event-ID": "0-0"})
        assert r.status_code == 200 and "w1" not in r.text, url
    r = await api.http.get(
        f"/api/jobs/{qname}/{job_id}/events", headers={**api.auth("read"), "Last-Event-ID": "0-0"}
    )
    outputs = [e.data for e in parse_sse(r.text)[0] if e.event == "output"]
    assert len(outputs) == 3 and all(o["chunk"] is None for o in outputs)


async def test_events_carry_values_up_to_a_bound_and_readers_get_them_whole(
    live: tuple[LiveApi, Gates], qname: str
) -> None:
    """Before, every output piece (up to 64 KiB), progress value (up to 64 KiB) and log line went into
    the events stream whole, which is capped by count only: 100,000 entries could hold gigabytes. Now
    an event carries at most EVENT_VALUE_BYTES of a value; the SSE client still gets every byte of the
    output and the whole progress value (read back from the record: the latest one, as a progress
    value is; the handler waits here until the client has it, to know which one it gets)."""
    api, gates = live
    job_id = await _enqueue(api, qname, "mixed")
    text, attempt, progress = "", 0, []
    async with Reader(api, qname, job_id, None) as reader:
        assert (await reader.next()).event == "state"
        gates.gate(0).set()
        while (event := await reader.next()).event != "completed":
            if event.event == "output":
                text, attempt = _apply(text, event, attempt)
            elif event.event == "progress":
                progress.append(event.data["progress"])
                gates.gate(1).set()
    assert text == "".join(MIXED_CHUNKS)
    assert progress == [BIG_PROGRESS, {"small": 1}]
    queue = api.app.queue(qname)
    entries = await queue.client.xrange(queue.keys.events)
    sizes = [sum(len(str(k).encode()) + len(str(v).encode()) for k, v in fields.items()) for _, fields in entries]
    assert max(sizes) <= EVENT_VALUE_BYTES + 200, max(sizes)
    logs = [fields for _, fields in entries if fields.get("ev") == "log"]
    assert len(logs) == 1 and logs[0]["size"] == str(len(LONG_LINE.encode()))
    assert LONG_LINE.startswith(logs[0]["line"]) and len(logs[0]["line"]) == EVENT_VALUE_BYTES // 2
    assert await queue.client.lrange(queue.keys.log(job_id), 0, -1) == [LONG_LINE]
    assert (await queue.get_job(job_id)).progress == {"small": 1}  # type: ignore[union-attr]
