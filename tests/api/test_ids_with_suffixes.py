"""Job ids may contain '/', and the URLs the API returns percent-encode them: the status_url of a job
whose id ends in `/wait`, `/events` or `/output` reads that job. Before, the server decoded `%2F`
before routing, so `GET /api/jobs/q/rep%2Fwait` was the long-poll of a job `rep` (a 404, or another
job's record). Real uvicorn, real Redis."""

from __future__ import annotations

import httpx

from tests.api.conftest import api_settings
from tests.api.live import live_api
from tests.api.sample_app import build_app


async def test_the_status_url_of_an_id_ending_in_a_route_suffix_reads_that_job(redis_url: str, qname: str) -> None:
    app = build_app(redis_url, qname)
    try:
        async with live_api(app, api_settings(redis_url)) as api:
            # A job named like the prefix exists too: the suffixed ids must not read it.
            for job_id, text in [("rep", "plain"), ("rep/wait", "w"), ("rep/events", "e"), ("rep/output", "o")]:
                r = await api.http.post(f"/api/queues/{qname}/jobs", headers=api.auth(),
                                        json={"name": "echo", "data": {"text": text}, "options": {"job_id": job_id}})
                assert r.status_code == 202, r.text
                url = r.json()["status_url"]
                got = await api.http.get(url, headers=api.auth(), timeout=httpx.Timeout(60))
                assert got.status_code == 200 and got.headers["content-type"].startswith("application/json"), got.text
                assert got.json()["id"] == job_id and got.json()["data"]["text"] == text
            # The routes themselves still answer with literal suffixes.
            r = await api.http.get(f"/api/jobs/{qname}/rep%2Fwait/wait?timeout=0", headers=api.auth())
            assert r.status_code == 200 and r.json()["id"] == "rep/wait"
            r = await api.http.get(f"/api/jobs/{qname}/rep/output", headers=api.auth())
            assert r.status_code == 200 and r.json()["job_id"] == "rep"
    finally:
        await app.queue(qname).obliterate(force=True)
        await app.close()
