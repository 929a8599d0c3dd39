"""Interrupt `ChildGroup.start` (how `conveyor up` starts its worker and API) with a Ctrl-C at every
point where Python can run a signal handler, one point per attempt, and check after each that every
child the attempt forked is in the group, where `up`'s clean-up (`group.stop`) reaches it.

Points are counted as in interrupt_sweep.py: a profile function's 'call', 'return' and 'c_return'
events in children.py, the interrupts module and `subprocess` (generator frames skipped at their own
call and return). Run as a script: prints one JSON line per point that left a stray child and a last
line {"points": N, "after_fork": M}; exits 1 on any.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from conveyor.up.children import ChildGroup, ChildSpec

WATCHED = (f"{os.sep}conveyor{os.sep}up{os.sep}children.py", f"{os.sep}conveyor{os.sep}embedded{os.sep}interrupts.py")
SPECS = [ChildSpec("worker", ["sleep", "300"]), ChildSpec("api", ["sleep", "300"])]


class Interrupter:
    """A profile function that raises SIGINT at the `point`-th handler point of the watched code."""

    def __init__(self, point: int) -> None:
        self.point = point
        self.seen = 0
        self.where = ""
        self.forked = False

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if self.where or event not in ("call", "return", "c_return"):
            return
        if event != "c_return" and frame.f_code.co_flags & inspect.CO_GENERATOR:
            return
        name = frame.f_code.co_filename
        if not (name.endswith(WATCHED) or name == subprocess.__file__ or name == contextlib.__file__):
            return
        self.forked = self.forked or (event == "c_return" and getattr(arg, "__name__", "") == "fork_exec")
        self.seen += 1
        if self.seen == self.point:
            what = getattr(arg, "__name__", "") if event == "c_return" else ""
            self.where = f"{event} {what} in {frame.f_code.co_name} ({Path(name).name}:{frame.f_lineno})"
            signal.raise_signal(signal.SIGINT)


def live_children() -> set[int]:
    """Processes whose parent is this one and that have not exited (zombies aside)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def main() -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as when `up` starts its children
    failures = forked = 0
    point = 0
    while True:
        point += 1
        group = ChildGroup(SPECS, dict(os.environ))
        interrupter = Interrupter(point)
        interrupted = False
        sys.setprofile(interrupter)
        try:
            group.start()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            sys.setprofile(None)
        stray = live_children() - set(group.pids().values())
        group.stop(5.0)  # what `up` does on its way out
        for pid in stray:
            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        if not interrupter.where:  # past the last point: start ran to its end
            print(json.dumps({"points": point - 1, "after_fork": forked}), flush=True)
            return 1 if failures else 0
        forked += interrupter.forked
        problems = [f"children no stop reaches: {sorted(stray)}"] if stray else []
        if not interrupted:
            problems.append("the signal was lost: start returned")
        if problems:
            failures += 1
            print(json.dumps({"point": point, "at": interrupter.where, "left": problems}), flush=True)
            if failures >= 5:
                return 1


if __name__ == "__main__":
    sys.exit(main())
