"""Ctrl-C, SIGTERM or SIGHUP at any moment of `acquire` (what `conveyor up` does first) leaves no
embedded server running, no lease and no lock behind once the process exits.

A signal sent from outside lands where the scheduler happens to put it, so `conveyor up` lost its
server only now and then (a Ctrl-C just after the server's fork, before `Popen` returned). The sweep
(tests/embedded/interrupt_sweep.py) raises the signal at each point in turn, in a process of its own
running `up`'s signal handlers, and checks after each what the process's exit would leave.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.embedded.server import looks_like_server
from conveyor.embedded.state import process_alive
from tests.embedded.conftest import Holder, clean_env

pytestmark = pytest.mark.timeout(900)  # a few hundred servers started and stopped, one by one

SWEEP = Path(__file__).with_name("interrupt_sweep.py")


def sweep(mode: str, data_dir: Path) -> dict[str, int]:
    """Run the sweep; its summary line, or a failure naming the points that left something."""
    done = subprocess.run(
        [sys.executable, str(SWEEP), mode, str(data_dir)], env=clean_env(data_dir),
        capture_output=True, text=True, timeout=850,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, f"left behind:\n{done.stdout}\n{done.stderr[-3000:]}"
    summary: dict[str, int] = json.loads(lines[-1])
    return summary


def kill_servers_in(data_dir: Path) -> None:
    """What a failed run left: server binaries running in `data_dir` (never any other server)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        pid = int(entry.name)
        if cwd == data_dir.resolve() and looks_like_server(pid) and process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_an_interrupt_at_any_point_of_starting_the_server_stops_it(tmp_path: Path) -> None:
    """A KeyboardInterrupt after the fork but before `Popen` returned lost the only reference to the
    new server (in a session of its own, named by no state file): it ran on after `up` exited."""
    data_dir = tmp_path / "data"
    try:
        summary = sweep("start", data_dir)
        assert summary["after_fork"] > 0, summary  # the window between the fork and the lease was swept
    finally:
        kill_servers_in(data_dir)


def test_an_interrupt_at_any_point_of_leasing_a_shared_server_leaves_no_lease(
    data_dir: Path, holders: list[Holder]
) -> None:
    """A KeyboardInterrupt between taking the lease and making the handle that drops it left a lease
    that kept the shared server alive for as long as the interrupted process lived."""
    holder = Holder(data_dir)
    holders.append(holder)
    assert holder.info["started"]
    try:
        summary = sweep("reuse", data_dir)
        assert summary["points"] > 0, summary
        assert holder.release()  # the last user: no lease of the sweep's kept the server
    finally:
        kill_servers_in(data_dir)
