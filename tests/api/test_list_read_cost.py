"""A listing reads the fields it returns, within a bound, never whole records.

A page of jobs (`GET /api/queues/{q}/jobs`, the dashboard's search) read every job's whole record,
payload and result included, also for `read` keys that see neither: a page of 1,000 jobs with
512 KiB payloads moved half a gigabyte out of Redis. Now a `read` key's page reads no payload, and a
`read-data` key's page stops at LISTING_MAX_BYTES (its cursor continues). Counted in the bytes Redis
sends, on a server of its own."""

from __future__ import annotations

from typing import Any

from conveyor.listing import LISTING_MAX_BYTES
from conveyor.testing import RedisServer
from tests.api.conftest import api_settings
from tests.api.live import LiveApi, live_api
from tests.api.sample_app import build_app
from tests.conftest import server_info

JOBS = 24
PAYLOAD_CHARS = 300 * 1024  # 24 jobs: about 7 MiB of payloads, past the 4 MiB bound


async def _sent_bytes(url: str) -> int:
    return int((await server_info(url, "stats"))["total_net_output_bytes"])


async def _read(api: LiveApi, url: str, who: str, server_url: str) -> tuple[dict[str, Any], int]:
    """The answer of one GET and the bytes Redis sent while serving it."""
    before = await _sent_bytes(server_url)
    r = await api.http.get(url, headers=api.auth(who))
    sent = await _sent_bytes(server_url) - before
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body, sent


async def test_listings_read_only_what_they_return_within_a_bound(qname: str) -> None:
    payload_total = JOBS * PAYLOAD_CHARS
    with RedisServer() as server:
        app = build_app(server.url, qname)
        try:
            q = app.queue(qname)
            ids = [(await q.add("echo", {"text": f"{i}:" + "x" * PAYLOAD_CHARS})).id for i in range(JOBS)]
            async with live_api(app, api_settings(server.url, api_key_cache_s=60)) as api:
                listing = f"/api/queues/{qname}/jobs?state=waiting&limit=1000"
                search = f"/api/dashboard/queues/{qname}/jobs?state=waiting&name=ech&limit=200"
                for url in (listing, search):
                    # A read key sees no payload: none is read.
                    page, sent = await _read(api, url, "read", server.url)
                    assert [j["id"] for j in page["jobs"]] == ids and page["next_cursor"] is None
                    assert all(j["data"] is None and j["data_hidden"] for j in page["jobs"])
                    assert sent < 256 * 1024, (url, sent)
                    # A read-data key: pages of at most the bound, which together list every job once.
                    seen: list[str] = []
                    cursor: int | None = 0
                    while cursor is not None:
                        page, sent = await _read(api, f"{url}&cursor={cursor}", "reader", server.url)
                        assert 0 < len(page["jobs"]) < JOBS, len(page["jobs"])
                        assert all(j["data"]["text"].endswith("x" * 100) for j in page["jobs"])
                        assert sent <= LISTING_MAX_BYTES + 256 * 1024, (url, sent)
                        seen += [j["id"] for j in page["jobs"]]
                        cursor = page["next_cursor"]
                    assert seen == ids, url
                    assert payload_total > LISTING_MAX_BYTES + 256 * 1024  # the bound did cut pages
        finally:
            await q.obliterate(force=True)
            await app.close()
