"""The API served by uvicorn on a free loopback port in the test's event loop: real HTTP, real
headers, the whole middleware stack as `conveyor api` runs it, plus an API key for every scope."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import uvicorn
from fastapi import FastAPI

from conveyor import Conveyor
from conveyor.api import create_app
from conveyor.api.keys import KeyStore
from conveyor.settings import Settings
from conveyor.testing import free_port
from tests.api.conftest import SCOPES
from tests.conftest import wait_for


@dataclass
class LiveApi:
    url: str
    http: httpx.AsyncClient
    asgi: FastAPI
    app: Conveyor
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@asynccontextmanager
async def serve(asgi: FastAPI) -> AsyncIterator[str]:
    """Run `asgi` with uvicorn until the block ends; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started or task.done(), timeout=30, what="uvicorn started")
    if task.done():
        task.result()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def live_api(conveyor_app: Conveyor, settings: Settings) -> AsyncIterator[LiveApi]:
    """`create_app(conveyor_app, settings)` served over TCP, with a key per scope set of SCOPES."""
    asgi = create_app(conveyor_app, settings)
    store = KeyStore(conveyor_app.client, conveyor_app.prefix)
    tokens, key_ids = {}, []
    for who, scopes in SCOPES.items():
        tokens[who], info = await store.create(f"live-{who}-{uuid.uuid4().hex[:6]}", scopes)
        key_ids.append(info.id)
    try:
        async with serve(asgi) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield LiveApi(url, http, asgi, conveyor_app, tokens)
    finally:
        for key_id in key_ids:
            await store.revoke(key_id)
