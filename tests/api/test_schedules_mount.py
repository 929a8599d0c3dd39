"""The schedules room's router is served by the API under the API's keys and error bodies."""

from __future__ import annotations

import uuid

from tests.api.conftest import Api


async def test_schedules_routes_use_api_keys(api: Api) -> None:
    sid = f"api-{uuid.uuid4().hex[:8]}"
    url = f"/api/schedules/{sid}"
    body = {"task": "echo", "queue": api.queue, "data": {"text": "tick"}, "interval_s": 3600}
    assert (await api.http.put(url, json=body)).status_code == 401
    assert (await api.http.put(url, json=body, headers=api.auth("read"))).status_code == 403
    try:
        r = await api.http.put(url, json=body, headers=api.auth())
        assert r.status_code == 201, r.text
        listed = await api.http.get("/api/schedules", headers=api.auth("read"))
        assert sid in [s["id"] for s in listed.json()["schedules"]]
        bad = await api.http.put(url, json={**body, "cron": "not a cron"}, headers=api.auth())
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    finally:
        r = await api.http.delete(url, headers=api.auth())
    assert r.status_code == 204
    missing = await api.http.get(url, headers=api.auth("read"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
