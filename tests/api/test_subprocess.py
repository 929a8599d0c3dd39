"""`conveyor api` as a real process (uvicorn on a free port) with a worker: enqueue over TCP, follow
the job live over SSE, drop the connection and resume with Last-Event-ID, long-poll the result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.api.keys import KeyStore
from conveyor.testing import free_port
from tests.api.sample_app import build_app
from tests.api.sse_parse import SseEvent, parse_sse
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api_process(redis_url: str, qname: str) -> Iterator[str]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
        "REDIS_URL": redis_url,
        "API_TEST_QUEUE": qname,
        "CONVEYOR_API_SSE_KEEPALIVE_S": "0.3",
    }
    conveyor = str(Path(sys.executable).with_name("conveyor"))
    proc = subprocess.Popen(
        [conveyor, "api", "tests.api.sample_app:app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert code in (0, -signal.SIGTERM), output  # uvicorn re-raises SIGTERM after a clean shutdown
        assert "Traceback" not in output, output
        assert "Application shutdown complete" in output, output  # lifespan ran on SIGTERM


async def _events(response: httpx.Response, stop_after: str) -> AsyncIterator[SseEvent]:
    buffer = ""
    async for chunk in response.aiter_text():
        buffer += chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            for event in parse_sse(block + "\n\n")[0]:
                yield event
                if event.event == stop_after:
                    return


async def test_api_process_with_worker_streams_live_and_resumes(
    api_process: str, redis_url: str, qname: str
) -> None:
    app = build_app(redis_url, qname)
    store = KeyStore(app.client)
    token, info = await store.create("subprocess", ["enqueue", "read-data"])
    worker = app.worker(qname, lease_ms=3000, idle_block_s=1.0)
    await worker.start()
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=api_process, timeout=20) as http:

            async def healthy() -> bool:
                try:
                    return (await http.get("/api/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(healthy, timeout=30, interval=0.1, what="API process up")
            r = await http.post(
                f"/api/queues/{qname}/jobs",
                json={"name": "stepper", "data": {"steps": 4, "pause_s": 0.3}},
                headers={**headers, "Idempotency-Key": "sub-1"},
            )
            assert r.status_code == 202, r.text
            job_id, events_url = r.json()["id"], r.json()["events_url"]

            first: list[SseEvent] = []
            async with http.stream("GET", events_url, headers=headers) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                async for event in _events(stream, stop_after="progress"):
                    first.append(event)
            assert first[0].event == "state" and first[-1].event == "progress"
            assert first[-1].data["progress"]["done"] < 4  # seen live, before the job ended

            rest: list[SseEvent] = []
            last_id = first[-1].id or ""
            async with http.stream(
                "GET", events_url, headers={**headers, "Last-Event-ID": last_id}
            ) as stream:
                async for event in _events(stream, stop_after="completed"):
                    rest.append(event)
            assert rest[-1].event == "completed"

            def key(event_id: str) -> tuple[int, ...]:
                return tuple(int(p) for p in event_id.split("-"))

            snapshot = key(first[0].id or "")  # the state event's id: events before it are in the snapshot
            stored = [
                e
                for e in await app.queue(qname).read_events("0-0")
                if e.job_id == job_id and key(e.id) > snapshot
            ]
            got = [e.id for e in first[1:] + rest]
            assert got == [e.id for e in stored]  # no gap, no duplicate across the reconnect

            again = await http.post(
                f"/api/queues/{qname}/jobs",
                json={"name": "stepper", "data": {"steps": 4, "pause_s": 0.3}},
                headers={**headers, "Idempotency-Key": "sub-1"},
            )
            assert again.status_code == 200 and again.json()["id"] == job_id
            r = await http.get(f"/api/jobs/{qname}/{job_id}/wait", params={"timeout": 10}, headers=headers)
            assert r.status_code == 200 and r.json()["state"] == "completed" and r.json()["result"] == 4
    finally:
        await worker.close(2.0)
        await store.revoke(info.id)
        await app.queue(qname).obliterate(force=True)
        await app.close()
