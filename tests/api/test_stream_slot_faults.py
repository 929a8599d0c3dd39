"""A Redis fault while an event stream is being set up answers 503 and gives the key's stream slot
back. Before, `GET /api/events` of a queue the app does not declare took the slot and then read the
queue's partition layout: a lost reply there was a 503 that kept the slot for good, so after
`CONVEYOR_API_MAX_STREAMS_PER_KEY` such faults the key got 429 on every stream until the process
restarted. Real uvicorn, a real Redis behind the fault proxy."""

from __future__ import annotations

from conveyor.testing import RedisServer
from tests.api.conftest import api_settings
from tests.api.live import live_api
from tests.api.sample_app import build_app
from tests.proxy import TcpProxy


async def test_a_fault_while_a_live_stream_starts_gives_its_slot_back(redis_server: RedisServer, qname: str) -> None:
    other = f"{qname}-other"
    producer = build_app(redis_server.url, other)  # a queue in Redis that the served app does not declare
    await producer.queue(other).add("echo", {"text": "x"})
    with TcpProxy(redis_server.port) as proxy:
        app = build_app(proxy.url, qname)
        try:
            async with live_api(app, api_settings(proxy.url, api_max_streams_per_key=1)) as api:
                # The layout is read once to find the queue, then again after the slot is taken.
                proxy.lose_reply(b"{partitions}:" + other.encode(), nth=(2,))
                r = await api.http.get("/api/events", params={"queue": other}, headers=api.auth("read"))
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "unavailable"
                assert proxy.cuts == 1
                key_id = api.tokens["read"].split("_")[1]
                assert api.asgi.state.conveyor_api.streams.held(key_id) == 0
                # The one slot the key has is free: a stream opens.
                async with api.http.stream("GET", "/api/events", params={"queue": qname},
                                           headers=api.auth("read"), timeout=60) as response:
                    assert response.status_code == 200
        finally:
            await app.close()
            await producer.queue(other).obliterate(force=True)
            await producer.close()
