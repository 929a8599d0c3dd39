"""Runs `python -m conveyor worker tests.service.apps:app` as a real subprocess and talks to its /health."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from conveyor.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.service.apps:app"


class ServiceProcess:
    """One service process; its stdout (JSON log lines) is collected by a reader thread."""

    def __init__(self, redis_url: str, prefix: str, **settings: Any) -> None:
        self.port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CONVEYOR_") and not k.startswith("WORKER_")
        }
        env.update(
            {
                "REDIS_URL": redis_url,
                "CONVEYOR_PREFIX": prefix,
                "WORKER_HEALTH_HOST": "127.0.0.1",
                "WORKER_HEALTH_PORT": str(self.port),
                "CONVEYOR_LOG_FORMAT": "json",
                "CONVEYOR_METRICS_INTERVAL_S": "0.2",
                "CONVEYOR_HEARTBEAT_S": "0.5",
                "CONVEYOR_STATS_INTERVAL_S": "1",
            }
        )
        env.update({k: str(v) for k, v in settings.items()})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker", APP],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and (name is None or record.get("event") == name):
                found.append(record)
        return found

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except OSError:
            return 0, b""

    async def health(self) -> tuple[int, dict[str, Any]]:
        status, body = await asyncio.to_thread(self._get, "/health")
        return status, (json.loads(body) if status else {})

    async def metrics(self) -> str:
        status, body = await asyncio.to_thread(self._get, "/metrics")
        assert status == 200, status
        return body.decode()

    async def healthy(self) -> bool:
        return (await self.health())[0] == 200

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def wait_exit(self, within_s: float = 30.0) -> int:
        try:
            code = await asyncio.to_thread(self.proc.wait, within_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within {within_s}s; output:\n{self.output()}") from None
        await asyncio.to_thread(self._reader.join, 5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
