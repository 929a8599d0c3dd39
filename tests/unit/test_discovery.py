"""Finding the server: REDIS_URL, else the running embedded server of the nearest `.conveyor/`
upwards (or of CONVEYOR_DATA_DIR), else an error that names both ways out. Nothing is started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conveyor import Conveyor, Queue
from conveyor.discovery import data_dir, find_project_dir, find_server
from conveyor.embedded.state import ServerState, process_start_time
from conveyor.errors import ConfigurationError, ServerNotFoundError


def fake_running_server(directory: Path, url: str) -> None:
    """A state file naming a live process (this one), as `conveyor up` leaves for its server."""
    directory.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    ServerState(pid=pid, start_time=process_start_time(pid), run_id="r", url=url, socket=None, port=0,
                version="8", started_at=0.0).save(directory / "embedded.json")


def test_project_dir_is_the_nearest_dot_conveyor_upwards(tmp_path: Path) -> None:
    outer, inner = tmp_path / "outer", tmp_path / "outer" / "app" / "inner"
    (outer / ".conveyor").mkdir(parents=True)
    inner.mkdir(parents=True)
    assert find_project_dir(inner) == outer.resolve()
    (inner / ".conveyor").mkdir()
    assert find_project_dir(inner) == inner.resolve()
    assert find_project_dir(tmp_path) is None
    assert data_dir(None, outer / "app") == outer.resolve() / ".conveyor" / "data"
    assert data_dir(None, tmp_path) == tmp_path.resolve() / ".conveyor" / "data"  # where `up` makes one
    assert data_dir("elsewhere/data", tmp_path) == Path("elsewhere/data").resolve()
    with pytest.raises(ConfigurationError, match="CONVEYOR_DATA_DIR must not be empty"):
        data_dir("")


def test_order_url_then_redis_url_then_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "proj"
    fake_running_server(project / ".conveyor" / "data", "unix:///x/valkey.sock?db=0")
    (project / "pkg").mkdir()
    monkeypatch.chdir(project / "pkg")
    monkeypatch.delenv("CONVEYOR_DATA_DIR", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://env:6380/0")
    assert find_server("redis://arg:1/0").source == "argument"
    assert (find_server().url, find_server().source) == ("redis://env:6380/0", "REDIS_URL")
    monkeypatch.delenv("REDIS_URL")
    found = find_server()
    assert (found.url, found.source, found.data_dir) == ("unix:///x/valkey.sock?db=0", "embedded",
                                                         project.resolve() / ".conveyor" / "data")
    assert Queue("q").redis_url == found.url and Conveyor().redis_url == found.url


def test_a_stopped_server_is_reported_not_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("CONVEYOR_DATA_DIR", raising=False)
    state = tmp_path / "proj" / ".conveyor" / "data"
    state.mkdir(parents=True)
    start = process_start_time(os.getpid())
    assert start is not None
    # This pid with another start time: the process that wrote the file is gone (its pid recycled).
    ServerState(pid=os.getpid(), start_time=start - 1, run_id="r", url="unix:///x.sock", socket=None, port=0,
                version="8", started_at=0.0).save(state / "embedded.json")
    monkeypatch.chdir(tmp_path / "proj")
    with pytest.raises(ServerNotFoundError) as err:
        Queue("q")
    message = str(err.value)
    assert f"the embedded server of {(tmp_path / 'proj').resolve()} is not running" in message
    assert "conveyor up" in message and "REDIS_URL" in message
    assert (state / "embedded.json").exists()  # read only: nothing cleaned, nothing started
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ServerNotFoundError, match=r"REDIS_URL is not set and no \.conveyor/ project"):
        Conveyor().redis_url  # noqa: B018
