"""GET /api/jobs/{q}/{id}/events: event order, close on end, keep-alives, resume with Last-Event-ID.

In-process (ASGITransport) the body arrives when the stream closes; the subprocess test reads a
stream live over TCP.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.api.conftest import Api
from tests.api.sse_parse import parse_sse
from tests.conftest import wait_for


async def test_stream_shows_progress_and_logs_then_closes_on_completion(api: Api) -> None:
    job_id = await api.enqueue("stepper", {"steps": 3, "pause_s": 0.25})
    request = asyncio.create_task(
        api.http.get(f"/api/jobs/{api.queue}/{job_id}/events", headers=api.auth("reader"))
    )
    hub = api.asgi.state.conveyor_api.hub
    await wait_for(lambda: hub.followed() == {api.queue: 1} and hub.reading(api.queue), what="stream subscribed")
    await api.start_worker()  # only now: the stream sees the job from waiting to completed
    r = await request
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    body = r.text
    events, comments = parse_sse(body)
    kinds = [e.event for e in events]
    # The snapshot is read right after the subscription: on a busy machine the worker may have leased
    # the job by then, and the snapshot says so (the `active` event then precedes the subscription).
    assert kinds[0] == "state" and events[0].data["state"] in ("waiting", "active") and kinds[-1] == "completed"
    assert events[0].data["state"] == "active" or "active" in kinds
    progress = [e.data["progress"] for e in events if e.event == "progress"]
    assert progress[-1] == {"done": 3, "total": 3}
    assert [e.data["line"] for e in events if e.event == "log"][-1] == "step 3"
    assert all(e.data["job_id"] == job_id for e in events[1:])
    ids = [e.id for e in events]
    assert all(ids) and ids[1:] == sorted(ids[1:], key=lambda i: tuple(map(int, i.split("-"))))
    assert "keep-alive" in comments  # 0.75 s of work with a 0.2 s keep-alive interval


async def test_last_event_id_resumes_without_gaps(api: Api) -> None:
    job_id = await api.enqueue("stepper", {"steps": 4, "pause_s": 0.05})
    other = await api.enqueue("stepper", {"steps": 2})
    await api.start_worker()
    url = f"/api/jobs/{api.queue}/{job_id}/events"
    from_start = {**api.auth("reader"), "Last-Event-ID": "0-0"}  # the whole history of the job
    full, _ = parse_sse((await api.http.get(url, headers=from_start)).text)
    job_events = [e for e in full if e.event != "state"]
    assert [e.event for e in job_events][:2] == ["added", "active"] and job_events[-1].event == "completed"
    assert len(job_events) == 11  # added, active, 4 x (log + progress), completed
    for cut in (0, 3, len(job_events) - 2):
        r = await api.http.get(url, headers={**api.auth("reader"), "Last-Event-ID": job_events[cut].id or ""})
        rest, _ = parse_sse(r.text)
        assert [(e.id, e.event) for e in rest if e.event != "state"] == [
            (e.id, e.event) for e in job_events[cut + 1 :]
        ]
    assert all(e.data["job_id"] != other for e in full)


async def test_stream_of_a_finished_job_sends_its_state_and_closes(api: Api) -> None:
    job_id = await api.enqueue("echo", {"text": "x"})
    await api.http.delete(f"/api/jobs/{api.queue}/{job_id}", headers=api.auth())
    r = await api.http.get(f"/api/jobs/{api.queue}/{job_id}/events", headers=api.auth("read"))
    events, _ = parse_sse(r.text)
    assert [e.event for e in events] == ["state"]
    assert events[0].data["state"] == "cancelled" and events[0].data["data_hidden"] is True


async def test_log_lines_hidden_without_read_data(api: Api) -> None:
    job_id = await api.enqueue("stepper", {"steps": 1})
    await api.start_worker()
    r = await api.http.get(
        f"/api/jobs/{api.queue}/{job_id}/events", headers={**api.auth("read"), "Last-Event-ID": "0-0"}
    )
    events, _ = parse_sse(r.text)
    logs = [e for e in events if e.event == "log"]
    assert logs and all(e.data["line"] is None for e in logs)
    assert events[-1].event == "completed"


async def test_bad_last_event_id_is_422_and_unknown_job_404(api: Api) -> None:
    job_id = await api.enqueue("echo", {"text": "x"})
    url = f"/api/jobs/{api.queue}/{job_id}/events"
    r = await api.http.get(url, headers={**api.auth("read"), "Last-Event-ID": "yesterday"})
    assert r.status_code == 422
    r = await api.http.get(f"/api/jobs/{api.queue}/nope/events", headers=api.auth("read"))
    assert r.status_code == 404


async def test_stream_shows_retrying_and_ends_on_failed(api: Api) -> None:
    r = await api.http.post(
        f"/api/queues/{api.queue}/jobs",
        json={"name": "flaky", "options": {"attempts": 2, "backoff": 0}},
        headers=api.auth("enqueue"),
    )
    flaky = r.json()["id"]
    boom = await api.enqueue("boom")
    await api.start_worker()
    from_start = {**api.auth(), "Last-Event-ID": "0-0"}
    events, _ = parse_sse(
        (await api.http.get(f"/api/jobs/{api.queue}/{flaky}/events", headers=from_start)).text
    )
    kinds = [e.event for e in events]
    assert "retrying" in kinds and kinds[-1] == "completed"
    assert kinds.index("retrying") < len(kinds) - 1
    assert "first attempt fails" in next(e for e in events if e.event == "retrying").data["error"]
    events, _ = parse_sse(
        (await api.http.get(f"/api/jobs/{api.queue}/{boom}/events", headers=api.auth())).text
    )
    assert events[-1].event in ("failed", "state")
    final = events[-1].data
    assert final.get("state", "failed") == "failed"


async def test_stream_ends_with_final_state_when_the_end_event_was_trimmed(api: Api) -> None:
    job_id = await api.enqueue("echo", {"text": "x"})
    await api.start_worker()
    r = await api.http.get(f"/api/jobs/{api.queue}/{job_id}/wait?timeout=20", headers=api.auth())
    assert r.json()["state"] == "completed"
    q = api.app.queue(api.queue)
    mine = [e for e in await q.read_events("0-0") if e.job_id == job_id]
    added = next(e for e in mine if e.type == "added")
    completed = next(e for e in mine if e.type == "completed")
    await api.app.client.xdel(q.keys.events, completed.id)  # as if the capped stream trimmed it
    r = await api.http.get(
        f"/api/jobs/{api.queue}/{job_id}/events", headers={**api.auth(), "Last-Event-ID": added.id}
    )
    events, comments = parse_sse(r.text)
    assert "completed" not in [e.event for e in events]
    assert events[-1].event == "state" and events[-1].data["state"] == "completed"
    assert "keep-alive" in comments


async def test_streams_end_after_the_max_time_and_resuming_misses_nothing(api_factory: Any) -> None:
    """CONVEYOR_API_SSE_MAX_S: each stream ends after that long; reconnecting with Last-Event-ID gets
    every later event of the job, none twice, until it ends."""
    async with api_factory(api_sse_max_s=0.3) as api:
        job_id = await api.enqueue("stepper", {"steps": 8, "pause_s": 0.1})
        url = f"/api/jobs/{api.queue}/{job_id}/events"
        headers = {**api.auth("reader"), "Last-Event-ID": "0-0"}
        first = asyncio.create_task(api.http.get(url, headers=headers))
        hub = api.asgi.state.conveyor_api.hub
        await wait_for(lambda: hub.followed() == {api.queue: 1}, what="first stream subscribed")
        await api.start_worker()
        seen: list[Any] = []
        response = await first
        streams = 1
        while True:
            assert response.status_code == 200, response.text
            events = [e for e in parse_sse(response.text)[0] if e.event != "state"]
            seen += events
            if seen and seen[-1].event == "completed":
                break
            assert streams < 500, "the job never completed"
            headers["Last-Event-ID"] = seen[-1].id if seen else "0-0"
            response = await api.http.get(url, headers=headers)
            streams += 1
        assert streams >= 2  # 0.8 s of work outlasts one 0.3 s stream
        kinds = [e.event for e in seen]
        assert kinds[:2] == ["added", "active"] and kinds.count("log") == 8 and kinds.count("progress") == 8
        ids = [tuple(map(int, (e.id or "").split("-"))) for e in seen]
        assert ids == sorted(set(ids))  # no repeat, in order
