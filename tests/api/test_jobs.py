"""Job read, long-poll, cancel, retry and promote, with their error statuses."""

from __future__ import annotations

from conveyor import JobState
from tests.api.conftest import Api
from tests.api.sse_parse import parse_sse
from tests.conftest import wait_for


async def test_wait_returns_when_the_job_ends(api: Api) -> None:
    job_id = await api.enqueue("stepper", {"steps": 2, "pause_s": 0.1})
    await api.start_worker()
    r = await api.http.get(
        f"/api/jobs/{api.queue}/{job_id}/wait", params={"timeout": 20}, headers=api.auth("reader")
    )
    assert r.status_code == 200
    assert r.json()["state"] == "completed" and r.json()["result"] == 2
    assert r.json()["progress"] == {"done": 2, "total": 2}


async def test_wait_times_out_with_the_current_state(api: Api) -> None:
    job_id = await api.enqueue("echo", {"text": "x"})
    r = await api.http.get(
        f"/api/jobs/{api.queue}/{job_id}/wait", params={"timeout": 0.3}, headers=api.auth("read")
    )
    assert r.status_code == 200 and r.json()["state"] == "waiting"
    r = await api.http.get(
        f"/api/jobs/{api.queue}/nope/wait", params={"timeout": 0.1}, headers=api.auth("read")
    )
    assert r.status_code == 404
    r = await api.http.get(
        f"/api/jobs/{api.queue}/{job_id}/wait", params={"timeout": -1}, headers=api.auth("read")
    )
    assert r.status_code == 422


async def test_read_unknown_job_or_queue_is_404(api: Api) -> None:
    assert (
        await api.http.get(f"/api/jobs/{api.queue}/12345678", headers=api.auth("read"))
    ).status_code == 404
    assert (await api.http.get("/api/jobs/other-q/1", headers=api.auth("read"))).status_code == 404


async def test_failed_job_shows_error_with_stack_and_can_be_retried(api: Api) -> None:
    job_id = await api.enqueue("boom")
    await api.start_worker()
    r = await api.http.get(f"/api/jobs/{api.queue}/{job_id}/wait", params={"timeout": 20}, headers=api.auth())
    job = r.json()
    assert job["state"] == "failed"
    assert job["error"]["type"] == "ValueError" and "boom goes" in job["error"]["message"]
    assert "stack" in job["error"] and "sample_app.py" in str(job["error"]["stack"])
    assert api.worker is not None
    await api.worker.close(1.0)
    api.worker = None
    r = await api.http.post(f"/api/jobs/{api.queue}/{job_id}/retry", headers=api.auth())
    assert r.status_code == 200 and r.json()["state"] == "waiting"
    assert (await api.job(job_id))["state"] == "waiting"
    # Sent again (its reply lost): the job is where the retry put it, so the same answer.
    r = await api.http.post(f"/api/jobs/{api.queue}/{job_id}/retry", headers=api.auth())
    assert r.status_code == 200 and r.json() == {"id": job_id, "queue": api.queue, "state": "waiting"}
    assert (await api.job(job_id))["state"] == "waiting"
    r = await api.http.post(f"/api/jobs/{api.queue}/nope/retry", headers=api.auth())
    assert r.status_code == 404


async def test_cancel_sent_again_gets_the_same_answer(api: Api) -> None:
    job_id = await api.enqueue("echo", {"text": "x"})
    r = await api.http.delete(f"/api/jobs/{api.queue}/{job_id}", headers=api.auth())
    assert r.status_code == 200 and r.json() == {"id": job_id, "queue": api.queue, "state": "cancelled"}
    assert (await api.job(job_id))["state"] == "cancelled"
    # The same request sent again after a lost reply: the job is cancelled, as it asked.
    again = await api.http.delete(f"/api/jobs/{api.queue}/{job_id}", headers=api.auth())
    assert again.status_code == 200 and again.json() == r.json()
    assert (await api.http.delete(f"/api/jobs/{api.queue}/nope", headers=api.auth())).status_code == 404


async def test_cancel_or_retry_of_a_job_in_another_state_stays_409(api: Api) -> None:
    """A real conflict: a completed job cannot be cancelled nor retried; a job that ran and was handed
    back to waiting was not put there by a retry."""
    done = await api.enqueue("echo", {"text": "x"})
    await api.start_worker()
    r = await api.http.get(f"/api/jobs/{api.queue}/{done}/wait", params={"timeout": 20}, headers=api.auth())
    assert r.json()["state"] == "completed"
    for method, path in (("DELETE", ""), ("POST", "/retry")):
        r = await api.http.request(method, f"/api/jobs/{api.queue}/{done}{path}", headers=api.auth())
        assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_state", r.text
    assert (await api.job(done))["state"] == "completed"


async def test_cancel_active_job_requests_cancellation(api: Api) -> None:
    job_id = await api.enqueue("sleepy")
    await api.start_worker(lease_ms=1500)

    async def active() -> bool:
        return (await api.job(job_id))["state"] == "active"

    await wait_for(active, what="job active")
    r = await api.http.delete(f"/api/jobs/{api.queue}/{job_id}", headers=api.auth())
    assert r.status_code == 200 and r.json()["state"] == "active"

    async def cancelled() -> bool:
        return (await api.job(job_id))["state"] == "cancelled"

    await wait_for(cancelled, timeout=15, what="active job cancelled")


async def test_promote_delayed_job(api: Api) -> None:
    r = await api.http.post(
        f"/api/queues/{api.queue}/jobs",
        json={"name": "echo", "data": {"text": "x"}, "options": {"delay": 3600}},
        headers=api.auth("enqueue"),
    )
    job_id = r.json()["id"]
    r = await api.http.post(f"/api/jobs/{api.queue}/{job_id}/promote", headers=api.auth())
    assert r.status_code == 200
    assert (await api.job(job_id))["state"] == "waiting"
    r = await api.http.post(f"/api/jobs/{api.queue}/{job_id}/promote", headers=api.auth())
    assert r.status_code == 409


async def test_job_ids_with_slashes_route_to_the_job(api: Api) -> None:
    r = await api.http.post(
        f"/api/queues/{api.queue}/jobs",
        json={"name": "echo", "data": {"text": "x"}, "options": {"job_id": "reports/2026/11"}},
        headers=api.auth("enqueue"),
    )
    assert r.status_code == 202
    assert r.json()["status_url"] == f"/api/jobs/{api.queue}/reports%2F2026%2F11"
    got = await api.http.get(r.json()["status_url"], headers=api.auth())
    assert got.status_code == 200 and got.json()["id"] == "reports/2026/11"
    waited = await api.http.get(r.json()["status_url"] + "/wait?timeout=0", headers=api.auth())
    assert waited.status_code == 200 and waited.json()["id"] == "reports/2026/11"
    r = await api.http.delete(f"/api/jobs/{api.queue}/reports/2026/11", headers=api.auth())
    assert r.status_code == 200 and r.json()["state"] == JobState.CANCELLED.value


async def test_an_event_stream_shows_the_stack_to_admin_keys_only(api: Api) -> None:
    """The docs show a failed job's stack to admin keys in every route. Before, the event stream's
    `state` frame withheld it from admin keys too (the long-poll and GET showed it)."""
    job_id = await api.enqueue("boom")
    await api.start_worker()
    r = await api.http.get(f"/api/jobs/{api.queue}/{job_id}/wait", params={"timeout": 20}, headers=api.auth())
    assert r.json()["state"] == "failed"
    for who, shown in (("admin", True), ("reader", False), ("read", False)):
        r = await api.http.get(f"/api/jobs/{api.queue}/{job_id}/events", headers=api.auth(who))
        (state,) = [e for e in parse_sse(r.text)[0] if e.event == "state"]
        assert state.data["error"]["type"] == "ValueError"
        assert ("stack" in state.data["error"]) is shown, (who, state.data["error"])


async def test_a_long_poll_asked_for_while_the_process_stops_is_a_503(api: Api) -> None:
    """The docs: once a process stops, a stream or long-poll asked for gets 503 with Retry-After, so
    the client asks another process. Before, a long-poll was answered 200 with the job as it was,
    as if it had waited, and a client polling in a loop spun on the stopping process."""
    job_id = await api.enqueue("echo", {"text": "x"}, delay=3600)
    api.asgi.state.conveyor_api.hub.drain()  # what SIGINT/SIGTERM do under `conveyor api`
    r = await api.http.get(f"/api/jobs/{api.queue}/{job_id}/wait", params={"timeout": 30}, headers=api.auth())
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert r.json()["error"]["code"] == "unavailable"
    r = await api.http.get(f"/api/jobs/{api.queue}/{job_id}", headers=api.auth())  # a plain read is served
    assert r.status_code == 200 and r.json()["state"] == "delayed"
