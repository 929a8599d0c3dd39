"""Real `conveyor worker` processes for the chaos scenarios: started, SIGKILLed, SIGSTOPped past their
lease and continued, each with its own log file (JSON lines) the report reads afterwards."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.service.plan import concurrency_env_name

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.chaos.app:app"


@dataclass(frozen=True, slots=True)
class FleetConfig:
    redis_url: str
    prefix: str
    queue: str
    ledger_url: str
    ledger_key: str
    logdir: Path
    size: int = 3
    concurrency: int = 4
    lease_ms: int = 2000
    replicas: int = 0
    partitions: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)


class WorkerFleet:
    """`size` worker slots; a slot's process may be killed and replaced by a new one."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}  # pid -> log file
        self.started = 0
        self.killed = 0
        self.paused = 0
        self.unexpected_exits: list[int] = []
        self._stopped: set[int] = set()
        self._lock = threading.Lock()  # kills run in a thread; `check` must not see a slot mid-replacement
        config.logdir.mkdir(parents=True, exist_ok=True)

    def _env(self) -> dict[str, str]:
        c = self.config
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "WORKER_", "CHAOS_"))}
        env.update({
            "REDIS_URL": c.redis_url, "CONVEYOR_PREFIX": c.prefix, "CHAOS_QUEUE": c.queue,
            "CHAOS_LEDGER_URL": c.ledger_url, "CHAOS_LEDGER_KEY": c.ledger_key,
            "CONVEYOR_LEASE_MS": str(c.lease_ms), "CONVEYOR_SHUTDOWN_GRACE_S": "5",
            "CONVEYOR_SCHEDULER": "0", "CONVEYOR_STATS_INTERVAL_S": "0", "WORKER_HEALTH_PORT": "0",
            "CONVEYOR_LOG_FORMAT": "json", "CONVEYOR_RESTART_BACKOFF_MAX_S": "2",
            # A job may be running at two of the scenario's kills or freezes; the default policy (one
            # stall, then failed) would then fail it by design. The harness counts loss and double
            # runs, so the policy is kept out of its way (the stall policy has tests of its own).
            "CONVEYOR_MAX_STALLS": "20",
            concurrency_env_name(c.queue): str(c.concurrency), "PYTHONPATH": str(ROOT),
            "CHAOS_REPLICAS": str(c.replicas), "CHAOS_PARTITIONS": str(c.partitions),
        })
        env.update(c.extra_env)
        return env

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.started += 1
        path = self.config.logdir / f"worker-{self.started}.log"
        with open(path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "conveyor", "worker", APP], cwd=ROOT, env=self._env(),
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.logs[proc.pid] = path
        return proc

    def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.config.size)]

    def check(self) -> None:
        """Replace any worker that exited by itself (counted: a worker should never die on its own)."""
        with self._lock:
            for i, proc in enumerate(self.procs):
                if i not in self._stopped and proc.poll() is not None:
                    self.unexpected_exits.append(proc.returncode)
                    self.procs[i] = self._spawn()

    def kill(self, i: int) -> None:
        """SIGKILL slot i and start a replacement at once."""
        with self._lock:
            self.procs[i].kill()
            self.procs[i].wait(30)
            self._stopped.discard(i)
            self.killed += 1
            self.procs[i] = self._spawn()

    def _running(self, proc: subprocess.Popen[bytes]) -> bool:
        """The worker has started (its signal handlers are in place), or has exited."""
        if proc.poll() is not None:
            return True
        with contextlib.suppress(OSError):
            return '"worker started"' in self.logs[proc.pid].read_text(errors="replace")
        return False

    def pause(self, i: int) -> None:
        if i not in self._stopped and self.procs[i].poll() is None:
            self.procs[i].send_signal(signal.SIGSTOP)
            self._stopped.add(i)
            self.paused += 1

    def resume(self, i: int) -> None:
        if i in self._stopped:
            with contextlib.suppress(ProcessLookupError):
                self.procs[i].send_signal(signal.SIGCONT)
            self._stopped.discard(i)

    def resume_all(self) -> None:
        for i in list(self._stopped):
            self.resume(i)

    def stop(self, timeout: float = 60.0) -> list[int]:
        """SIGTERM every worker (graceful) once it has started, SIGKILL what is left after `timeout`;
        the exit codes (a replacement still importing would die of the signal's default action)."""
        self.resume_all()
        deadline = time.monotonic() + timeout
        while not all(self._running(p) for p in self.procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait(30))
        return codes

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(30)

    def log_count(self, text: str) -> int:
        total = 0
        for path in self.config.logdir.glob("worker-*.log"):
            with contextlib.suppress(OSError):
                total += path.read_text(errors="replace").count(text)
        return total

    def crash_kinds(self) -> Counter[str]:
        """"<loop>: <exception type>" of every crashed queue loop in the workers' logs."""
        kinds: Counter[str] = Counter()
        for path in self.config.logdir.glob("worker-*.log"):
            with contextlib.suppress(OSError):
                kinds.update(f"{a}: {b}" for a, b in _CRASH.findall(path.read_text(errors="replace")))
        return kinds


_CRASH = re.compile(r"loop crashed \((\w+): ([\w.]+)")
