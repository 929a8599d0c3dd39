"""`conveyor up [APP]`: the whole system on one machine with one command.

Starts (or reuses) the embedded Valkey unless REDIS_URL is set, makes the local admin key, runs the
worker service and the HTTP API as child processes pointed at that Redis, prints where everything is,
and on SIGINT/SIGTERM stops the children and then, if no other process uses it, the embedded server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated

import httpx
import typer
from redis.exceptions import RedisClusterException, RedisError

from conveyor.discovery import data_dir
from conveyor.embedded import EmbeddedHandle, acquire, resolve_redis_url
from conveyor.embedded.state import process_alive
from conveyor.errors import ConfigurationError, ConnectionFailedError, ConveyorError
from conveyor.ops.common import redis_failure
from conveyor.redis.connection import redact
from conveyor.settings import Settings
from conveyor.up.adminkey import admin_key_path, ensure_admin_key
from conveyor.up.children import ChildGroup, ChildSpec, child_env, conveyor_args

DEFAULT_APP = "conveyor.examples:app"
READY_TIMEOUT_S = 60.0
STOP_MARGIN_S = 10.0
INTERRUPTED_CODE = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


@dataclass(frozen=True, slots=True)
class Ports:
    api_host: str
    api_port: int
    health_port: int

    @property
    def api(self) -> str:
        host = f"[{self.api_host}]" if ":" in self.api_host else self.api_host  # an IPv6 address (`::`)
        return f"http://{host}:{self.api_port}"

    @property
    def health(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"


def resolve_ports(
    settings: Settings, api_host: str | None, api_port: int | None, health_port: int | None
) -> Ports:
    """Flags win over the children's own settings (CONVEYOR_API_*, WORKER_HEALTH_PORT) and defaults."""
    ports = Ports(
        api_host or settings.api_host,
        api_port if api_port is not None else settings.api_port,
        health_port if health_port is not None else settings.worker_health_port,
    )
    for value in (ports.api_port, ports.health_port):
        if not 1 <= value <= 65535:
            raise ConfigurationError(f"port {value} is out of range [1, 65535]")
    return ports


def children(app_path: str, url: str, ports: Ports) -> tuple[list[ChildSpec], dict[str, str]]:
    env = child_env(os.environ, {
        "REDIS_URL": url,
        "CONVEYOR_API_HOST": ports.api_host,
        "CONVEYOR_API_PORT": str(ports.api_port),
        "WORKER_HEALTH_HOST": os.environ.get("WORKER_HEALTH_HOST", "127.0.0.1"),
        "WORKER_HEALTH_PORT": str(ports.health_port),
    })
    specs = [
        ChildSpec("worker", conveyor_args("worker", app_path)),
        ChildSpec("api", conveyor_args("api", app_path)),
    ]
    return specs, env


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


class _Server:
    """The embedded server `up` keeps running (none with REDIS_URL): one that dies is started again
    on the same socket from its append-only file, so the children reconnect to it and carry on."""

    def __init__(self, handle: EmbeddedHandle | None) -> None:
        self.handle = handle
        self.moved = False  # it came back on a new address (loopback TCP) the children do not know

    def died(self) -> bool:
        h = self.handle
        return h is not None and not self.moved and not process_alive(h.pid, h.state.start_time)

    def revive(self, signals: _Signals) -> None:
        """Start the server again. A signal meanwhile (it may replay a large file for minutes) stops
        the new server and returns: the caller sees `signals.count` and stops the rest."""
        assert self.handle is not None
        old_url, old_pid = self.handle.url, self.handle.pid
        self.handle.release()  # cleans up what the dead server left behind
        try:
            with signals.interrupting():
                self.handle = acquire(self.handle.config)
        except KeyboardInterrupt:
            return  # `acquire` stopped the server it was starting; the old handle is released
        if self.handle.url != old_url:
            self.moved = True
            typer.echo("error: the embedded Valkey died and came back on a new address; stopping", err=True)
            return
        typer.echo(f"warning: the embedded Valkey (pid {old_pid}) died; restarted it (pid {self.handle.pid}) "
                   "from its append-only file", err=True)


def wait_ready(group: ChildGroup, ports: Ports, stop: _Signals, server: _Server) -> bool:
    """Until the worker's /health and the API's /api/health answer 200 (False if a child exits first).
    The server is watched meanwhile: the children cannot become ready on a dead one."""
    pending = {f"{ports.health}/health", f"{ports.api}/api/health"}
    deadline = time.monotonic() + READY_TIMEOUT_S
    while pending and time.monotonic() < deadline and not group.exited() and not stop.count:
        if server.died():
            server.revive(stop)
        if server.moved:
            return False
        pending = {url for url in pending if not _answers(url)}
        if pending:
            time.sleep(0.2)
    return not pending


def banner(url: str, handle: EmbeddedHandle | None, ports: Ports, key: str | None, key_file: str) -> str:
    where = "REDIS_URL"
    if handle is not None:
        where = f"embedded Valkey {handle.state.version}, data in {handle.config.data_dir}"
    lines = [
        "",
        "Conveyor is up.",
        f"  Redis      {redact(url)}  ({where})",
        f"  API        {ports.api}   docs {ports.api}/docs   health {ports.api}/api/health",
        f"  Worker     health {ports.health}/health   metrics {ports.health}/metrics",
    ]
    if importlib.util.find_spec("conveyor.dashboard") is not None:
        lines.append(f"  Dashboard  {ports.api}/dashboard")
    if key is not None:
        lines += [f"  Admin key  {key}", f"             (shown once; saved to {key_file}, mode 0600)"]
    else:
        lines.append(f"  Admin key  in {key_file}")
    lines += ["", "Press Ctrl-C to stop.", ""]
    return "\n".join(lines)


class _Signals:
    """Counts SIGINT/SIGTERM/SIGHUP and forwards each to the children exactly once: the first asks
    them to stop gracefully (the worker lets active jobs finish within its grace), the second makes
    them exit at once (the worker's own reading of a second signal)."""

    def __init__(self, group: ChildGroup) -> None:
        self.group = group
        self.count = 0
        self._raising = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count <= 2:
            self.group.signal(signal.SIGTERM)
        else:  # a third: nothing is left to ask politely
            self.group.signal(signal.SIGKILL)
        if self._raising:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def interrupting(self) -> Iterator[None]:
        """Within the block a signal also raises KeyboardInterrupt (after counting and forwarding
        it), to cut short a wait that knows nothing of `count`."""
        self._raising = True
        try:
            yield
        finally:
            self._raising = False

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal went away
            signal.signal(sig, self)

    @property
    def forced(self) -> bool:
        return self.count > 1


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"on {signal.Signals(-code).name}"
    return f"code {code}"


def run_up(app_path: str, settings: Settings, ports: Ports) -> int:
    url, handle = resolve_redis_url(settings)
    server = _Server(handle)
    group: ChildGroup | None = None
    try:
        key_file = admin_key_path(str(data_dir(settings.data_dir)))
        key = _admin_key(url, settings.prefix, key_file)
        specs, env = children(app_path, url, ports)
        group = ChildGroup(specs, env)
        signals = _Signals(group)
        group.start()  # before the handlers, so every forwarded signal reaches the children
        signals.install()
        ready = wait_ready(group, ports, signals, server)
        if not group.exited() and not signals.count and not server.moved:
            if not ready:
                typer.echo(f"warning: the worker or the API is not healthy after {READY_TIMEOUT_S:.0f}s",
                           err=True)
            typer.echo(banner(url, server.handle, ports, key, str(key_file)))
        elif key is not None:
            typer.echo(f"admin key saved to {key_file}", err=True)
        supervise(group, signals, server)
        crashed = {} if signals.count else group.exited()
        if not signals.count:  # a child exited by itself: stop the rest (a signal was forwarded already)
            group.signal(signal.SIGTERM)
        codes = wait_children(group, signals, settings.shutdown_grace_s + STOP_MARGIN_S)
        if crashed:
            typer.echo(f"error: {', '.join(f'{n} exited ({describe_exit(c)})' for n, c in crashed.items())}; "
                       "stopped the rest", err=True)
            return 1
        typer.echo(f"stopped: {', '.join(f'{n} ({describe_exit(c)})' for n, c in sorted(codes.items()))}")
        return 0 if signals.count else 1
    finally:
        if group is not None:
            group.stop(STOP_MARGIN_S)
        if server.handle is not None and server.handle.release():
            typer.echo("embedded Valkey stopped (data kept).")


class StartFailed(Exception):
    """`up` cannot start: one line for the operator (exit status 1), nothing left running."""


def _admin_key(url: str, prefix: str, key_file: Path) -> str | None:
    """The admin key (see `ensure_admin_key`); the first call to Redis, so an unusable server or an
    unwritable key file is said here in one line rather than with a traceback."""
    try:
        return ensure_admin_key(url, prefix, key_file)
    except (RedisError, RedisClusterException, ConnectionFailedError) as exc:
        raise StartFailed(redis_failure(exc, url) or str(exc)) from None
    except OSError as exc:
        raise StartFailed(f"cannot write the admin key to {key_file}: {exc}") from None


def wait_children(group: ChildGroup, signals: _Signals, grace_s: float) -> dict[str, int]:
    """Up to `grace_s` for the (signalled) children to exit; a second signal meanwhile cuts the wait
    to STOP_MARGIN_S. Whatever is left then is killed. Returns the exit codes."""
    if not group.wait(grace_s, stop_when=lambda: signals.forced):
        group.wait(STOP_MARGIN_S)
    return group.finish(0.0)


def supervise(group: ChildGroup, signals: _Signals, server: _Server) -> None:
    """Until a signal, a child's exit or the server coming back on an address the children do not
    know; an embedded server that dies meanwhile is started again."""
    while True:
        group.wait(float("inf"), stop_when=lambda: bool(signals.count or group.exited()) or server.died())
        if signals.count or group.exited() or server.moved or server.handle is None:
            return
        server.revive(signals)


def up_command(
    app_path: Annotated[str, typer.Argument(metavar="[APP]", help="module:attribute of your app "
                                            f"(default {DEFAULT_APP}, the example app).")] = DEFAULT_APP,
    api_host: Annotated[str | None, typer.Option("--api-host", help="(env CONVEYOR_API_HOST; "
                                                 "default 127.0.0.1)")] = None,
    api_port: Annotated[int | None, typer.Option("--api-port", help="(env CONVEYOR_API_PORT; "
                                                 "default 8000)")] = None,
    health_port: Annotated[int | None, typer.Option("--health-port", help="Worker /health and /metrics "
                                                    "(env WORKER_HEALTH_PORT; default 3002)")] = None,
) -> None:
    """Run everything on this machine: embedded Valkey (unless REDIS_URL is set), worker service and API."""
    _interrupt_while_starting()
    try:
        settings = Settings.from_env()
        code = run_up(app_path, settings, resolve_ports(settings, api_host, api_port, health_port))
    except ConveyorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except StartFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("error: interrupted while starting; stopped what had started", err=True)
        raise typer.Exit(INTERRUPTED_CODE) from None
    raise typer.Exit(code)


def _interrupt_while_starting() -> None:
    """Until the children run (and `_Signals` takes over), SIGTERM and SIGHUP interrupt `up` as
    Ctrl-C does, so the embedded server it started or leased is stopped or released; their default
    action ended `up` on the spot and left the server running. The first signal ignores the next
    ones, so a second Ctrl-C cannot cut the clean-up short."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
