"""`redis+sentinel://` URLs: parsed strictly, and a real Sentinel in front of a real server routes
Conveyor to the primary."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as syncredis

from conveyor import JobState, Queue
from conveyor.errors import ConfigurationError
from conveyor.redis.connection import connect, parse_sentinel_url
from conveyor.testing import RedisServer, free_port, server_binary


def test_sentinel_url_forms() -> None:
    t = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26379,[::1]:26380,sentinel-c/jobs/2")
    assert t.sentinels == [("10.0.0.1", 26379), ("::1", 26380), ("sentinel-c", 26379)]
    assert (t.service, t.db, t.password, t.username, t.ssl) == ("jobs", 2, "s3cret", None, False)
    t = parse_sentinel_url("rediss+sentinel://app:pw@h:5000/mymaster?sentinel_password=x")
    assert (t.service, t.db, t.username, t.password, t.sentinel_password, t.ssl) == (
        "mymaster", 0, "app", "pw", "x", True)


@pytest.mark.parametrize("url", [
    "redis+sentinel://h:26379",  # no service name
    "redis+sentinel://h:26379/svc/zero",  # db not a number
    "redis+sentinel://h:port/svc",  # bad port
    "redis+sentinel:///svc",  # no sentinel
    "redis+sentinel://h:26379/svc?colour=blue",  # unknown option
])
def test_bad_sentinel_urls_are_rejected(url: str) -> None:
    with pytest.raises(ConfigurationError):
        connect(url)


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[RedisServer, int]]:
    with RedisServer() as primary:
        port = free_port()
        conf = tmp_path / "sentinel.conf"
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                        f"sentinel monitor svc 127.0.0.1 {primary.port} 1\n")
        proc = subprocess.Popen([server_binary(), str(conf), "--sentinel"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    with syncredis.Redis(port=port, socket_timeout=1, decode_responses=True) as c:
                        if c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "svc"):
                            break
                except syncredis.ConnectionError:
                    pass
                assert time.monotonic() < deadline, "sentinel did not start"
                time.sleep(0.05)
            yield primary, port
        finally:
            proc.kill()
            proc.wait(10)


async def test_queue_through_a_real_sentinel(sentinel: tuple[RedisServer, int]) -> None:
    primary, port = sentinel
    queue = Queue(f"sentinel-{uuid.uuid4().hex[:8]}", redis=f"redis+sentinel://127.0.0.1:{port}/svc/0")
    try:
        job = await queue.add("ping", {"hello": "sentinel"})
        assert await queue.get_state(job.id) is JobState.WAITING
        with syncredis.Redis(port=primary.port, decode_responses=True) as direct:
            assert direct.exists(queue.keys.job(job.id)) == 1  # written to the primary behind it
    finally:
        await queue.obliterate(force=True)
        await queue.close()


async def test_sentinel_pool_is_bounded(sentinel: tuple[RedisServer, int]) -> None:
    """A burst of concurrent calls through a Sentinel URL waits for a free connection instead of
    opening one per call (the primary's CLIENT LIST counts them)."""
    primary, port = sentinel
    client = connect(f"redis+sentinel://127.0.0.1:{port}/svc/0", max_connections=4)
    key = f"bound-{uuid.uuid4().hex[:8]}"
    try:
        # Each call blocks a little on the server, so the burst really overlaps.
        replies = await asyncio.gather(*(client.blpop([f"{key}:{i}"], timeout=0.05) for i in range(40)))
        assert replies == [None] * 40
        with syncredis.Redis(port=primary.port, decode_responses=True) as direct:
            own = direct.client_id()
            others = [c for c in direct.client_list()  # the sentinel's own links are named sentinel-*
                      if int(c["id"]) != own and not c.get("name", "").startswith("sentinel-")]
        assert 1 <= len(others) <= 4, len(others)
    finally:
        await client.aclose()
