"""While Redis is busy with a script past its time limit (it answers `BUSY` to everything), every
route answers the documented 503 saying so, with no trace in the log. Before, routes whose reads
are plain Redis calls (the dashboard's endpoints) or pipelines (the alerts, the schedules, a job's
output: redis-py wraps a command's reply there in a message of its own, which the fault table did
not recognise) let the reply escape as an unhandled error: a bare 500 and a logged trace.
Real uvicorn, a real Redis kept busy by a script that loops until it is killed."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import pytest
import redis

from conveyor.testing import RedisServer
from tests.api.conftest import api_settings
from tests.api.live import live_api
from tests.api.sample_app import build_app
from tests.conftest import wait_for

BUSY_MESSAGE = "Redis is busy running a script past its time limit"


@contextlib.contextmanager
def busy(server: RedisServer) -> Iterator[None]:
    """Redis runs a script that never ends (and answers BUSY) until the block ends."""
    admin = redis.Redis(port=server.port)
    admin.config_set("busy-reply-threshold", "10")
    spinner = threading.Thread(target=_spin, args=(server.port,), daemon=True)
    spinner.start()
    try:
        yield
    finally:
        for _ in range(100):  # until the script runs no more
            try:
                admin.script_kill()
            except redis.exceptions.ResponseError as exc:
                if "NOTBUSY" in str(exc):
                    break
        spinner.join(30)
        admin.close()


def _spin(port: int) -> None:
    with contextlib.suppress(redis.exceptions.RedisError), redis.Redis(port=port) as client:
        client.eval("while true do end", 0)


def _is_busy(port: int) -> bool:
    with redis.Redis(port=port) as client:
        try:
            client.ping()
        except redis.exceptions.ResponseError as exc:
            return "BUSY" in str(exc)
    return False


@pytest.mark.parametrize(
    "path",
    [
        "/api/dashboard/me",  # plain Redis calls
        "/api/dashboard/stats",
        "/api/alerts",  # pipelines: redis-py wraps the reply of a command in one
        "/api/schedules",
        "/api/jobs/{q}/{id}/output",
    ],
)
async def test_every_read_answers_503_while_redis_is_busy(
    qname: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with RedisServer() as server:
        app = build_app(server.url, qname)
        try:
            async with live_api(app, api_settings(server.url, api_key_cache_s=60)) as api:
                r = await api.http.post(f"/api/queues/{qname}/jobs", json={"name": "echo", "data": {"text": "x"}},
                                        headers=api.auth())
                url = path.format(q=qname, id=r.json()["id"])
                assert (await api.http.get(url, headers=api.auth())).status_code == 200  # the key is cached now
                with busy(server):
                    await wait_for(lambda: _is_busy(server.port), timeout=30, what="Redis busy")
                    r = await api.http.get(url, headers=api.auth())
                    assert r.status_code == 503, r.text
                    assert r.json() == {"error": {"code": "unavailable", "message": BUSY_MESSAGE}}
        finally:
            await app.close()
    assert not [r for r in caplog.records if r.exc_info or "unhandled" in r.getMessage()]
