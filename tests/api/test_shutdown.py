"""`conveyor api` stopped with SIGTERM while event streams and long-polls are open: each ends
cleanly at once (a stream's last chunk, a long-poll's 200 with the job as it is), instead of being
cancelled after uvicorn's graceful timeout with a bare 500, a cut stream and a logged traceback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx

from conveyor.api.keys import KeyStore
from conveyor.testing import free_port
from tests.api.sample_app import build_app
from tests.api.sse_parse import parse_sse
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


async def _until(chunks: AsyncIterator[str], text: str) -> str:
    """Read a stream's chunks until `text` has arrived; returns what was read."""
    seen = ""
    async for chunk in chunks:
        seen += chunk
        if text in seen:
            return seen
    raise AssertionError(f"the stream ended before {text!r}: {seen!r}")


async def test_sigterm_ends_open_streams_and_long_polls_at_once(redis_url: str, qname: str) -> None:
    app = build_app(redis_url, qname)
    store = KeyStore(app.client)
    token, info = await store.create("stopping", ["enqueue", "read-data"])
    headers = {"Authorization": f"Bearer {token}"}
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
        "REDIS_URL": redis_url,
        "API_TEST_QUEUE": qname,
        "CONVEYOR_API_SSE_KEEPALIVE_S": "60",  # nothing ends on its own while the test runs
        "CONVEYOR_API_MAX_WAITS_PER_KEY": "1",  # a second long-poll's 429 shows the first is being served
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 (started once; waited for in a thread)
        [str(Path(sys.executable).with_name("conveyor")), "api", "tests.api.sample_app:app", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=120) as http, AsyncExitStack() as stack:

            async def healthy() -> bool:
                try:
                    return (await http.get("/api/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(healthy, timeout=60, interval=0.1, what="API process up")
            made = await http.post(f"/api/queues/{qname}/jobs", json={"name": "sleepy"}, headers=headers)
            assert made.status_code == 202, made.text  # no worker: it stays waiting
            job_id = made.json()["id"]

            job_stream = await stack.enter_async_context(http.stream("GET", made.json()["events_url"], headers=headers))
            job_chunks = job_stream.aiter_text()
            head = await _until(job_chunks, "event: state")
            live = await stack.enter_async_context(
                http.stream("GET", "/api/events", params={"queue": qname}, headers=headers)
            )
            live_chunks = live.aiter_text()
            await _until(live_chunks, "event: ready")
            def long_poll() -> asyncio.Task[httpx.Response]:
                return asyncio.create_task(
                    http.get(f"/api/jobs/{qname}/{job_id}/wait", params={"timeout": 300}, headers=headers)
                )

            poll = long_poll()

            async def poll_is_served() -> bool:
                """A probe's 429 while the long-poll runs shows it holds the key's one slot (the two may
                race for it at first: a long-poll that lost is sent again)."""
                nonlocal poll
                r = await http.get(f"/api/jobs/{qname}/{job_id}/wait", params={"timeout": 0}, headers=headers)
                if poll.done():
                    assert poll.result().status_code == 429, poll.result().text
                    poll = long_poll()
                    return False
                return r.status_code == 429

            await wait_for(poll_is_served, timeout=60, interval=0.05, what="the long-poll holds its slot")

            proc.send_signal(signal.SIGTERM)
            rest = "".join([chunk async for chunk in job_chunks])  # ends normally, not cut mid-chunk
            events, _ = parse_sse(head + rest)
            assert [e.event for e in events] == ["state"] and events[0].data["state"] == "waiting"
            assert "event:" not in "".join([chunk async for chunk in live_chunks])
            answered = await poll
            assert answered.status_code == 200, answered.text
            assert (answered.json()["id"], answered.json()["state"]) == (job_id, "waiting")
        code = await asyncio.to_thread(proc.wait, 60)
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert code in (0, -signal.SIGTERM), output
        assert "graceful shutdown exceeded" not in output and "Traceback" not in output, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await store.revoke(info.id)
        await app.queue(qname).obliterate(force=True)
        await app.close()
