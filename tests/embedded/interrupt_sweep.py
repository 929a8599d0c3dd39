"""Interrupt `acquire` at every point where Python can run a signal handler, one point per attempt,
and check after each what the process's exit would leave behind: no server, lease or held lock.

Python runs a signal's handler only at some instructions: a function's start, after each call returns
and at the back of a loop. A profile function sees the first two as its 'call', 'return' and
'c_return' events; at the N-th of them (in the embedded code, `subprocess` and `contextlib`, the code
an interrupt can leave half-done) attempt N raises a real signal, whose handler (`up`'s) then runs
right there, or later where the code holds signals back. Generator frames are skipped at their own
'call'/'return' events: a profile function's error there unwinds past the generator's handlers,
which a signal never does.

Run as a script: `python interrupt_sweep.py start|reuse DATA_DIR`. `start`: no server runs, each
attempt starts one. `reuse`: another process holds the server, each attempt leases it. Prints one
JSON line per point that left something behind and a last line {"points": N, "after_fork": M} (M
of the points came after the server's fork); exits 1 on any.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import inspect
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from conveyor.embedded import EmbeddedConfig, acquire
from conveyor.embedded.server import looks_like_server
from conveyor.embedded.state import ServerState, process_alive
from conveyor.up.command import _interrupt_while_starting

EMBEDDED = f"{os.sep}conveyor{os.sep}embedded{os.sep}"
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
MAX_FAILURES = 5


class Interrupter:
    """A profile function that raises `signum` at the `point`-th handler point of the watched code."""

    def __init__(self, point: int, signum: int) -> None:
        self.point = point
        self.signum = signum
        self.seen = 0
        self.where = ""
        self.forked = False  # whether the point came after the server's fork

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if self.where or event not in ("call", "return", "c_return"):
            return
        if event != "c_return" and frame.f_code.co_flags & inspect.CO_GENERATOR:
            return
        if not watched(frame):
            return
        self.forked = self.forked or (event == "c_return" and getattr(arg, "__name__", "") == "fork_exec")
        self.seen += 1
        if self.seen == self.point:
            what = getattr(arg, "__name__", "") if event == "c_return" else ""
            self.where = (f"{event} {what} in {frame.f_code.co_name} "
                          f"({Path(frame.f_code.co_filename).name}:{frame.f_lineno})")
            signal.raise_signal(self.signum)


def watched(frame: FrameType) -> bool:
    """The embedded code, `subprocess`, and the context managers the embedded code enters."""
    name = frame.f_code.co_filename
    if name == contextlib.__file__:
        return frame.f_back is not None and EMBEDDED in frame.f_back.f_code.co_filename
    return EMBEDDED in name or name == subprocess.__file__


def servers(config: EmbeddedConfig) -> list[int]:
    """Live servers (zombies aside) of this data dir: started with its valkey.conf, or (once the
    server has renamed its process title) a server binary running in it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        pid = int(entry.name)
        ours = os.fsencode(config.conf_file) in cmdline or (cwd == config.data_dir and looks_like_server(pid))
        if ours and process_alive(pid):
            found.append(pid)
    return found


def lock_free(config: EmbeddedConfig) -> bool:
    fd = os.open(config.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def left_behind(config: EmbeddedConfig, mode: str, held: ServerState | None) -> list[str]:
    problems = []
    ours = [p.name for p in config.lease_dir.glob("*.lease") if p.name.startswith(f"{os.getpid()}-")]
    if ours:
        problems.append(f"leases {ours}")
    if not lock_free(config):
        problems.append("the lock is still held")
    running = servers(config)
    if mode == "start":
        if running:
            problems.append(f"servers running: {running}")
            for pid in running:
                os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)  # a child of this process: collect it
        if config.state_file.exists():
            problems.append("a state file")
    elif held is None or running != [held.pid] or ServerState.load(config.state_file) != held:
        problems.append(f"the held server changed: {running}")
    return problems


def main() -> int:
    mode, data_dir = sys.argv[1], Path(sys.argv[2])
    config = EmbeddedConfig(data_dir, start_timeout_s=60.0)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    held = ServerState.load(config.state_file) if mode == "reuse" else None
    failures = forked = 0
    point = 0
    while True:
        point += 1
        _interrupt_while_starting()  # `up`'s handlers; the one that fires ignores the next signals
        interrupter = Interrupter(point, SIGNALS[point % len(SIGNALS)])
        handle = None
        sys.setprofile(interrupter)
        try:
            handle = acquire(config)
        except KeyboardInterrupt:
            pass
        finally:
            sys.setprofile(None)
        if not interrupter.where:  # past the last point: acquire ran to its end
            assert handle is not None
            handle.release()
            print(json.dumps({"points": point - 1, "after_fork": forked}), flush=True)
            return 1 if failures else 0
        forked += interrupter.forked
        lost = ["the signal was lost: acquire returned"] if handle is not None else []
        atexit._run_exitfuncs()  # what the process's exit does: release a handle no one holds
        problems = lost + left_behind(config, mode, held)
        if problems:
            failures += 1
            print(json.dumps({"point": point, "at": interrupter.where, "left": problems}), flush=True)
            if failures >= MAX_FAILURES:
                return 1
            for path in config.lease_dir.glob(f"{os.getpid()}-*.lease"):
                path.unlink(missing_ok=True)
            if mode == "start":
                config.state_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
