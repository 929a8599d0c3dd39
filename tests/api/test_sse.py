"""GET /api/jobs/{q}/{id}/events: event order, close on end, keep-alives, resume with Last-Event-ID.

In-process (ASGITransport) the body arrives when the stream closes; the subprocess test reads a
stream live over TCP.
"""

from __future__ import annotations

from tests.api.conftest import Api
from tests.api.sse_parse import parse_sse


async def test_stream_shows_progress_and_logs_then_closes_on_completion(api: Api) -> None:
    job_id = await api.enqueue("stepper", {"steps": 3, "pause_s": 0.25})
    await api.start_worker()
    r = await api.http.get(f"/api/jobs/{api.queue}/{job_id}/events", headers=api.auth("reader"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events, comments = parse_sse(r.text)
    kinds = [e.event for e in events]
    assert kinds[0] == "state" and kinds[-1] == "completed"
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
    full, _ = parse_sse((await api.http.get(url, headers=api.auth("reader"))).text)
    job_events = [e for e in full if e.event != "state"]
    assert len(job_events) >= 9  # active, 4 x (log + progress), completed
    for cut in (0, 3, len(job_events) - 2):
        r = await api.http.get(url, headers={**api.auth("reader"), "Last-Event-ID": job_events[cut].id or ""})
        rest, _ = parse_sse(r.text)
        assert [(e.id, e.event) for e in rest if e.event != "state"] == [
            (e.id, e.event) for e in job_events[cut + 1 :]
        ]
    assert all(e.data["job_id"] != other for e in full[1:])


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
    r = await api.http.get(f"/api/jobs/{api.queue}/{job_id}/events", headers=api.auth("read"))
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
    events, _ = parse_sse(
        (await api.http.get(f"/api/jobs/{api.queue}/{flaky}/events", headers=api.auth())).text
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
