"""An API run without keys (CONVEYOR_API_AUTH=0, "on loopback") refuses writes that a browser marks
as sent by another site's page: such a page can send a simple cross-site POST (a form, or fetch with
text/plain: no CORS preflight) to the API, and before, that enqueued jobs and paused queues. Real
uvicorn, real Redis; the requests carry the headers a browser sends."""

from __future__ import annotations

import httpx

from tests.api.conftest import api_settings
from tests.api.live import live_api
from tests.api.sample_app import build_app

JOB = b'{"name": "echo", "data": {"text": "from another site"}}'


async def _counts(http: httpx.AsyncClient, queue: str) -> dict[str, int]:
    r = await http.get(f"/api/queues/{queue}")
    assert r.status_code == 200, r.text
    counts: dict[str, int] = r.json()["counts"]
    return counts


async def test_without_keys_a_cross_site_write_is_refused(redis_url: str, qname: str) -> None:
    app = build_app(redis_url, qname)
    settings = api_settings(redis_url, api_auth=False, api_cors_origins="http://app.example:3000")
    try:
        async with live_api(app, settings) as api:
            http, jobs = api.http, f"/api/queues/{qname}/jobs"
            plain = {"Content-Type": "text/plain"}
            for browser in (
                {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
                {"Origin": "https://evil.example"},
                {"Origin": "null"},
                {"Sec-Fetch-Site": "cross-site"},
                {"Origin": "http://127.0.0.1:1"},  # another port: another origin
            ):
                r = await http.post(jobs, content=JOB, headers={**plain, **browser})
                assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (browser, r.text)
                r = await http.post(f"/api/queues/{qname}/pause", headers=browser)
                assert r.status_code == 403, (browser, r.text)
            counts = await _counts(http, qname)
            assert sum(counts.values()) == 0
            assert (await http.get(f"/api/queues/{qname}")).json()["paused"] is False
            # The API's own pages (the dashboard), an allowed CORS origin, and clients that are not
            # browsers (no Origin) still write.
            own = api.url
            behind_proxy = {"Origin": "https://jobs.example", "Sec-Fetch-Site": "same-origin"}
            for ok in ({"Origin": own}, behind_proxy, {"Origin": "http://app.example:3000"}, {}):
                r = await http.post(jobs, content=JOB, headers={"Content-Type": "application/json", **ok})
                assert r.status_code == 202, (ok, r.text)
            assert (await _counts(http, qname))["waiting"] == 4
    finally:
        await app.queue(qname).obliterate(force=True)
        await app.close()
