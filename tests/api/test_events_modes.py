"""SSE over a queue in `followed` and `none` events mode (docs/events.md): an open stream follows
the queue, so it sees the job's lifecycle; with no lifecycle events at all the stream still ends
with the job's final state (the record is re-checked on every keep-alive)."""

from __future__ import annotations

import asyncio

from tests.api.conftest import Api
from tests.api.sse_parse import parse_sse
from tests.conftest import wait_for


async def test_an_open_stream_follows_a_followed_queue(api: Api) -> None:
    queue = api.app.queue(api.queue)
    await queue.set_events_mode("followed")
    job_id = await api.enqueue("stepper", {"steps": 2, "pause_s": 0.05})
    request = asyncio.create_task(
        api.http.get(f"/api/jobs/{api.queue}/{job_id}/events", headers=api.auth("reader"))
    )
    await wait_for(lambda: queue.client.exists(queue.keys.follow), what="the stream marked the queue followed")
    await api.start_worker()
    events, _ = parse_sse((await request).text)
    kinds = [e.event for e in events]
    assert kinds[0] == "state" and kinds[-1] == "completed"
    assert "active" in kinds and kinds.count("progress") == 2 and kinds.count("log") == 2


async def test_a_stream_of_a_queue_without_lifecycle_events_ends_with_the_final_state(api: Api) -> None:
    queue = api.app.queue(api.queue)
    await queue.set_events_mode("none")
    job_id = await api.enqueue("stepper", {"steps": 1})
    request = asyncio.create_task(
        api.http.get(f"/api/jobs/{api.queue}/{job_id}/events", headers=api.auth("reader"))
    )
    await api.start_worker()
    events, _ = parse_sse((await request).text)
    assert events[0].event == "state" and events[0].data["state"] in ("waiting", "active", "completed")
    assert events[-1].event == "state" and events[-1].data["state"] == "completed"
    assert not [e for e in events if e.event in ("added", "active", "progress", "log")]
