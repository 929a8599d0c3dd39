"""GET /api/costs, /api/costs/settings, /api/costs/events, /api/budgets (read scope) and the changes
to prices, settings and budgets (admin scope): answers, scopes and bad input."""

from __future__ import annotations

import uuid

from conveyor.costs import CostLedger
from conveyor.limits.named import Usage
from tests.api.conftest import Api


async def test_costs_are_queryable_by_group_task_and_day(api: Api) -> None:
    tenant, model = f"t-{uuid.uuid4().hex[:8]}", f"m-{uuid.uuid4().hex[:8]}"
    ledger = CostLedger(api.app.client, api.app.prefix)
    r = await api.http.put(f"/api/costs/prices/{model}", json={"input_per_million": 2, "output_per_million": "8"},
                           headers=api.auth("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["prices"][model] == {"input_per_million": 2.0, "output_per_million": 8.0}
    await ledger.record(f"run-{tenant}-1", tenant, "ai.generate", Usage.of(1000, 100, model))
    await ledger.record(f"run-{tenant}-2", tenant, "summarise", Usage.of(500, 0, model))
    await ledger.record(f"run-{tenant}-3", tenant, "summarise", Usage.of(30, 10, model, estimated=True))

    r = await api.http.get("/api/costs", params={"group": tenant}, headers=api.auth("read"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["group"] == tenant and body["since"] <= body["until"]
    rows = {row["task"]: row for row in body["rows"]}
    assert rows["ai.generate"]["cost_nano"] == 1000 * 2000 + 100 * 8000
    assert rows["summarise"]["tokens_in"] == 530 and body["totals"]["runs"] == 3
    # The part that is an estimate, beside the existing fields.
    assert rows["summarise"]["tokens_estimated"] == 40 and rows["summarise"]["runs_estimated"] == 1
    assert rows["ai.generate"]["tokens_estimated"] == 0 and rows["ai.generate"]["runs_estimated"] == 0
    assert body["totals"]["tokens_estimated"] == 40 and body["groups"][0]["runs_estimated"] == 1
    r = await api.http.get("/api/costs", params={"group": tenant, "task": "summarise", "since": body["until"],
                                                 "until": body["until"]}, headers=api.auth("read"))
    assert [row["task"] for row in r.json()["rows"]] == ["summarise"]

    assert (await api.http.get("/api/costs")).status_code == 401
    assert (await api.http.get("/api/costs", headers=api.auth("enqueue"))).status_code == 403
    missing = await api.http.get("/api/costs", params={"group": f"nobody-{tenant}"}, headers=api.auth("read"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "tenant_not_found"
    for params in ({"since": "yesterday"}, {"since": "2026-01-05", "until": "2026-01-01"},
                   {"since": "2020-01-01", "until": "2026-01-01"}, {"group": "bad group!"}):
        bad = await api.http.get("/api/costs", params=params, headers=api.auth("read"))
        assert bad.status_code == 422, (params, bad.text)
    for body_in in ({"input_per_million": -1, "output_per_million": 0}, {"input_per_million": 1e9,
                                                                         "output_per_million": 0},
                    {"input_per_million": 1}):
        r = await api.http.put(f"/api/costs/prices/{model}", json=body_in, headers=api.auth("admin"))
        assert r.status_code == 422, r.text
    assert (await api.http.put(f"/api/costs/prices/{model}", json={"input_per_million": 1, "output_per_million": 1},
                               headers=api.auth("read"))).status_code == 403
    assert (await api.http.delete(f"/api/costs/prices/{model}", headers=api.auth("admin"))).status_code == 200
    assert (await api.http.delete(f"/api/costs/prices/{model}", headers=api.auth("admin"))).status_code == 404
    settings = await api.http.get("/api/costs/settings", headers=api.auth("read"))
    assert settings.status_code == 200 and model not in settings.json()["prices"]
    assert (await api.http.patch("/api/costs/settings", json={"currency": "dollars"},
                                 headers=api.auth("admin"))).status_code == 422


async def test_budgets_are_set_read_and_removed_through_the_api(api: Api) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    path = f"/api/budgets/{tenant}"
    assert (await api.http.put(path, json={"hard": 5}, headers=api.auth("read"))).status_code == 403
    for bad in ({"hard": -1}, {"soft": 5, "hard": 1}, {}, {"hard": 1, "period": "week"}, {"hard": 1e12},
                {"hard": 1, "on_hard": "ignore"}, {"hard": 1, "extra": 1}):
        r = await api.http.put(path, json=bad, headers=api.auth("admin"))
        assert r.status_code == 422, (bad, r.text)
    r = await api.http.put(path, json={"period": "month", "soft": "4.5", "hard": 5, "on_hard": "fail",
                                       "estimate": "0.01"}, headers=api.auth("admin"))
    assert r.status_code == 200, r.text
    state = r.json()
    assert state["group"] == tenant and state["period"] == "month" and state["hard"] == 5.0
    assert state["soft"] == 4.5 and state["on_hard"] == "fail" and state["status"] == "ok"
    assert state["spent"] == 0 and state["remaining"] == 5.0 and state["resets_in_ms"] > 0
    listed = await api.http.get("/api/budgets", headers=api.auth("read"))
    assert tenant in [b["group"] for b in listed.json()["budgets"]]
    assert (await api.http.get(path, headers=api.auth("read"))).json()["hard"] == 5.0
    events = await api.http.get("/api/costs/events", headers=api.auth("read"))
    assert events.status_code == 200 and isinstance(events.json()["events"], list)
    assert (await api.http.delete(path, headers=api.auth("admin"))).status_code == 200
    assert (await api.http.delete(path, headers=api.auth("admin"))).status_code == 404
    assert (await api.http.get(path, headers=api.auth("read"))).status_code == 404


async def test_a_day_before_1970_is_a_422_that_says_so(api: Api) -> None:
    """Usage is counted in days since 1970-01-01. Before, `until` in the first days of year 1 left no
    room for the default `since` (6 days earlier): a bare 500 and a logged trace; a range before 1970
    was a 422 whose message named nothing the caller sent."""
    for params in ({"until": "0001-01-01"}, {"until": "0001-01-03"}, {"since": "0001-01-01", "until": "0001-01-05"},
                   {"since": "1969-12-31", "until": "1970-01-02"}, {"until": "1969-12-31"}):
        r = await api.http.get("/api/costs", params=params, headers=api.auth("read"))
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"]["code"] == "invalid_input" and "1970-01-01" in r.json()["error"]["message"], r.text
    r = await api.http.get("/api/costs", params={"until": "1970-01-03"}, headers=api.auth("read"))
    assert r.status_code == 200 and r.json()["since"] == "1970-01-01", r.text


async def test_a_day_must_be_written_as_a_date(api: Api) -> None:
    """The document states `format: date`; before, a number was read as a Unix time (`until=864000`
    was 1970-01-11) and answered 200, a request outside the document accepted."""
    for params in ({"until": "0"}, {"until": "864000"}, {"since": "1700000000", "until": "2026-01-01"},
                   {"until": "2026-01-01T00:00:00"}, {"until": "20260101"}):
        r = await api.http.get("/api/costs", params=params, headers=api.auth("read"))
        assert r.status_code == 422, (params, r.text)
    days = {"since": "2026-01-01", "until": "2026-01-02"}
    r = await api.http.get("/api/costs", params=days, headers=api.auth("read"))
    assert r.status_code == 200 and r.json()["since"] == "2026-01-01", r.text
