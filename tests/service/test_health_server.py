"""The worker's /health and /metrics server (uvicorn): loopback by default, optional bearer token."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from collections.abc import Callable

from conveyor.redis.connection import RedisClient
from conveyor.service.health import HealthServer
from conveyor.settings import Settings
from conveyor.testing import free_port
from tests.conftest import wait_for
from tests.service.process import ServiceProcess
from tests.service.test_inprocess import running_service
from tests.service.test_process import add, completed, metric, started


def get(port: int, path: str, *, method: str = "GET", token: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def test_default_bind_is_loopback_and_routes_answer(redis_url: str, prefix: str) -> None:
    settings = Settings()
    assert settings.worker_health_host == "127.0.0.1"
    assert settings.metrics_token is None
    async with running_service(redis_url, prefix) as service:
        server = HealthServer(service, settings.worker_health_host, free_port())
        await server.start()
        try:
            assert server._server is not None
            bound = [s.getsockname()[0] for srv in server._server.servers for s in srv.sockets]
            assert bound == ["127.0.0.1"]
            port = server.bound_port
            status, body, headers = await asyncio.to_thread(get, port, "/health")
            assert status == 200 and b'"status":"ok"' in body
            assert headers["content-type"] == "application/json"
            status, body, headers = await asyncio.to_thread(get, port, "/metrics")
            assert status == 200 and b"conveyor_queue_concurrency" in body
            assert headers["content-type"].startswith("text/plain")
            status, body, _ = await asyncio.to_thread(get, port, "/health", method="HEAD")
            assert status == 200 and body == b""
            assert (await asyncio.to_thread(get, port, "/nope"))[0] == 404
            status, _, headers = await asyncio.to_thread(get, port, "/health", method="POST")
            assert status == 405 and headers["allow"] == "GET"
            # A header block that never ends is cut off at the size limit instead of buffered forever.
            reply = await asyncio.to_thread(
                raw_request, port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000
            )
            assert reply.split(b"\r\n", 1)[0] == b"HTTP/1.1 400 Bad Request"
        finally:
            await server.close()
        # Closed: nothing listens on the port any more.
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            refused = False
        except OSError:
            refused = True
        assert refused


async def test_metrics_token_is_required_when_set_and_health_stays_open(redis_url: str, prefix: str) -> None:
    async with running_service(redis_url, prefix) as service:
        server = HealthServer(service, "127.0.0.1", free_port(), metrics_token="s3cret-token")
        await server.start()
        try:
            port = server.bound_port
            status, _, headers = await asyncio.to_thread(get, port, "/metrics")
            assert status == 401 and headers["www-authenticate"].startswith("Bearer")
            assert (await asyncio.to_thread(get, port, "/metrics", token="wrong"))[0] == 401
            assert (await asyncio.to_thread(get, port, "/metrics", token="s3cret-token-and-more"))[0] == 401
            status, body, _ = await asyncio.to_thread(get, port, "/metrics", token="s3cret-token")
            assert status == 200 and b"conveyor_redis_up" in body
            assert (await asyncio.to_thread(get, port, "/health"))[0] == 200
        finally:
            await server.close()


async def test_worker_process_reads_the_token_from_the_environment(
    services: Callable[..., ServiceProcess], redis_url: str, prefix: str, plain_client: RedisClient
) -> None:
    svc = services(redis_url, prefix, CONVEYOR_METRICS_TOKEN="from-env")
    await started(svc)
    await add(plain_client, prefix, "fast", 2)

    async def done() -> bool:
        return await completed(plain_client, prefix, "fast") == 2

    await wait_for(done, timeout=30, what="jobs completed")
    assert (await asyncio.to_thread(get, svc.port, "/metrics"))[0] == 401
    status, body, _ = await asyncio.to_thread(get, svc.port, "/metrics", token="from-env")
    assert status == 200
    assert metric(body.decode(), "conveyor_jobs_completed_total", queue="fast", name="track") == 2
