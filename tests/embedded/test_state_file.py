"""A corrupt `embedded.json` (truncated, garbage, wrong types): reported once, the server found from its
own address instead, still reused by the next user and still stopped by the last, its data kept."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as syncredis

from conveyor.embedded import EmbeddedConfig, EmbeddedHandle, acquire
from conveyor.embedded.server import wait_gone
from conveyor.embedded.state import ServerState, process_alive

CORRUPTIONS = {
    "truncated": b'{\n  "pid": 4242,\n  "start_time": 17,\n  "run_id": "9f0c',
    "garbage": b"\x00\xff\xfe\x9c conveyor \x81\x00",
    "wrong-types": json.dumps({
        "pid": "4242", "start_time": None, "run_id": 7, "url": ["unix:///nowhere"], "socket": None,
        "port": "0", "version": "8.0", "started_at": "yesterday",
    }).encode(),
    "not-an-object": b"[1, 2, 3]\n",
}


def client(url: str) -> syncredis.Redis:
    return syncredis.Redis.from_url(url, decode_responses=True, socket_timeout=5)


@pytest.fixture(params=["socket", "tcp"])
def any_config(request: pytest.FixtureRequest, tmp_path: Path) -> EmbeddedConfig:
    """A data dir reached by unix socket, or one too deep for a socket (loopback TCP + password)."""
    base = tmp_path / "data" if request.param == "socket" else tmp_path.joinpath(*["d" * 20] * 5)
    config = EmbeddedConfig(base.resolve(), start_timeout_s=30.0)
    assert config.use_socket is (request.param == "socket")
    return config


def state_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "state file" in r.getMessage() and r.levelno >= logging.WARNING]


@pytest.fixture(params=sorted(CORRUPTIONS))
def corrupt_server(
    request: pytest.FixtureRequest, any_config: EmbeddedConfig, caplog: pytest.LogCaptureFixture
) -> Iterator[EmbeddedHandle]:
    """A started server holding the key `kept`, whose state file is then overwritten with one of the
    corruptions; the server is killed at the end if the test left it running."""
    handle = acquire(any_config)
    try:
        with client(handle.url) as c:
            c.set("kept", "yes")
        any_config.state_file.write_bytes(CORRUPTIONS[request.param])
        caplog.set_level(logging.WARNING, logger="conveyor.embedded")
        yield handle
    finally:
        if process_alive(handle.pid, handle.state.start_time):
            os.kill(handle.pid, signal.SIGKILL)


def test_last_user_stops_the_server_despite_a_corrupt_state_file(
    any_config: EmbeddedConfig, corrupt_server: EmbeddedHandle, caplog: pytest.LogCaptureFixture
) -> None:
    handle = corrupt_server
    assert handle.release() is True  # last user: SHUTDOWN, which flushes the append-only file
    assert wait_gone(handle.pid, handle.state.start_time, 30)
    assert not any_config.state_file.exists()
    [warning] = state_warnings(caplog)
    assert str(any_config.state_file) in warning.getMessage() and warning.exc_info is None

    with acquire(any_config) as again, client(again.url) as c:
        assert again.started
        assert c.get("kept") == "yes"  # nothing durable lost
    assert len(state_warnings(caplog)) == 1  # reported once: the file was removed, not seen again


def test_next_user_reuses_the_server_and_repairs_a_corrupt_state_file(
    any_config: EmbeddedConfig, corrupt_server: EmbeddedHandle, caplog: pytest.LogCaptureFixture
) -> None:
    first = corrupt_server
    second = acquire(any_config)
    assert not second.started and second.pid == first.pid and second.url == first.url
    assert ServerState.read(any_config.state_file) == second.state  # written again from the server
    assert second.state.run_id == first.state.run_id
    assert len(state_warnings(caplog)) == 1

    assert first.release() is False  # the second user still holds it
    with client(second.url) as c:
        assert c.get("kept") == "yes"
    assert second.release() is True
    assert wait_gone(first.pid, first.state.start_time, 30)
    assert len(state_warnings(caplog)) == 1  # reported once, by the user that repaired it
