"""A flow root's event stream reads its tree a bounded number of times, not once per child that ends.

Each child's end puts a `child` event on the root; the stream used to re-read the root's record (which
holds every child's result) and walk the whole tree (one HMGET per descendant) at each of them: a
root with N children cost N walks of N reads, for every client following it. A child that ends does
not grow the tree, so now only the events that may (`waiting-children`) and the keep-alive re-walk
it. Counted in Redis's own command statistics on a server of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from conveyor import JobContext
from conveyor.testing import RedisServer
from tests.api.conftest import api_settings
from tests.api.live import live_api
from tests.api.sample_app import build_app
from tests.api.sse_parse import parse_sse
from tests.conftest import server_info, wait_for

CHILDREN = 200


async def _hmget_calls(url: str) -> int:
    return int((await server_info(url, "commandstats")).get("cmdstat_hmget", {}).get("calls", 0))


async def test_a_root_stream_does_not_walk_the_tree_at_each_child_end(qname: str) -> None:
    other = f"{qname}-kids"
    with RedisServer() as server:
        app = build_app(server.url, qname)

        @app.task(queue=qname, name="collect")
        async def collect(ctx: JobContext) -> int:
            return len((await ctx.children()).ordered())

        @app.task(queue=other, name="shout")
        async def shout(ctx: JobContext, text: str) -> str:
            return text.upper()

        worker = kids = None
        try:
            # Keep-alives (which re-walk the tree too) far apart: only the events' walks are counted.
            async with live_api(app, api_settings(server.url, api_sse_keepalive_s=3600)) as api:
                body = {"queue": qname, "name": "collect",
                        "children": [{"queue": other, "name": "shout", "data": str(i)} for i in range(CHILDREN)]}
                r = await api.http.post("/api/flows", json=body, headers=api.auth())
                assert r.status_code == 202, r.text
                events_url = r.json()["events_url"]
                before = await _hmget_calls(server.url)
                request = asyncio.create_task(api.http.get(events_url, headers=api.auth("reader"), timeout=300))
                hub = api.asgi.state.conveyor_api.hub
                followed: Callable[[], bool] = lambda: other in hub.followed()  # noqa: E731
                await wait_for(followed, timeout=60, what="the stream following the children's queue")
                worker = app.worker(qname, lease_ms=3000)
                kids = app.worker(other, lease_ms=3000, concurrency=20)
                await worker.start()
                await kids.start()
                response = await request
                reads = await _hmget_calls(server.url) - before
            events, _ = parse_sse(response.text)
            assert events[-1].event == "completed", [e.event for e in events][-5:]
            assert sum(1 for e in events if e.event == "child" and e.data["type"] == "completed") == CHILDREN
            # A walk per child's end would be CHILDREN * CHILDREN reads; a few walks are a few times CHILDREN.
            assert reads < CHILDREN * CHILDREN // 4, reads
        finally:
            for w in (kids, worker):
                if w is not None:
                    await w.close(2.0)
            await app.close()
