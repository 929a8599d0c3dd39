"""Share one embedded Valkey between the Conveyor processes of a data directory.

`acquire` finds the running server (state file + pid check + PING) or starts one, and takes a lease;
`EmbeddedHandle.release` drops the lease and, when no live lease is left, shuts the server down.
Every decision is made under a file lock, which the kernel releases when its holder dies; leases of
processes that died (even by kill -9) are pruned, and a crashed server's files are cleaned up.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shlex
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

from conveyor.embedded.config import EmbeddedConfig, Endpoint, free_port
from conveyor.embedded.interrupts import deferred_interrupts
from conveyor.embedded.server import (
    is_loading,
    looks_like_server,
    probe,
    reap,
    shutdown,
    spawn,
    stop_process,
    wait_ready,
)
from conveyor.embedded.state import (
    Lease,
    ServerState,
    StateFileError,
    locked,
    process_alive,
    process_start_time,
    prune_leases,
    take_lease,
)
from conveyor.errors import EmbeddedServerError

logger = logging.getLogger(__name__)


class EmbeddedHandle:
    """This process's use of the embedded server. `release()` (or leaving the `with`) ends it."""

    def __init__(
        self, config: EmbeddedConfig, state: ServerState, lease: Lease, proc: subprocess.Popen[bytes] | None
    ) -> None:
        self.config = config
        self.state = state
        self.lease = lease
        self.started = proc is not None
        self._proc = proc
        self._released = False
        self._guard = threading.Lock()
        atexit.register(self.release)

    @property
    def url(self) -> str:
        return self.state.url

    @property
    def pid(self) -> int:
        return self.state.pid

    def __repr__(self) -> str:
        return f"EmbeddedHandle(pid={self.pid}, data_dir='{self.config.data_dir}', started={self.started})"

    def release(self) -> bool:
        """Drop this lease; stop the server if no other live process uses it. True if it was stopped."""
        with self._guard:
            if self._released or os.getpid() != self.lease.pid:
                return False  # a forked child inherits this handle (and its atexit hook) but not the lease
            self._released = True
        atexit.unregister(self.release)
        with locked(self.config.lock_file):
            self.lease.path.unlink(missing_ok=True)
            if prune_leases(self.config.lease_dir):
                return False
            current = read_state(self.config) or self._answering()
            if current is None or current.run_id != self.state.run_id:
                return False  # already replaced by another server: not ours to stop
            shutdown(current.url, current.pid, current.start_time)
            if self._proc is not None:
                self._proc.wait()
            _clean_files(self.config)
            logger.info("embedded valkey stopped (pid %d)", current.pid)
            return True

    def forget(self) -> None:
        """Give up this handle without touching the server (its starter stops it, or others use it)."""
        with self._guard:
            self._released = True
        atexit.unregister(self.release)

    def _answering(self) -> ServerState | None:
        """With no readable state file: this handle's server, if it still answers on its address."""
        info = probe(self.state.url)
        if info is None or Path(info["dir"]).resolve() != self.config.data_dir:
            return None
        return self.state if info["run_id"] == self.state.run_id else None

    def __enter__(self) -> EmbeddedHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def acquire(config: EmbeddedConfig) -> EmbeddedHandle:
    """Reuse the server running for `config.data_dir`, or start one; either way take a lease."""
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with locked(config.lock_file):
        prune_leases(config.lease_dir)
        state = find_running(config)
        if state is None:
            return _start(config)
        if config.fsync == "always":
            _upgrade_fsync(state.url)
        return _lease(config, state)


def _lease(config: EmbeddedConfig, state: ServerState) -> EmbeddedHandle:
    """Take a lease on a running server and the handle that drops it, as one step: a Ctrl-C between
    the two left a lease that kept the server alive for as long as this process lived."""
    lease = handle = None
    try:
        with deferred_interrupts():
            lease = take_lease(config.lease_dir)
            handle = EmbeddedHandle(config, state, lease, None)
    except BaseException:
        if handle is not None:
            handle.forget()
        if lease is not None:
            lease.path.unlink(missing_ok=True)
        raise
    return handle


def find_running(config: EmbeddedConfig) -> ServerState | None:
    """The live server of this data dir, or None after cleaning up what a dead one left behind."""
    state = read_state(config)
    endpoint = None if state else _configured_endpoint(config)
    url = state.url if state else endpoint.url if endpoint else None
    if url is not None:
        info = probe(url)
        if info is not None and Path(info["dir"]).resolve() == config.data_dir:
            if state is not None and info["run_id"] == state.run_id:
                return state
            return _adopt(config, url, info, state, endpoint)
    if state is not None and process_alive(state.pid, state.start_time) and looks_like_server(state.pid):
        # Alive but silent: still starting or hung. Give it the start timeout, then kill it.
        deadline = time.monotonic() + config.start_timeout_s
        while process_alive(state.pid, state.start_time):
            info = probe(state.url)
            if info is not None and info["run_id"] == state.run_id:
                return state
            if is_loading(state.url):
                deadline = time.monotonic() + config.start_timeout_s  # progress: keep waiting
            elif time.monotonic() > deadline:
                break
            time.sleep(0.1)
        logger.warning("embedded valkey (pid %d) does not answer; killing it", state.pid)
        stop_process(state.pid, state.start_time)
    _refuse_foreign_server(config)
    if state is not None:
        logger.warning("embedded valkey (pid %d) is gone; cleaning up its stale state", state.pid)
    _clean_files(config)
    return None


def read_state(config: EmbeddedConfig) -> ServerState | None:
    """The state file's server, or None when there is none or it is unreadable; an unreadable file is
    reported here, and the callers recover from the server itself (then rewrite or remove the file)."""
    try:
        return ServerState.read(config.state_file)
    except StateFileError as exc:
        logger.warning("embedded valkey state file ignored: %s; recovering it from the running server", exc)
        return None


def _configured_endpoint(config: EmbeddedConfig) -> Endpoint | None:
    """Where a server of this data dir listens when no state file says: its socket, or the loopback
    port and password of the valkey.conf it was started with."""
    if config.use_socket:
        return Endpoint(socket=str(config.socket_path))
    try:
        settings = dict(
            (words[0], words[1]) for line in config.conf_file.read_text().splitlines()
            if len(words := shlex.split(line)) == 2
        )
        return Endpoint(port=int(settings["port"]), password=settings.get("requirepass"))
    except (OSError, ValueError, KeyError):
        return None


def _adopt(
    config: EmbeddedConfig, url: str, info: dict[str, object], old: ServerState | None, endpoint: Endpoint | None
) -> ServerState:
    """A server of this data dir answers but the state file does not describe it: record it again."""
    pid = int(str(info["process_id"]))
    state = ServerState(
        pid=pid, start_time=process_start_time(pid), run_id=str(info["run_id"]), url=url,
        socket=old.socket if old else endpoint.socket if endpoint else None,
        port=old.port if old else endpoint.port if endpoint else 0,
        version=str(info.get("valkey_version") or info.get("redis_version") or ""), started_at=time.time(),
    )
    state.save(config.state_file)
    return state


def _refuse_foreign_server(config: EmbeddedConfig) -> None:
    """Two servers on one append-only file would corrupt it: refuse if the pid file names a live one."""
    try:
        pid = int(config.pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    if process_alive(pid) and looks_like_server(pid):
        raise EmbeddedServerError(
            f"a valkey-server (pid {pid}) still runs on {config.data_dir} but cannot be reached; "
            "stop it before starting Conveyor again"
        )


def _clean_files(config: EmbeddedConfig) -> None:
    for path in (config.state_file, config.socket_path, config.pid_file):
        path.unlink(missing_ok=True)


def _start(config: EmbeddedConfig) -> EmbeddedHandle:
    """Start the server and lease it (the caller holds the lock). An interrupt at any moment, from
    the fork on, stops it: it runs in a session of its own and, until a lease names it, nobody else
    would ever stop it."""
    endpoint = Endpoint(socket=str(config.socket_path)) if config.use_socket else Endpoint.tcp(free_port())
    proc: subprocess.Popen[bytes] | None = None
    born: int | None = None  # the server's start time: no other process that takes its pid has it
    lease: Lease | None = None
    handle: EmbeddedHandle | None = None
    ready = False
    try:
        with deferred_interrupts():  # from the fork until `proc` names the server
            proc = spawn(config, endpoint)
            born = process_start_time(proc.pid)
        info = wait_ready(proc, endpoint.url, config)  # an interrupt here stops the loading server
        ready = True
        with deferred_interrupts():  # recorded and leased, or stopped: never in between
            state = ServerState(
                pid=proc.pid, start_time=born, run_id=str(info["run_id"]),
                url=endpoint.url, socket=endpoint.socket, port=endpoint.port,
                version=str(info.get("valkey_version") or info.get("redis_version") or ""),
                started_at=time.time(),
            )
            state.save(config.state_file)
            lease = take_lease(config.lease_dir)
            handle = EmbeddedHandle(config, state, lease, proc)
    except BaseException:
        with deferred_interrupts():  # a second Ctrl-C must not cut the stop short
            if handle is not None:
                handle.forget()
            if lease is not None:
                lease.path.unlink(missing_ok=True)
            if proc is not None:
                _stop_started(proc, born, endpoint.url if ready else None)
            _clean_files(config)
        raise
    logger.info("embedded valkey %s started (pid %d) in %s", state.version, proc.pid, config.data_dir)
    return handle


def _stop_started(proc: subprocess.Popen[bytes], start_time: int | None, url: str | None) -> None:
    """Stop a server this process started and then gave up on: SHUTDOWN once it answers (it flushes
    its file), a kill while it still loads (or if SHUTDOWN fails). Nothing once it has been
    collected (`wait_ready` stops a server that stays silent): its pid may name another process now."""
    if proc.returncode is not None:
        return
    if url is not None:
        with contextlib.suppress(EmbeddedServerError):
            shutdown(url, proc.pid, start_time)
    stop_process(proc.pid, start_time)
    reap(proc)


def _upgrade_fsync(url: str) -> None:
    """A user asking for appendfsync always gets it; a laxer request never weakens a running server."""
    import redis as syncredis

    with syncredis.Redis.from_url(url, decode_responses=True, socket_timeout=5) as client:
        client.config_set("appendfsync", "always")
