"""How `conveyor api` runs uvicorn: limits for slow or greedy clients, and several processes on one port.

uvicorn has no deadline for a request's headers or body: a client sending one byte a second holds
its connection (and, once headers are in, a task) for as long as it likes. The protocol classes
below add both deadlines (`CONVEYOR_API_HEADER_TIMEOUT_S`, `CONVEYOR_API_BODY_TIMEOUT_S`): past
them the connection is closed. A deadline is armed when a connection opens or a request's first byte
arrives, replaced by the body deadline when the headers are complete, and dropped once the request
is fully read (a long-poll or an event stream then runs as long as it needs to). uvicorn's own
settings cover the rest: idle keep-alive connections close after `CONVEYOR_API_KEEPALIVE_S`, and
past `CONVEYOR_API_MAX_CONNECTIONS` connections or requests new requests get 503 at once.

A peer that stops taking data (it stopped reading, or vanished without a FIN: a laptop closed, a NAT
that forgot the flow) would hold an event stream or a long-poll, and its per-key slot, until the
system's TCP retransmissions give up, about 15 minutes. Each accepted socket gets
`TCP_USER_TIMEOUT` = `CONVEYOR_API_SEND_TIMEOUT_S` (sent data unacknowledged, or a receive window
shut, that long: the kernel ends the connection) and TCP keep-alive probes after as long idle (a
long-poll sends nothing while it waits); uvicorn then sees the connection lost and the stream or
wait ends and gives its slot back.

`--workers N` runs N processes that share the listening socket (uvicorn's supervisor restarts one
that dies). Each process has its own event reader (api/hub.py) and per-key caps; rate limits live
in Redis, so they hold across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed (the `fast` extra): uvicorn uses h11
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from conveyor.settings import Settings

logger = logging.getLogger(__name__)
APP_ENV = "CONVEYOR_API_APP"  # module:attribute of the Conveyor app, for worker processes
MAX_HEAD_BYTES = 64 * 1024  # a request's target and headers, with either protocol
_HEAD_TOO_LARGE = b"request line and headers are over the size limit"


class _Deadline:
    """One timer per connection that closes the transport when it fires."""

    def __init__(self) -> None:
        self.handle: asyncio.TimerHandle | None = None
        self.kind = ""

    def arm(self, loop: asyncio.AbstractEventLoop, seconds: float, kind: str, transport: Any) -> None:
        self.disarm()
        if seconds > 0:
            self.kind = kind
            self.handle = loop.call_later(seconds, self._expire, transport)

    def disarm(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
            self.kind = ""

    def _expire(self, transport: Any) -> None:
        self.handle = None
        if not transport.is_closing():
            logger.info("closing a connection that did not send its request %s in time", self.kind)
            transport.close()


def _timeouts(config: uvicorn.Config) -> tuple[float, float, float]:
    state = getattr(config, "conveyor_timeouts", None)
    return state if state is not None else (10.0, 30.0, 30.0)


def bound_unacknowledged(transport: Any, seconds: float) -> None:
    """Have the kernel end the connection once data sent on it stays unacknowledged (or the peer's
    window stays shut) for `seconds`, and probe it after as long idle. Where the options do not exist
    (not Linux, not TCP) nothing changes."""
    sock = transport.get_extra_info("socket")
    if seconds <= 0 or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    whole = max(1, round(seconds))
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), max(1, round(seconds * 1000))),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), whole),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), max(1, whole // 3)),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 3),
    ]
    for level, name, value in options:
        if name is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, name, value)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request whose head is over MAX_HEAD_BYTES."""


def _guarded(base: type[Any]) -> type[Any]:
    """`base` (uvicorn's httptools protocol) with header and body deadlines, and a bound on the size
    of a request's target and headers (httptools has none; h11's is set in `config_options`)."""

    class Guarded(base):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            bound_unacknowledged(transport, _timeouts(self.config)[2])
            self._deadline = _Deadline()
            self._deadline.arm(self.loop, _timeouts(self.config)[0], "headers", transport)
            self._head_bytes = 0
            self._refused = False

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            if self._deadline.handle is None:
                self._deadline.arm(self.loop, _timeouts(self.config)[0], "headers", self.transport)

        def on_url(self, url: bytes) -> None:
            self._count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_head(len(name) + len(value))
            super().on_header(name, value)

        def _count_head(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > MAX_HEAD_BYTES and not self._refused:
                self._refused = True  # nothing more is parsed on this connection
                self.transport.write(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_HEAD_TOO_LARGE), _HEAD_TOO_LARGE)
                )
                self.transport.close()
                raise _HeadTooLarge  # the parser stops; uvicorn's 400 for it is not sent (below)

        def send_400_response(self, msg: str) -> None:
            if not self._refused:
                super().send_400_response(msg)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._deadline.arm(self.loop, _timeouts(self.config)[1], "body", self.transport)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._deadline.disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._deadline.disarm()
            super().connection_lost(exc)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"  # picklable for worker processes
    return Guarded


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines (read from h11's connection state)."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        bound_unacknowledged(transport, _timeouts(self.config)[2])
        self._deadline = _Deadline()
        self._deadline.arm(self.loop, _timeouts(self.config)[0], "headers", transport)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        import h11

        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._deadline.kind != "body":
                self._deadline.arm(self.loop, _timeouts(self.config)[1], "body", self.transport)
        elif state is h11.IDLE:
            if self.conn.trailing_data[0] and self._deadline.handle is None:
                self._deadline.arm(self.loop, _timeouts(self.config)[0], "headers", self.transport)
        else:
            self._deadline.disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.disarm()
        super().connection_lost(exc)


GuardedHttpToolsProtocol = None if HttpToolsProtocol is None else _guarded(HttpToolsProtocol)


def protocol_class(http: str = "auto") -> type[Any]:
    """The guarded protocol uvicorn's `http="auto"` would pick (httptools when installed)."""
    if http == "h11" or GuardedHttpToolsProtocol is None:
        return GuardedH11Protocol
    return GuardedHttpToolsProtocol


def config_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options every way of serving the API shares (one process or several)."""
    return {
        "host": settings.api_host,
        "port": settings.api_port,
        "http": protocol_class(),
        "limit_concurrency": settings.api_max_connections or None,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "timeout_keep_alive": max(1, round(settings.api_keepalive_s)),
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
    }


# Descriptors besides client connections: the Redis pool (at most 500 connections), the hub's
# blocking connection, the listening socket, logs and files.
RESERVED_FDS = 1024


def raise_open_files_limit(settings: Settings) -> int:
    """Raise this process's soft limit of open files to what the settings need (up to the hard limit;
    child processes inherit it) and return the limit in force. Every client connection and every Redis
    connection is a file descriptor. The soft limit is often 1024, below the default
    CONVEYOR_API_MAX_CONNECTIONS (2000) plus the Redis pool, while the hard limit is far higher; past the
    soft limit new connections were dropped without an answer (not the 503 the connection cap gives)
    and nothing was logged. Warns when the hard limit is too low for the settings."""
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to raise
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = settings.api_max_connections + RESERVED_FDS
    if settings.api_max_connections <= 0 or soft == resource.RLIM_INFINITY or soft >= need:
        return soft  # no connection cap to size for, or enough already
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < need:
        logger.warning(
            "open files limit is %d, below the %d that CONVEYOR_API_MAX_CONNECTIONS=%d needs: past it new "
            "connections are dropped; raise the hard limit (ulimit -Hn) or lower the setting",
            soft, need, settings.api_max_connections,
        )
    return soft


def make_config(app: Any, settings: Settings, **extra: Any) -> uvicorn.Config:
    config = uvicorn.Config(app, **{**config_options(settings), **extra})
    timeouts = (settings.api_header_timeout_s, settings.api_body_timeout_s, settings.api_send_timeout_s)
    setattr(config, "conveyor_timeouts", timeouts)  # noqa: B010
    return config


def app_from_env() -> Any:
    """The ASGI app of one worker process (`--workers N`): the Conveyor app named in
    CONVEYOR_API_APP, with settings from the environment the parent prepared."""
    from conveyor.api.app import create_app
    from conveyor.logconfig import configure_logging
    from conveyor.service.command import load_app

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    api = create_app(load_app(os.environ[APP_ENV]), settings)
    api.state.conveyor_api.drain_on_exit_signals = True
    return api
