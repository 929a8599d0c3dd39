"""One valkey-server process: start it, wait until it answers, ask who it is, stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis as syncredis

from conveyor.embedded.config import EmbeddedConfig, Endpoint, server_binary, server_config
from conveyor.embedded.state import process_alive, process_start_time, write_private
from conveyor.errors import EmbeddedServerError


def _client(url: str, timeout: float) -> syncredis.Redis:
    return syncredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
    )


def probe(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """INFO server of the server at `url` plus its data dir; None when nothing answers, or while it
    is still loading its append-only file (see `is_loading`)."""
    try:
        with _client(url, timeout) as client:
            client.ping()
            info: dict[str, Any] = client.info("server")
            info["dir"] = client.config_get("dir").get("dir", "")
            return info
    except (syncredis.ConnectionError, syncredis.TimeoutError, syncredis.ResponseError, OSError):
        return None  # BusyLoadingError is a ConnectionError


def is_loading(url: str, timeout: float = 2.0) -> bool:
    """Whether the server answers LOADING: alive and making progress, however long its file is."""
    try:
        with _client(url, timeout) as client:
            client.ping()
    except syncredis.BusyLoadingError:
        return True
    except (syncredis.ConnectionError, syncredis.TimeoutError, syncredis.ResponseError, OSError):
        return False
    return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(config: EmbeddedConfig, endpoint: Endpoint) -> subprocess.Popen[bytes]:
    """Start valkey-server in a session of its own, so a Ctrl-C aimed at its users never reaches it:
    it stops when its last user sends SHUTDOWN."""
    write_private(config.conf_file, server_config(config, endpoint))
    if endpoint.socket:
        Path(endpoint.socket).unlink(missing_ok=True)
    log = open(config.log_file, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(
            [server_binary(), str(config.conf_file)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, close_fds=True, cwd=config.data_dir,
        )
    except OSError as exc:
        raise EmbeddedServerError(f"could not run valkey-server: {exc}") from exc
    finally:
        log.close()


def wait_ready(proc: subprocess.Popen[bytes], url: str, config: EmbeddedConfig) -> dict[str, Any]:
    """Block until the new server answers PING; raise with its log if it dies or stays silent for the
    start timeout. Loading a long append-only file is progress, not silence: no time limit."""
    deadline = time.monotonic() + config.start_timeout_s
    delay = 0.01
    log_size = _size(config.log_file)
    while True:
        if proc.poll() is not None:
            raise EmbeddedServerError(
                f"valkey-server exited with code {proc.returncode} while starting; "
                f"log {config.log_file}:\n{log_tail(config.log_file)}"
            )
        info = probe(url)
        if info is not None:
            return info
        # Progress: the server answers LOADING, or it is still writing its log (while it replays a
        # long file on a loaded machine it may not even accept a connection in time).
        size = _size(config.log_file)
        if size != log_size or is_loading(url):
            log_size = size
            deadline = time.monotonic() + config.start_timeout_s
        elif time.monotonic() > deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    stop_process(proc.pid, process_start_time(proc.pid), wait=proc.wait)
    raise EmbeddedServerError(
        f"valkey-server did not answer within {config.start_timeout_s:g}s; "
        f"log {config.log_file}:\n{log_tail(config.log_file)}"
    )


def shutdown(url: str, pid: int, start_time: int | None, timeout: float = 30.0) -> None:
    """SHUTDOWN flushes and fsyncs the append-only file before the server exits."""
    try:
        with _client(url, timeout) as client:
            client.execute_command("SHUTDOWN")
    except (syncredis.ConnectionError, syncredis.TimeoutError):
        pass  # the server closes the connection as it exits: the expected reply
    except syncredis.ResponseError as exc:
        raise EmbeddedServerError(f"valkey-server refused to shut down: {exc}") from exc
    if not wait_gone(pid, start_time, timeout):
        raise EmbeddedServerError(f"valkey-server (pid {pid}) did not exit within {timeout:.0f}s")


def wait_gone(pid: int, start_time: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid, start_time):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stop_process(pid: int, start_time: int | None, wait: Callable[[], Any] | None = None) -> None:
    """Kill a server that no longer answers (hung or half-started); only if it is still that process."""
    if process_alive(pid, start_time):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if wait is not None:
        wait()
    wait_gone(pid, start_time, 10.0)


def reap(proc: subprocess.Popen[bytes]) -> None:
    """Collect a child that has exited (call once it is gone or a zombie). Not `proc.wait()`: an
    interrupt landing inside an earlier `proc.poll()`, just after Popen took its internal lock, leaves
    that lock taken, and `wait()` would then block for ever."""
    if proc.returncode is None:
        with contextlib.suppress(ChildProcessError):
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)


def looks_like_server(pid: int) -> bool:
    """Whether `pid` runs a valkey/redis server binary (guards against recycled pids)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"valkey-server" in cmdline or b"redis-server" in cmdline
