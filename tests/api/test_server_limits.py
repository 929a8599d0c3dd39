"""Server limits with real slow sockets against the API as `conveyor api` serves it (the guarded
uvicorn protocols, httptools and h11): slow headers, slow bodies and idle keep-alive connections are
closed in bounded time, a held stream is not cut by them, the connection cap answers 503; and
`conveyor api --workers N` runs several processes on one port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from conveyor.api import create_app
from conveyor.api.command import workers_config
from conveyor.api.server import make_config, protocol_class
from conveyor.errors import ConfigurationError
from conveyor.settings import Settings
from conveyor.testing import free_port
from tests.api.api_process import api_env, conveyor_api
from tests.api.conftest import api_settings
from tests.api.live import LiveApi
from tests.api.sample_app import build_app
from tests.api.test_hold import RawConn
from tests.conftest import wait_for

UVICORN_HEALTHCHECK_S = uvicorn.Config("x:app").timeout_worker_healthcheck  # uvicorn's default (5 s)
SLOW = 40  # slow connections of each kind


@asynccontextmanager
async def served(redis_url: str, qname: str, http: str, **limits: Any) -> AsyncIterator[tuple[LiveApi, int]]:
    """The API with `limits` as settings, served by uvicorn with the guarded protocol `http`."""
    from conveyor.api.keys import KeyStore
    from tests.api.conftest import SCOPES

    app = build_app(redis_url, qname)
    settings = api_settings(redis_url, api_port=free_port(), **limits)
    asgi = create_app(app, settings)
    server = uvicorn.Server(make_config(asgi, settings, http=protocol_class(http), log_level="warning"))
    task = asyncio.create_task(server.serve())
    store = KeyStore(app.client)
    tokens, ids = {}, []
    for who, scopes in SCOPES.items():
        tokens[who], info = await store.create(f"limits-{who}", scopes)
        ids.append(info.id)
    try:
        await wait_for(lambda: server.started or task.done(), what="uvicorn started")
        url = f"http://127.0.0.1:{settings.api_port}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield LiveApi(url, client, asgi, app, tokens), settings.api_port
    finally:
        server.should_exit = True
        await task
        for key_id in ids:
            await store.revoke(key_id)
        await app.queue(qname).obliterate(force=True)
        await app.close()


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection (generous bound: a hang fails)."""
    try:
        return await asyncio.wait_for(reader.read(), 60)
    except (ConnectionError, OSError):  # the reset surfaced through the writing side
        return b""


async def _trickle(writer: asyncio.StreamWriter, data: bytes) -> int:
    """Send `data` one byte at a time, slowly, until the server closes; returns bytes sent."""
    sent = 0
    try:
        for i in range(len(data)):
            writer.write(data[i:i + 1])
            await writer.drain()
            sent += 1
            await asyncio.sleep(0.2)
    except (ConnectionError, OSError):
        pass
    return sent


@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_slow_headers_slow_bodies_and_idle_connections_are_closed(
    redis_url: str, qname: str, http: str
) -> None:
    limits = {"api_header_timeout_s": 1.0, "api_body_timeout_s": 1.0, "api_keepalive_s": 1.0}
    async with served(redis_url, qname, http, **limits) as (api, port):
        token = api.tokens["enqueue"]
        header = (f"POST /api/queues/{qname}/jobs HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode()
        silent, trickling, slow_body = [], [], []
        for _ in range(SLOW):
            silent.append(await asyncio.open_connection("127.0.0.1", port))  # connects, sends nothing
            r, w = await asyncio.open_connection("127.0.0.1", port)
            trickling.append((r, w, asyncio.create_task(_trickle(w, header))))
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(header + b'{"name": "echo", ')
            slow_body.append((r, w, asyncio.create_task(_trickle(w, b'"data": {"text": "x"}' + b" " * 960 + b"}"))))
        # The server stays responsive while they hang on.
        assert (await api.http.get("/api/health")).status_code == 200
        for r, _ in silent:
            assert await _closed_by_server(r) == b""
        for r, _, trickle in trickling + slow_body:
            await _closed_by_server(r)
            sent = await trickle
            assert sent < 1000  # cut off long before the request was complete
        # Idle keep-alive: a finished exchange, then silence: the server closes it.
        conn = await RawConn.get(port, "/api/health", token)
        status, headers = await conn.head()
        assert status == 200
        await conn.reader.readexactly(int(headers["content-length"]))
        assert await _closed_by_server(conn.reader) == b""
        for _, w in silent:
            w.close()
        for _, w, _ in trickling + slow_body:
            w.close()
        # Nothing the slow bodies carried was written.
        counts = (await api.http.get(f"/api/queues/{qname}", headers=api.auth())).json()["counts"]
        assert sum(counts.values()) == 0


async def test_deadlines_do_not_cut_a_held_wait_and_the_connection_cap_answers_503(
    redis_url: str, qname: str
) -> None:
    limits = {"api_header_timeout_s": 0.5, "api_body_timeout_s": 0.5, "api_max_connections": 12}
    async with served(redis_url, qname, "httptools", **limits) as (api, port):
        r = await api.http.post(f"/api/queues/{qname}/jobs", json={"name": "echo", "data": {"text": "x"}},
                                headers=api.auth("enqueue"))
        job = r.json()["id"]
        state = api.asgi.state.conveyor_api
        token = api.tokens["reader"]
        # A wait outlives the deadlines (they end once the request is read) and answers normally.
        wait = await RawConn.get(port, f"/api/jobs/{qname}/{job}/wait?timeout=2", token)
        status, headers = await wait.head()
        assert status == 200 and b'"state":"waiting"' in await wait.reader.readexactly(int(headers["content-length"]))
        wait.close()
        # Past the cap of open connections, a request is refused at once with 503.
        streams = [await RawConn.get(port, f"/api/jobs/{qname}/{job}/events", token) for _ in range(15)]
        statuses = [(await conn.head())[0] for conn in streams]
        assert set(statuses) == {200, 503}, statuses
        assert state.streams.held(token.split("_")[1]) == statuses.count(200)
        for conn in streams:
            conn.close()
        await wait_for(lambda: state.streams.held(token.split("_")[1]) == 0, what="streams released")
        assert (await api.http.get("/api/health")).status_code == 200


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds the listening socket of `port` (matched by inode)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


@pytest.fixture
def workers_api(redis_url: str, qname: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    with conveyor_api(port, api_env(redis_url, qname), "--workers", "2", stop_s=60) as proc:
        yield proc, port


async def test_workers_serve_one_port_from_several_processes(
    workers_api: tuple[subprocess.Popen[bytes], int], redis_url: str, qname: str
) -> None:
    from conveyor.api.keys import KeyStore

    proc, port = workers_api
    app = build_app(redis_url, qname)
    token, info = await KeyStore(app.client).create("workers", ["enqueue", "read"])
    auth = {"Authorization": f"Bearer {token}"}
    try:
        def serving() -> list[int]:
            return [pid for pid in _children(proc.pid) if _listens(pid, port)]

        await wait_for(lambda: len(serving()) == 2, timeout=90, what="two processes listen on the port")
        first = serving()

        async def enqueue_on_fresh_connections(n: int) -> None:
            for i in range(n):
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                    r = await http.post(f"/api/queues/{qname}/jobs", json={"name": "echo", "data": {"text": str(i)}},
                                        headers=auth)
                    assert r.status_code == 202, r.text

        await wait_for(_health_ok(port), timeout=90, what="the API answers")
        await enqueue_on_fresh_connections(20)
        # One process dies: the other keeps answering and the supervisor starts a replacement.
        os.kill(first[0], signal.SIGKILL)
        await enqueue_on_fresh_connections(10)
        await wait_for(lambda: len(serving()) == 2 and first[0] not in serving(), timeout=90,
                       what="a replacement process listens")
        await wait_for(_health_ok(port), timeout=90, what="the API answers")
        await enqueue_on_fresh_connections(10)
        assert sum((await app.queue(qname).counts()).values()) == 40
    finally:
        await KeyStore(app.client).revoke(info.id)
        await app.queue(qname).obliterate(force=True)
        await app.close()


async def test_a_worker_process_slow_to_answer_its_supervisor_keeps_serving(
    workers_api: tuple[subprocess.Popen[bytes], int],
) -> None:
    """A process that cannot answer the supervisor's health check for a while (on a busy machine: one
    still importing, or one waiting for a CPU) is not killed. With uvicorn's default of 5 s the
    supervisor killed it, and every replacement too while the machine stayed busy, so that nobody
    accepted on the port. Here the process is stopped for twice uvicorn's default."""
    proc, port = workers_api

    def serving() -> list[int]:
        return [pid for pid in _children(proc.pid) if _listens(pid, port)]

    await wait_for(lambda: len(serving()) == 2, timeout=90, what="two processes listen on the port")
    await wait_for(_health_ok(port), timeout=90, what="the API answers")
    slow = serving()[0]
    os.kill(slow, signal.SIGSTOP)
    try:
        await asyncio.sleep(2 * UVICORN_HEALTHCHECK_S)  # how long it does not answer (not a wait for a condition)
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone if the supervisor killed it
            os.kill(slow, signal.SIGCONT)
    await wait_for(_health_ok(port), timeout=90, what="the API answers")
    assert slow in serving(), "the slow process was killed"


def test_the_workers_health_check_allows_a_busy_machine() -> None:
    assert workers_config(Settings(api_workers=2)).timeout_worker_healthcheck == 60
    config = workers_config(Settings(api_workers=2, api_worker_healthcheck_s=120))
    assert config.timeout_worker_healthcheck == 120 > UVICORN_HEALTHCHECK_S
    with pytest.raises(ConfigurationError):
        workers_config(Settings(api_workers=2, api_worker_healthcheck_s=0))


def _health_ok(port: int) -> Any:
    async def check() -> bool:
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                return (await http.get(f"http://127.0.0.1:{port}/api/health")).status_code == 200
        except httpx.TransportError:
            return False

    return check


async def _stops_reading(port: int, path: str, token: str) -> socket.socket:
    """A client that sends its request, then never reads: a small receive window, soon shut."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    request = f"GET {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    await asyncio.get_running_loop().sock_sendall(sock, request)
    return sock


@pytest.mark.timeout(240)
@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_a_stream_whose_client_stopped_reading_gives_its_slot_back(
    redis_url: str, qname: str, http: str
) -> None:
    limits = {"api_sse_keepalive_s": 0.05, "api_send_timeout_s": 1.0, "api_max_streams_per_key": 1}
    async with served(redis_url, qname, http, **limits) as (api, port):
        r = await api.http.post(f"/api/queues/{qname}/jobs", json={"name": "echo", "data": {"text": "x"}},
                                headers=api.auth("enqueue"))
        path = f"/api/jobs/{qname}/{r.json()['id']}/events"
        state = api.asgi.state.conveyor_api
        token = api.tokens["reader"]
        key_id = token.split("_")[1]
        stalled = await _stops_reading(port, path, token)
        try:
            await wait_for(lambda: state.streams.held(key_id) == 1, what="the stream is open")
            # The keep-alives fill the client's window; once it stays shut the connection is ended
            # and the slot comes back (without the socket options: after ~15 minutes of probes).
            await wait_for(lambda: state.streams.held(key_id) == 0, timeout=150, what="the slot is given back")
            fresh = await RawConn.get(port, path, token)
            assert (await fresh.head())[0] == 200  # the cap of 1 admits a new stream
            fresh.close()
        finally:
            stalled.close()


async def _sse_body(reader: asyncio.StreamReader, until_id: str | None = None) -> list[tuple[str, str]]:
    """(event, id) of each frame of a chunked SSE response, until it ends or the frame `until_id`."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
    assert head.startswith(b"HTTP/1.1 200"), head
    frames: list[tuple[str, str]] = []
    pending = b""
    while True:
        size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 60)).strip(), 16)
        if size == 0:
            return frames
        pending += (await asyncio.wait_for(reader.readexactly(size + 2), 60))[:-2]
        *done, pending = pending.split(b"\n\n")
        for raw in done:
            fields = dict(line.split(": ", 1) for line in raw.decode().splitlines() if ": " in line)
            if "id" in fields:
                frames.append((fields["event"], fields["id"]))
                if fields["id"] == until_id:
                    return frames


async def test_a_stream_whose_client_falls_behind_ends_past_its_byte_bound_and_resumes_without_gap(
    redis_url: str, qname: str
) -> None:
    from conveyor.redis.keys import QueueKeys

    bound = 64 * 1024
    limits = {"api_sse_keepalive_s": 30.0, "api_send_timeout_s": 0.0, "api_sse_buffer_bytes": bound}
    async with served(redis_url, qname, "httptools", **limits) as (api, port):
        r = await api.http.post(f"/api/queues/{qname}/jobs", json={"name": "echo", "data": {"text": "x"}},
                                headers=api.auth("enqueue"))
        job = r.json()["id"]
        path = f"/api/jobs/{qname}/{job}/events"
        state = api.asgi.state.conveyor_api
        stalled = await _stops_reading(port, path, api.tokens["reader"])
        try:
            await wait_for(lambda: state.hub.followed().get(qname) == 1 and state.hub.reading(qname),
                           what="the stream follows the job")
            # 8 MB of progress events (2,000: far under the 10,000-event bound): more than the socket
            # buffers take, so the stream stalls and its events wait in the hub for it.
            events_key = QueueKeys(qname, "cv").events
            written = []
            for _ in range(2000):
                written.append(await api.app.client.xadd(
                    events_key, {"ev": "progress", "id": job, "progress": '"%s"' % ("p" * 4000)}))
            # Past the byte bound the stalled stream's subscription is closed (its buffer dropped) ...
            await wait_for(lambda: qname not in state.hub.followed(), timeout=60, what="the subscription closed")
            # ... and once the client reads again, the stream ends after what had gone out ...
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
            reader, writer = await asyncio.open_connection(sock=stalled)
            first = await _sse_body(reader)
            writer.close()
            progress = [i for kind, i in first if kind == "progress"]
            assert first[0][0] == "state" and 0 < len(progress) < len(written)
            assert progress == written[: len(progress)]
            # ... and a resume with Last-Event-ID gets the rest, with no gap and no repeat.
            resumed = await RawConn.get(port, path, api.tokens["reader"], extra=f"Last-Event-ID: {progress[-1]}\r\n")
            rest = await _sse_body(resumed.reader, until_id=written[-1])
            resumed.close()
            assert progress + [i for kind, i in rest if kind == "progress"] == written
        finally:
            stalled.close()


@pytest.mark.parametrize("events", [900, 2000])  # past the byte bound only; past both bounds
async def test_a_live_stream_whose_client_falls_behind_gets_resync_in_place_of_what_was_dropped(
    redis_url: str, qname: str, events: int
) -> None:
    from conveyor.redis.keys import QueueKeys

    limits = {"api_sse_keepalive_s": 30.0, "api_send_timeout_s": 0.0, "api_sse_buffer_bytes": 64 * 1024}
    async with served(redis_url, qname, "httptools", **limits) as (api, port):
        state = api.asgi.state.conveyor_api
        await api.app.queue(qname).add("echo", {"text": "x"})  # the queue exists
        stalled = await _stops_reading(port, f"/api/events?queue={qname}", api.tokens["reader"])
        try:
            await wait_for(lambda: state.hub.followed().get(qname) == 1 and state.hub.reading(qname),
                           what="the stream follows the queue")
            events_key = QueueKeys(qname, "cv").events
            pad = '"%s"' % ("p" * 4000)
            for i in range(events):  # 4 KB each: more than the socket buffers and the backlog's bound take
                await api.app.client.xadd(events_key, {"ev": "progress", "id": f"j{i}", "progress": pad})
            await api.app.client.xadd(events_key, {"ev": "removed", "id": "last"})
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
            reader, writer = await asyncio.open_connection(sock=stalled)
            kinds: list[str] = []
            while "removed" not in kinds:  # the last event comes after what was dropped
                line = await asyncio.wait_for(reader.readuntil(b"\n"), 60)
                if line.startswith(b"event: "):
                    kinds.append(line[7:].strip().decode())
            writer.close()
            progress = kinds.count("progress")
            assert 0 < progress < events and kinds.count("resync") >= 1, (progress, kinds.count("resync"))
            assert kinds.index("resync") > kinds.index("progress")
        finally:
            stalled.close()
