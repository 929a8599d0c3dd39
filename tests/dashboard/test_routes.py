"""The dashboard's HTTP side without a browser: static files and their headers, and the
/api/dashboard endpoints, in-process against a real Redis and a real Worker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conveyor import Conveyor, JobContext
from conveyor.api import create_app
from conveyor.api.keys import KeyStore
from conveyor.settings import Settings
from tests.conftest import running, wait_for


@dataclass
class Env:
    app: Conveyor
    http: httpx.AsyncClient
    keys: dict[str, str]

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@pytest.fixture
async def env(redis_url: str) -> AsyncIterator[Env]:
    app = Conveyor(redis_url, prefix=f"dr{uuid.uuid4().hex[:8]}")
    runs: dict[str, int] = {}

    @app.task(queue="q")
    async def work(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        await ctx.log(f"run of {ctx.job_id}")
        runs[ctx.job_id] = runs.get(ctx.job_id, 0) + 1
        if payload.get("fail_first") and runs[ctx.job_id] == 1:
            raise RuntimeError("first run fails")
        return payload

    store = KeyStore(app.client, app.prefix)
    keys = {
        "admin": (await store.create("a", ["admin"]))[0],
        "read": (await store.create("r", ["read"]))[0],
        "enqueue": (await store.create("e", ["enqueue"]))[0],
    }
    api = create_app(app, Settings.from_env({}, redis_url=redis_url, api_rate_limit=0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test") as http:
        yield Env(app, http, keys)
    await app.close()


async def test_static_files_carry_a_strict_csp(env: Env) -> None:
    r = await env.http.get("/dashboard/")
    assert r.status_code == 200
    assert '<script type="module" src="js/main.js">' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    js = await env.http.get("/dashboard/js/main.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.headers["content-security-policy"] == csp
    redirect = await env.http.get("/dashboard")
    assert redirect.status_code in (307, 308) and redirect.headers["location"].endswith("/dashboard/")


async def test_no_inline_script_or_html_injection_in_the_assets(env: Env) -> None:
    """The UI builds every node with DOM calls; innerHTML and friends never appear."""
    from conveyor.dashboard import STATIC_DIR

    sources = [p.read_text() for p in STATIC_DIR.rglob("*.js")]
    assert len(sources) >= 10
    for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert not any(bad in s for s in sources), bad
    html = (STATIC_DIR / "index.html").read_text()
    body = html.replace("\n", " ").split("<body>")[1].split("</body>")[0]
    assert "<script>" not in html and " on" not in body


async def test_me_reports_scopes_and_needs_a_key(env: Env) -> None:
    assert (await env.http.get("/api/dashboard/me")).status_code == 401
    assert (await env.http.get("/api/dashboard/me", headers=env.auth("enqueue"))).status_code == 403
    me = (await env.http.get("/api/dashboard/me", headers=env.auth("read"))).json()
    assert me["name"] == "r" and me["scopes"] == ["read"]
    admin = (await env.http.get("/api/dashboard/me", headers=env.auth("admin"))).json()
    assert "admin" in admin["scopes"]


async def test_stats_search_details_and_remove(env: Env) -> None:
    q = env.app.queue("q")
    task = env.app.get_task("q", "work")
    assert task is not None
    ok = [await task.enqueue({"i": i}, group="g1" if i % 2 else None) for i in range(4)]
    flaky = await q.add("work", {"fail_first": True})
    async with running(env.app.worker("q", lease_ms=2000)):
        await wait_for(lambda: _is(flaky, "failed"), what="flaky failed")
        await q.retry(flaky.id)
        await wait_for(lambda: _is(flaky, "completed"), what="flaky completed")
        for job in ok:
            await wait_for(lambda j=job: _is(j, "completed"), what="job completed")

    stats = (await env.http.get("/api/dashboard/stats", headers=env.auth("read"))).json()
    series = stats["queues"]["q"]
    assert len(series["completed"]) == stats["buckets"] == 60
    assert sum(series["completed"]) == 5 and sum(series["failed"]) == 0  # the failed one was retried
    assert series["oldest_waiting_ms"] is None

    search = "/api/dashboard/queues/q/jobs"
    found = (await env.http.get(search, params={"state": "completed", "group": "g1"},
                                headers=env.auth("read"))).json()
    assert sorted(j["id"] for j in found["jobs"]) == sorted(j.id for j in ok[1::2])
    assert all(j["data"] is None and j["data_hidden"] for j in found["jobs"])  # no read-data scope
    page = (await env.http.get(search, params={"state": "completed", "name": "WOR", "limit": 3},
                               headers=env.auth("admin"))).json()
    assert len(page["jobs"]) == 3 and page["next_cursor"] == 3
    rest = (await env.http.get(search, params={"state": "completed", "name": "wor", "cursor": 3},
                               headers=env.auth("admin"))).json()
    assert len(rest["jobs"]) == 2 and rest["next_cursor"] is None
    none = await env.http.get(search, params={"state": "completed", "name": "nope"}, headers=env.auth("read"))
    assert none.json() == {"jobs": [], "next_cursor": None}

    url = f"/api/dashboard/jobs/q/{flaky.id}/details"
    details = (await env.http.get(url, headers=env.auth("admin"))).json()
    attempts = details["timeline"]
    assert [a["outcome"] for a in attempts] == ["failed", "completed"]
    assert "first run fails" in attempts[0]["error"]
    assert all(a["duration_ms"] is not None and a["duration_ms"] >= 0 for a in attempts)
    assert all(a["worker"] for a in attempts)  # each attempt names its worker (the `active` event)
    assert details["logs"] == [f"run of {flaky.id}"] * 2
    hidden = (await env.http.get(url, headers=env.auth("read"))).json()
    assert hidden["logs"] is None and hidden["logs_hidden"] is True
    missing = await env.http.get("/api/dashboard/jobs/q/nope/details", headers=env.auth("read"))
    assert missing.status_code == 404
    too_long = await env.http.get(f"/api/dashboard/jobs/q/{'x' * 5000}/details", headers=env.auth("read"))
    assert too_long.status_code == 404 and "x" * 50 not in too_long.text

    remove = f"/api/dashboard/jobs/q/{flaky.id}/remove"
    assert (await env.http.post(remove, headers=env.auth("read"))).status_code == 403
    assert (await env.http.post(remove, headers=env.auth("admin"))).json()["removed"] is True
    assert await q.get_job(flaky.id) is None
    assert (await env.http.post(remove, headers=env.auth("admin"))).status_code == 404


async def test_oldest_waiting_age_and_unknown_queue(env: Env) -> None:
    q = env.app.queue("q")
    await q.add("work", {})
    await q.add("work", {})
    stats = (await env.http.get("/api/dashboard/stats", headers=env.auth("read"))).json()
    assert stats["queues"]["q"]["oldest_waiting_ms"] is not None
    assert 0 <= stats["queues"]["q"]["oldest_waiting_ms"] < 60_000
    r = await env.http.get("/api/dashboard/queues/nope/jobs", headers=env.auth("read"))
    assert r.status_code == 404


async def _is(job: Any, state: str) -> bool:
    return str(await job.state()) == state

