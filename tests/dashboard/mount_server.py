"""The browser tests' system under test, mounted: a host FastAPI app with its own route and lifespan,
Conveyor's API and dashboard mounted at /conveyor, and workers started by the host's lifespan.

Prints one JSON line ({"port", "keys"}) once it is listening, then serves until SIGTERM.
Usage: python mount_server.py REDIS_URL PREFIX
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from server import QUEUES, build, make_keys, serve  # the sibling script (run as a script, like it)

from conveyor.api.mount import mount
from conveyor.settings import Settings


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
    try:
        await serve(host, keys)
    finally:
        await jobs.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
