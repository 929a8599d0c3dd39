"""A user's project directory with `conveyor up` running in it (embedded Valkey, worker, API), as a
newcomer starts it: no REDIS_URL, nothing but the directory."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conveyor.embedded.state import ServerState, process_alive
from conveyor.testing import free_port
from tests.cli.run import clean_env

BOOT_TIMEOUT_S = 90.0


class UpProject:
    """`python -m conveyor up` in `directory`; `stop()` ends it and anything it left running."""

    def __init__(self, directory: Path, *app: str) -> None:
        self.directory = directory
        self.api_port, self.health_port = free_port(), free_port()
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "up", *app, "--api-port", str(self.api_port),
             "--health-port", str(self.health_port)],
            env=clean_env(CONVEYOR_LOG_LEVEL="warning", CONVEYOR_SHUTDOWN_GRACE_S="5"), cwd=directory,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self._wait_for("Conveyor is up.")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _wait_for(self, text: str) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {BOOT_TIMEOUT_S}s:\n" + "\n".join(self.output)) from None
            if line is None:
                raise AssertionError(f"conveyor up exited before {text!r}:\n" + "\n".join(self.output))
            self.output.append(line)
            if text in line:
                return

    @property
    def data_dir(self) -> Path:
        return self.directory / ".conveyor" / "data"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def admin_key(self) -> str:
        return (self.directory / ".conveyor" / "admin.key").read_text().strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        state = ServerState.load(self.data_dir / "embedded.json")
        if state is not None and process_alive(state.pid, state.start_time):
            os.kill(state.pid, signal.SIGKILL)
