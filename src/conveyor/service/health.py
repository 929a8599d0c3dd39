"""The service's HTTP side: GET /health (JSON, 200 or 503) and GET /metrics (Prometheus text)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from conveyor import codec

if TYPE_CHECKING:
    from conveyor.service.supervisor import WorkerService

MAX_REQUEST_LINE = 1024
MAX_FIELD_SIZE = 4096


class HealthServer:
    """A small aiohttp server on the service's event loop; nothing else is served."""

    def __init__(self, service: WorkerService, host: str, port: int) -> None:
        self.service = service
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    def make_app(self) -> web.Application:
        app = web.Application(
            client_max_size=1024,
            handler_args={
                "max_line_size": MAX_REQUEST_LINE,
                "max_field_size": MAX_FIELD_SIZE,
            },
        )
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def health(self, request: web.Request) -> web.Response:
        status, body = await self.service.health()
        return web.Response(
            body=codec.dumps(body),
            status=status,
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.service.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
