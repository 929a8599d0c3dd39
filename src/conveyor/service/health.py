"""The service's HTTP side: GET /health (JSON, 200 or 503) and GET /metrics (Prometheus text).

Served by uvicorn (the server the API uses) on the service's own event loop, with a tiny ASGI app:
no second HTTP stack. It binds 127.0.0.1 unless WORKER_HEALTH_HOST says otherwise; when
CONVEYOR_METRICS_TOKEN is set, /metrics answers only `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST

from conveyor import codec
from conveyor.errors import ConfigurationError

if TYPE_CHECKING:
    from conveyor.service.supervisor import WorkerService

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_HEADER_BYTES = 8192
MAX_CONNECTIONS = 64
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class HealthApp:
    """ASGI app with two GET routes; everything else is 404/405, request bodies are never read."""

    def __init__(self, service: WorkerService, metrics_token: str | None) -> None:
        self.service = service
        self._token = f"Bearer {metrics_token}".encode() if metrics_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not served
            return
        path = scope["path"]
        if path not in ("/health", "/metrics"):
            await _respond(send, 404, b'{"error":"not found"}', b"application/json")
        elif scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b'{"error":"method not allowed"}', b"application/json", [(b"allow", b"GET")])
        elif path == "/health":
            status, body = await self.service.health()
            await _respond(send, status, codec.dumps(body), b"application/json", [(b"cache-control", b"no-store")])
        elif not self._authorized(scope):
            await _respond(send, 401, b'{"error":"bearer token required"}', b"application/json",
                           [(b"www-authenticate", b'Bearer realm="metrics"')])
        else:
            await _respond(send, 200, self.service.metrics.render(), CONTENT_TYPE_LATEST.encode())

    def _authorized(self, scope: Scope) -> bool:
        if self._token is None:
            return True
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return hmac.compare_digest(given, self._token)


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    head = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the worker service (which owns SIGTERM/SIGINT)."""

    async def open(self) -> None:
        self.config.load()
        self.lifespan = self.config.lifespan_class(self.config)
        try:
            await self.startup()
        except SystemExit:  # uvicorn exits when it cannot bind; it has logged why
            raise OSError("cannot bind") from None
        self.server_state.default_headers = list(self.config.encoded_headers)

    def _log_started_message(self, listeners: Any) -> None:
        host, port = listeners[0].getsockname()[:2]
        logger.info("health and metrics on http://%s:%s (/health, /metrics)", host, port)

    async def close(self) -> None:
        self.should_exit = True
        self.force_exit = True  # do not wait for idle keep-alive connections
        await self.shutdown()


class HealthServer:
    """Serves `HealthApp` on the service's event loop until `close()`."""

    def __init__(self, service: WorkerService, host: str, port: int, *, metrics_token: str | None = None) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.metrics_token = metrics_token
        self._server: _Server | None = None

    async def start(self) -> None:
        config = uvicorn.Config(
            HealthApp(self.service, self.metrics_token),
            host=self.host,
            port=self.port,
            http="h11",  # h11's header-size limit applies; httptools has none to set
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            limit_concurrency=MAX_CONNECTIONS,
            timeout_keep_alive=5,
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            date_header=False,
        )
        server = _Server(config)
        await server.open()
        self._server = server
        if self.host not in LOOPBACK and not self.metrics_token:
            logger.warning(
                "worker /metrics is served on %s without a token; set CONVEYOR_METRICS_TOKEN", self.host
            )

    @property
    def bound_port(self) -> int:
        """The port actually bound (useful with port 0)."""
        if self._server is None:
            raise ConfigurationError("the health server is not running")
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None
