"""Files that let processes share one embedded server: the state file, user leases and a lock.

A process is named by (pid, start time) so a recycled pid never passes for the process that wrote a
file. Leases are files, one per user, so a user killed with -9 leaves a lease whose process is gone,
and the next process to look prunes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def process_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (Linux), None when unknown or gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(b")") + 2:].split()
    return int(fields[19])


def process_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether `pid` runs and, when a start time was recorded, is still the same process."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _zombie(pid):
        return False
    if start_time is None:
        return True
    current = process_start_time(pid)
    return current is None or current == start_time


def _zombie(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return raw[raw.rindex(b")") + 2:].split()[0] == b"Z"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes; the kernel drops it when the holder dies, even by -9."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_private(path: Path, text: str) -> None:
    """Write atomically (temp file + rename) with mode 0600, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class ServerState:
    """What the process that started the server recorded about it."""

    pid: int
    start_time: int | None
    run_id: str
    url: str
    socket: str | None
    port: int
    version: str
    started_at: float

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ServerState | None:
        """The recorded state, or None when absent or unreadable (treated as stale)."""
        try:
            return cls.read(path)
        except StateFileError:
            return None

    @classmethod
    def read(cls, path: Path) -> ServerState | None:
        """The recorded state, None when there is none; StateFileError when the file holds something
        else (truncated, garbage, wrong types), so a caller can say so and recover from the server."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise StateFileError(f"{path} cannot be read: {exc}") from None
        try:
            raw: Any = json.loads(text)
        except (ValueError, RecursionError):
            raise StateFileError(f"{path} is not valid JSON") from None
        problem = _state_problem(raw)
        if problem:
            raise StateFileError(f"{path} does not describe a server: {problem}")
        return cls(**raw)


class StateFileError(ValueError):
    """The state file exists but does not hold a server's state (a partial write, an edit, a bad disk)."""


_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "pid": (int,), "start_time": (int, type(None)), "run_id": (str,), "url": (str,),
    "socket": (str, type(None)), "port": (int,), "version": (str,), "started_at": (int, float),
}


def _state_problem(raw: object) -> str | None:
    """What is wrong with the decoded state file, or None when every field has its type."""
    if not isinstance(raw, dict):
        return f"expected an object, got {type(raw).__name__}"
    if set(raw) != set(_STATE_TYPES):
        return f"expected the fields {', '.join(sorted(_STATE_TYPES))}"
    for name, types in _STATE_TYPES.items():
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, types):
            return f"field {name!r} has the wrong type ({type(value).__name__})"
    if raw["pid"] <= 0 or not raw["url"]:
        return "pid must be positive and url non-empty"
    return None


@dataclass(frozen=True, slots=True)
class Lease:
    """One user of the server: a file named after its owner and a random token."""

    path: Path
    pid: int
    start_time: int | None

    def alive(self) -> bool:
        return process_alive(self.pid, self.start_time)


def take_lease(lease_dir: Path) -> Lease:
    lease_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pid = os.getpid()
    start = process_start_time(pid)
    path = lease_dir / f"{pid}-{secrets.token_hex(4)}.lease"
    write_private(path, json.dumps({"pid": pid, "start_time": start}) + "\n")
    return Lease(path, pid, start)


def read_leases(lease_dir: Path) -> list[Lease]:
    leases = []
    for path in sorted(lease_dir.glob("*.lease")):
        try:
            raw = json.loads(path.read_text())
            leases.append(Lease(path, int(raw["pid"]), raw.get("start_time")))
        except (OSError, ValueError, TypeError, KeyError):
            leases.append(Lease(path, -1, None))  # unreadable: its writer died mid-way
    return leases


def prune_leases(lease_dir: Path) -> list[Lease]:
    """Remove leases whose process is gone; return the live ones."""
    live = []
    for lease in read_leases(lease_dir):
        if lease.alive():
            live.append(lease)
        else:
            lease.path.unlink(missing_ok=True)
    return live
