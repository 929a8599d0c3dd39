"""A worker process for the limits bench: `python -m bench.limits_worker URL QUEUE CONCURRENCY [USES_JSON]`.

Handlers: `noop` (nothing), `chat` {"url": u} (POST to the local chat server; a 429 puts the job back
at once without using an attempt and tells the adaptive limiter; a 200 reports the usage).
USES_JSON: [[limiter name, tokens in, tokens out], ...]. Stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import httpx

from conveyor import JobContext, Queue, RateLimited, Worker
from conveyor.limits import Estimate, LimiterUse
from conveyor.redis.connection import connect


async def main(url: str, queue_name: str, concurrency: int, uses_json: str) -> None:
    client = connect(url)
    queue = Queue(queue_name, redis=client)
    http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200))
    uses = [LimiterUse(n, Estimate(i, o)) for n, i, o in json.loads(uses_json)]

    async def noop(ctx: JobContext, data: Any) -> None:
        return None

    async def chat(ctx: JobContext, data: dict[str, Any]) -> None:
        body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
        response = await http.post(data["url"], json=body)
        if response.status_code == 429:
            raise RateLimited(retry_after=float(response.headers.get("Retry-After", 0) or 0))
        response.raise_for_status()
        usage = response.json()["usage"]
        ctx.report_usage(int(usage["prompt_tokens"]), int(usage["completion_tokens"]))

    worker = Worker(queue, {"noop": noop, "chat": chat}, concurrency=concurrency, lease_ms=10_000,
                    idle_block_s=1.0, limiters=uses)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(worker.close(2.0)))
    await worker.run()
    await http.aclose()
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "[]"))
