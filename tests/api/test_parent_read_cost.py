"""Reading a flow parent reads its record, not its children's results.

A parent's hash also keeps every child's result (`r:<child>`) until the parent runs. Reading the
job (GET, a long-poll, an event stream's state frame, a page of jobs) fetched the whole hash: a
parent of 200 children with 20 KB results each cost 4 MB from Redis per read, and a parent of
10,000 children with large results gigabytes. Now only the record's fields are read. Counted in
the bytes Redis sends, on a server of its own."""

from __future__ import annotations

from typing import Any

from conveyor import JobContext
from conveyor.testing import RedisServer
from tests.api.conftest import api_settings
from tests.api.live import live_api
from tests.api.sample_app import build_app
from tests.conftest import server_info, wait_for

CHILDREN = 200
RESULT_BYTES = 20_000


async def _sent_bytes(url: str) -> int:
    return int((await server_info(url, "stats"))["total_net_output_bytes"])


async def test_reading_a_parent_does_not_read_its_childrens_results(qname: str) -> None:
    kids = f"{qname}-kids"
    with RedisServer() as server:
        app = build_app(server.url, qname)

        @app.task(queue=kids, name="big")
        async def big(ctx: JobContext, text: str) -> str:
            return text * (RESULT_BYTES // len(text))

        worker = None
        try:
            async with live_api(app, api_settings(server.url, api_key_cache_s=60)) as api:
                child = {"queue": kids, "name": "big", "data": "x" * 1000}
                r = await api.http.post("/api/flows", json={"queue": qname, "name": "echo", "data": {"text": "p"},
                                                            "children": [child] * CHILDREN}, headers=api.auth())
                assert r.status_code == 202, r.text
                root = r.json()
                worker = app.worker(kids, lease_ms=3000, concurrency=20)
                await worker.start()
                await wait_for(lambda: _state(api, root["status_url"], "waiting"), timeout=120,
                               what="every child delivered its result to the parent")
                before = await _sent_bytes(server.url)
                for url in (root["status_url"], f"{root['status_url']}/wait?timeout=0",
                            f"/api/queues/{qname}/jobs?state=waiting"):
                    r = await api.http.get(url, headers=api.auth("read"))
                    assert r.status_code == 200, r.text
                sent = await _sent_bytes(server.url) - before
            # Three reads of the whole hash are 3 * CHILDREN * RESULT_BYTES = 12 MB.
            assert sent < CHILDREN * RESULT_BYTES // 4, sent
        finally:
            if worker is not None:
                await worker.close(2.0)
            await app.close()


async def _state(api: Any, url: str, state: str) -> bool:
    r = await api.http.get(url, headers=api.auth("read"))
    return bool(r.json()["state"] == state)
