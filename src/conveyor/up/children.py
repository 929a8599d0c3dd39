"""The child processes of `conveyor up`: started in one process group of their own, stopped together.

The children get a process group apart from the terminal's, so a Ctrl-C reaches them once (forwarded
by `up`) rather than twice (which the worker service would read as "force exit"). On Linux each child
also gets SIGTERM if `up` itself dies, even by kill -9, so no orphan keeps a port or a lease.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from conveyor.embedded.interrupts import deferred_interrupts

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str
    args: list[str]


def conveyor_args(*args: str) -> list[str]:
    """`python -m conveyor ...` with the interpreter running `up`, so the same install is used."""
    return [sys.executable, "-m", "conveyor", *args]


class ChildGroup:
    """Start, watch, signal and stop a set of child processes as one group."""

    def __init__(self, specs: Sequence[ChildSpec], env: Mapping[str, str]) -> None:
        self.specs = list(specs)
        self.env = dict(env)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pgid: int | None = None

    def start(self) -> None:
        """Start every child. A Ctrl-C meanwhile is held back until the child being started is in
        the group (embedded/interrupts.py): raised after its fork but before `Popen` returned, it
        would leave a child that no stop of the group reaches."""
        for spec in self.specs:
            with deferred_interrupts():
                proc = subprocess.Popen(
                    spec.args, env=self.env, stdin=subprocess.DEVNULL,
                    process_group=0 if self.pgid is None else self.pgid,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
                if self.pgid is None:
                    self.pgid = proc.pid
                self.procs[spec.name] = proc

    def exited(self) -> dict[str, int]:
        """Children that have exited, with their return codes."""
        return {name: code for name, p in self.procs.items() if (code := p.poll()) is not None}

    def all_exited(self) -> bool:
        return len(self.exited()) == len(self.procs)

    def signal(self, signum: int) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    def wait(self, timeout: float, stop_when: Callable[[], bool] = lambda: False) -> bool:
        """Wait until every child has exited (True) or `timeout` passes or `stop_when()` holds."""
        deadline = time.monotonic() + timeout
        while not self.all_exited():
            if time.monotonic() > deadline or stop_when():
                return False
            time.sleep(0.05)
        return True

    def finish(self, grace_s: float) -> dict[str, int]:
        """Up to `grace_s` for the children (already signalled) to exit, then SIGKILL; the exit codes."""
        if not self.wait(grace_s):
            self.signal(signal.SIGKILL)
            self.wait(10.0)
        return self.exited()

    def stop(self, grace_s: float) -> dict[str, int]:
        """SIGTERM once, then `finish`."""
        self.signal(signal.SIGTERM)
        return self.finish(grace_s)

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}


def child_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def terminal_pgid() -> int:
    return os.getpgrp()
