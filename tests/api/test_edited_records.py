"""A job record edited by hand (or a count Lua wrote as `1e+23`) is shown as it reads: a count past
64 bits is the number it holds, in every answer. Before, the job's GET showed it but its event
stream broke off before the first frame (the frame's encoder refuses integers past 64 bits), and so
did a read of a job whose id ends like a route (`.../rep%2Fevents`): a logged unhandled error."""

from __future__ import annotations

import logging

import pytest

from tests.api.conftest import Api
from tests.api.sse_parse import parse_sse


@pytest.mark.parametrize("count", ["1e+30", "9" * 30, "-" + "9" * 30])
async def test_a_count_past_64_bits_is_shown_on_every_route(
    api: Api, count: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="conveyor.api")
    job_id = await api.enqueue("echo", {"text": "x"}, delay=3600, job_id="rep/events")
    await api.app.client.hset(f"cv:{{{api.queue}}}:job:{job_id}", mapping={"attempts": count})
    shown = (await api.http.get(f"/api/jobs/{api.queue}/rep%2Fevents", headers=api.auth())).json()
    expected = int(float(count)) if "e" in count else int(count)
    assert shown["attempts_made"] == expected and abs(expected) > 2**64
    await api.app.queue(api.queue).cancel(job_id)  # the stream then ends after its state frame
    r = await api.http.get(f"/api/jobs/{api.queue}/rep%2Fevents/events", headers=api.auth("reader"))
    assert r.status_code == 200
    events, _ = parse_sse(r.text)
    assert events and events[0].event == "state", r.text
    assert events[0].data["attempts_made"] == shown["attempts_made"] and events[0].data["state"] == "cancelled"
    assert not [rec for rec in caplog.records if "unhandled" in rec.getMessage()]


@pytest.mark.parametrize(("method", "suffix"), [("POST", "/retry"), ("POST", "/promote"), ("DELETE", "")])
async def test_an_action_on_a_record_edited_into_another_type_is_a_404(api: Api, method: str, suffix: str) -> None:
    """Before, retrying, promoting or cancelling a job whose record had been edited into a string
    answered 500 (redis's raw WRONGTYPE error); now it is a job that does not exist."""
    job_id = await api.enqueue("echo", {"text": "x"}, delay=3600)
    key = f"cv:{{{api.queue}}}:job:{job_id}"
    await api.app.client.zrem(f"cv:{{{api.queue}}}:delayed", job_id)
    await api.app.client.delete(key)
    await api.app.client.set(key, "not a hash")
    r = await api.http.request(method, f"/api/jobs/{api.queue}/{job_id}{suffix}", headers=api.auth())
    assert r.status_code == 404, r.text
    assert await api.app.client.get(key) == "not a hash"


async def test_a_queue_key_edited_into_another_type_is_a_500_naming_it(api: Api) -> None:
    """A queue's own key holding another Redis type is the server's data at fault, not the request:
    a 500 whose body names the key to repair (code spoiled_key). Before, a bare 'internal error'."""
    await api.enqueue("echo", {"text": "x"})
    events = f"cv:{{{api.queue}}}:events"
    await api.app.client.delete(events)
    await api.app.client.set(events, "not a stream")
    r = await api.http.post(f"/api/queues/{api.queue}/jobs", json={"name": "echo", "data": {"text": "y"}},
                            headers=api.auth("enqueue"))
    assert r.status_code == 500, r.text
    error = r.json()["error"]
    assert error["code"] == "spoiled_key" and events in error["message"], error
    await api.app.client.delete(events)


async def test_a_job_whose_state_field_holds_no_state_is_a_500_naming_it(api: Api) -> None:
    """A job record's `state` edited into something that is no state is the server's data at fault:
    every route reading the job answers 500 spoiled_key naming the job, as for a key of another type,
    and the listing shows it under the state of the set holding it (as the engine reads it). Before,
    reads answered 422 invalid_job, a client error, and an idempotent resend of its enqueue a bare
    500 internal error."""
    body = {"name": "echo", "data": {"text": "x"}}
    r = await api.http.post(f"/api/queues/{api.queue}/jobs", json=body,
                            headers={**api.auth("enqueue"), "Idempotency-Key": "edited-state"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    await api.app.client.hset(f"cv:{{{api.queue}}}:job:{job_id}", "state", "bogus")
    base = f"/api/jobs/{api.queue}/{job_id}"
    for path in (base, f"{base}/wait?timeout=0", f"{base}/events", f"/api/dashboard/find?id={job_id}"):
        r = await api.http.get(path, headers=api.auth())
        assert r.status_code == 500, (path, r.text)
        error = r.json()["error"]
        assert error["code"] == "spoiled_key" and job_id in error["message"] and "bogus" in error["message"], error
    r = await api.http.post(f"/api/queues/{api.queue}/jobs", json=body,
                            headers={**api.auth("enqueue"), "Idempotency-Key": "edited-state"})
    assert r.status_code == 500 and r.json()["error"]["code"] == "spoiled_key", r.text
    listed = await api.http.get(f"/api/queues/{api.queue}/jobs?state=waiting", headers=api.auth())
    assert listed.status_code == 200
    assert [(j["id"], j["state"]) for j in listed.json()["jobs"]] == [(job_id, "waiting")]
