"""The browser tests' system under test, mounted: a host FastAPI app with its own route and lifespan,
Conveyor's API and dashboard mounted at /conveyor, and workers started by the host's lifespan.

Prints one JSON line ({"port", "keys"}) once it is listening, then serves until SIGTERM.
Usage: python mount_server.py REDIS_URL PREFIX
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from conveyor.api.mount import mount
from conveyor.settings import Settings
from tests.dashboard.server import QUEUES, build, make_keys


async def main(redis_url: str, prefix: str) -> None:
    jobs = build(redis_url, prefix)
    keys = await make_keys(jobs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        workers = [jobs.worker(q, lease_ms=5000, idle_block_s=1.0, shutdown_grace_s=1.0) for q in QUEUES]
        for w in workers:
            await w.start()
        yield
        for w in workers:
            await w.close(1.0)

    host = FastAPI(lifespan=lifespan)

    @host.get("/")
    async def home() -> dict[str, str]:
        return {"app": "host"}

    mount(host, jobs, path="/conveyor",
          settings=Settings.from_env({}, redis_url=redis_url, prefix=prefix, api_rate_limit=0))
    server = uvicorn.Server(uvicorn.Config(host, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving
            raise SystemExit("uvicorn stopped before it started")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    print(json.dumps({"port": port, "keys": keys}), flush=True)
    try:
        await serving
    finally:
        await jobs.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
