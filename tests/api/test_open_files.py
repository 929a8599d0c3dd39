"""`conveyor api` started with a soft open-files limit below what its connection cap needs (often 1024
against a cap of 2000 plus the Redis pool) raises it toward the hard limit: hundreds of held streams
then leave /api/health answering. Before, past the soft limit new connections were dropped without
an answer and nothing was logged. A real `conveyor api` process, real Redis, raw sockets."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import httpx
import pytest

from conveyor.api.keys import KeyStore
from conveyor.testing import free_port
from tests.api.api_process import api_env, conveyor_api
from tests.api.sample_app import build_app
from tests.api.test_hold import RawConn, _answers
from tests.conftest import wait_for

SOFT = 200  # below STREAMS plus what the process itself holds
STREAMS = 300
HARD_NEEDED = 4096


@pytest.fixture
def low_limit_api(redis_url: str, qname: str) -> Iterator[int]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < HARD_NEEDED:
        pytest.skip(f"the hard open-files limit ({hard}) is below {HARD_NEEDED}")
    port = free_port()
    env = api_env(redis_url, qname, CONVEYOR_API_SSE_KEEPALIVE_S="5",
                  CONVEYOR_API_MAX_STREAMS_PER_KEY=str(STREAMS), CONVEYOR_API_MAX_CONNECTIONS="2000")

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD_NEEDED))

    with conveyor_api(port, env, preexec_fn=low_soft_limit):
        yield port


async def test_hundreds_of_streams_past_a_low_soft_limit_leave_the_api_answering(
    low_limit_api: int, redis_url: str, qname: str
) -> None:
    app = build_app(redis_url, qname)
    token, info = await KeyStore(app.client).create("many", ["enqueue", "read"])
    base = f"http://127.0.0.1:{low_limit_api}"
    conns: list[RawConn] = []
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            await wait_for(_answers(http), timeout=60, what="the API answers")
            r = await http.post(f"/api/queues/{qname}/jobs", json={"name": "sleepy", "data": None},
                                headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 202, r.text
            job = r.json()["id"]
            for _ in range(STREAMS):
                conns.append(await RawConn.get(low_limit_api, f"/api/jobs/{qname}/{job}/events", token))
            statuses = [(await conn.head())[0] for conn in conns]
            assert statuses.count(200) == STREAMS
        async with httpx.AsyncClient(base_url=base, timeout=60) as fresh:
            health = await fresh.get("/api/health")
            assert health.status_code == 200 and health.json()["redis"] == "ok", health.text
    finally:
        for conn in conns:
            conn.close()
        await KeyStore(app.client).revoke(info.id)
        await app.queue(qname).obliterate(force=True)
        await app.close()
