"""Fixtures for the embedded-server tests: a data dir in tmp_path, helper processes that share the
server, and a teardown that kills any server a failed test left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.embedded import EmbeddedConfig
from conveyor.embedded.state import ServerState, process_alive

HOLDER = Path(__file__).with_name("holder.py")


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The test's environment without any Redis URL or Conveyor setting, pointed at `data_dir`."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("CONVEYOR_")}
    env["CONVEYOR_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


class Holder:
    """Another Conveyor process holding the shared server (tests/embedded/holder.py)."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HOLDER)], env=clean_env(data_dir, **env), cwd=data_dir.parent,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self._info: dict[str, Any] | None = None

    @property
    def info(self) -> dict[str, Any]:
        if self._info is None:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"holder failed: {self.proc.stderr.read() if self.proc.stderr else ''}")
            self._info = json.loads(line)
        return self._info

    def release(self) -> bool:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("release\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        assert self.proc.wait(30) == 0
        return bool(reply["stopped"])

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    yield path
    state = ServerState.load(path / "embedded.json")
    if state is not None and process_alive(state.pid, state.start_time):
        os.kill(state.pid, signal.SIGKILL)


@pytest.fixture
def config(data_dir: Path) -> EmbeddedConfig:
    return EmbeddedConfig(data_dir.resolve(), start_timeout_s=30.0)


@pytest.fixture
def holders(data_dir: Path) -> Iterator[list[Holder]]:
    made: list[Holder] = []
    yield made
    for h in made:
        h.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A project directory for `conveyor up` (data in .conveyor/data); its server is killed at the end."""
    yield tmp_path
    state = ServerState.load(tmp_path / ".conveyor" / "data" / "embedded.json")
    if state is not None and process_alive(state.pid, state.start_time):
        os.kill(state.pid, signal.SIGKILL)
