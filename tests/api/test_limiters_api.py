"""GET /api/limiters: named limiters with their state and recent usage; GET /api/limiters/{name}."""

from __future__ import annotations

import uuid

from conveyor.limits import Limiter, RateLimit, SharedLimiter
from tests.api.conftest import Api


async def test_limiters_list_state_and_recent_usage(api: Api) -> None:
    name = f"prov:{uuid.uuid4().hex[:8]}"
    lim = SharedLimiter(api.app.client, name, api.app.prefix)
    await lim.declare(Limiter(name, requests=RateLimit(60, per_s=60, burst=9), concurrency=4))
    try:
        assert (await lim.acquire("r1", 2, 100, 50, 10_000)).granted == 2
        await lim.confirm("r1", ["h1", "h2"], 10_000)
        await lim.release([("h1", 80, 20, "ok", 0)], 10_000)
        r = await api.http.get("/api/limiters", headers=api.auth("read"))
        assert r.status_code == 200, r.text
        mine = [entry for entry in r.json()["limiters"] if entry["name"] == name]
        assert len(mine) == 1
        state = mine[0]
        assert state["concurrency"] == {"limit": 4, "adaptive_limit": None, "held": 1}
        assert state["levels"]["requests"]["limit"] == 60
        assert state["totals"]["tokens_in"] == 80 and state["totals"]["ok"] == 1
        assert state["recent"][-1]["requests"] == 1 and state["recent"][-1]["tokens_out"] == 20
        one = await api.http.get(f"/api/limiters/{name}", headers=api.auth("read"))
        assert one.status_code == 200 and one.json()["name"] == name
        assert (await api.http.get("/api/limiters/no-such-limiter", headers=api.auth("read"))).status_code == 404
        assert (await api.http.get("/api/limiters/bad%20name", headers=api.auth("read"))).status_code == 404
        assert (await api.http.get("/api/limiters")).status_code == 401
    finally:
        await api.app.client.delete(*lim.keys.all, lim.keys.log)
        await api.app.client.srem(f"{api.app.prefix}:{{limiters}}:names", name)
