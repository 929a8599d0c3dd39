"""API test fixtures: the sample app on a unique queue, an in-process client with lifespan, keys of
every scope, and a real worker in the same event loop."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from conveyor import Conveyor, Worker
from conveyor.api import create_app
from conveyor.api.keys import KeyStore
from conveyor.settings import Settings
from tests.api.sample_app import build_app


@dataclass
class Api:
    """One API under test: its HTTP client, the app behind it and a key per scope set."""

    http: httpx.AsyncClient
    asgi: FastAPI
    app: Conveyor
    queue: str
    keys: KeyStore
    tokens: dict[str, str] = field(default_factory=dict)
    worker: Worker | None = None

    def auth(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def start_worker(self, **options: Any) -> Worker:
        options.setdefault("lease_ms", 3000)
        options.setdefault("idle_block_s", 1.0)
        self.worker = self.app.worker(self.queue, **options)
        await self.worker.start()
        return self.worker

    async def job(self, job_id: str, who: str = "admin") -> dict[str, Any]:
        r = await self.http.get(f"/api/jobs/{self.queue}/{job_id}", headers=self.auth(who))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def enqueue(self, name: str, data: Any = None, **options: Any) -> str:
        body: dict[str, Any] = {"name": name, "data": data}
        if options:
            body["options"] = options
        r = await self.http.post(f"/api/queues/{self.queue}/jobs", json=body, headers=self.auth("enqueue"))
        assert r.status_code == 202, r.text
        return str(r.json()["id"])


SCOPES = {
    "admin": ["admin"],
    "enqueue": ["enqueue"],
    "read": ["read"],
    "reader": ["read-data"],
    "client": ["enqueue", "read-data"],
}


def api_settings(redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"redis_url": redis_url, "api_sse_keepalive_s": 0.2, "api_rate_limit": 0}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def api_factory(redis_url: str, qname: str) -> Callable[..., Any]:
    """Builds an Api; keyword arguments become Settings overrides."""

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[Api]:
        conveyor_app = build_app(redis_url, qname)
        asgi = create_app(conveyor_app, api_settings(redis_url, **overrides))
        store = KeyStore(conveyor_app.client)
        api = Api(httpx.AsyncClient(), asgi, conveyor_app, qname, store)
        key_ids = []
        for who, scopes in SCOPES.items():
            api.tokens[who], info = await store.create(f"test-{who}-{uuid.uuid4().hex[:6]}", scopes)
            key_ids.append(info.id)
        async with LifespanManager(asgi) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=30) as http:
                api.http = http
                try:
                    yield api
                finally:
                    if api.worker is not None:
                        await api.worker.close(2.0)
                    for key_id in key_ids:
                        await store.revoke(key_id)
                    await conveyor_app.queue(qname).obliterate(force=True)
                    await conveyor_app.close()

    return make


@pytest.fixture
async def api(api_factory: Callable[..., Any]) -> AsyncIterator[Api]:
    async with api_factory() as value:
        yield value
