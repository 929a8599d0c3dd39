"""The system under test for the browser tests: the real API served by uvicorn, a real Worker per
queue, and API keys for each role, in one process against the given Redis.

Prints one JSON line ({"port", "keys"}) once it is listening, then serves until SIGTERM.
Usage: python server.py REDIS_URL PREFIX
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from typing import Any

import uvicorn

from conveyor import Conveyor, JobContext, Unrecoverable
from conveyor.api import create_app
from conveyor.api.keys import KeyStore
from conveyor.cancelling import cancel_and_wait
from conveyor.costs import Budget, CostLedger, Price
from conveyor.limits import Adaptive, GroupLimits, Limiter, RateLimit, SharedLimiter
from conveyor.limits.named import Usage
from conveyor.settings import Settings

QUEUES = ("live", "retry", "pause", "xss", "readonly", "dead", "bulk", "limited", "shots", "alarm", "timing", "late",
          "sharded", "sizes")
PARTITIONED = "sharded"  # a queue of three partitions (docs/scaling.md)
UNDECLARED = "legacy"  # a queue in Redis that this app does not declare
ALERT_QUEUE = "alarm"
KEY_SCOPES = {"admin": ["admin"], "read": ["read", "read-data"], "enqueue": ["enqueue"]}


def build(redis_url: str, prefix: str) -> Conveyor:
    app = Conveyor(redis_url, prefix=prefix)
    app.declare_queue(PARTITIONED, partitions=3, concurrency=4)
    seen_key = f"{prefix}:dashtest:flaky-seen"

    async def echo(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        await ctx.progress(50)
        await ctx.log(f"echoing {json.dumps(payload)}")
        await ctx.progress(100)
        return payload

    async def flaky(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        """Fails on its first run (per job id) and succeeds when retried."""
        await ctx.log("flaky run starting")
        if await app.client.sadd(seen_key, ctx.job_id) == 1:
            raise RuntimeError(f"first run fails: {payload.get('message', '')}")
        return {"ok": True, "retried": True}

    async def doomed(ctx: JobContext, payload: dict[str, Any]) -> None:
        raise Unrecoverable(str(payload.get("message", "doomed")))

    async def slow(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        for i in range(int(payload.get("steps", 5))):
            await ctx.progress({"done": i, "total": payload.get("steps", 5)})
            await asyncio.sleep(float(payload.get("step_s", 0.2)))
        return {"steps": payload.get("steps", 5)}

    async def retried(ctx: JobContext, payload: dict[str, Any]) -> None:
        raise RuntimeError("try again later")

    released: dict[str, asyncio.Event] = {}  # large jobs' go signals, by job id

    def release(job_id: str) -> asyncio.Event:
        return released.setdefault(job_id, asyncio.Event())

    async def large(ctx: JobContext, payload: dict[str, Any]) -> None:
        """Once `go` names it, reports a progress value and streams an output piece each larger than an
        event carries (1 KiB: their events carry `size`), then runs until it is cancelled."""
        await release(ctx.job_id).wait()
        await ctx.progress({"stage": "reading", "note": "p" * 3000 + " end of the progress"})
        await ctx.stream("o" * 3000 + " end of the output")
        await asyncio.Event().wait()  # ended by its cancellation

    async def go(ctx: JobContext, payload: dict[str, Any]) -> None:
        release(str(payload["job"])).set()

    for queue in QUEUES:
        for fn in (echo, flaky, doomed, slow, retried, large, go):
            app.task(fn, queue=queue, name=fn.__name__, concurrency=4)

    @app.every(hours=1, queue="shots", id="hourly-report")
    async def report(ctx: JobContext) -> str:
        return "report"

    app.alert("queue_depth", id="alarm-backlog", queue=ALERT_QUEUE, threshold=0, severity="critical",
              description="Jobs wait in the alarm queue.", repeat_s=3600,
              channels=[{"type": "email", "to": ["ops@example.com"]}])
    return app


async def make_keys(app: Conveyor) -> dict[str, str]:
    store = KeyStore(app.client, app.prefix)
    return {
        role: (await store.create(f"dashboard-test-{role}", scopes))[0] for role, scopes in KEY_SCOPES.items()
    }


async def register(app: Conveyor, workers: list[Any]) -> asyncio.Task[None] | None:
    """Announce this process in the worker registry the way the worker service does, when the
    service room's writer is installed (the Workers page reads the registry)."""
    try:
        from conveyor.service.registry import RegistryWriter
    except ImportError:
        return None
    started = int(time.time() * 1000)

    def record() -> dict[str, Any]:
        return {
            "id": f"dashboard-test-{os.getpid()}", "host": socket.gethostname(), "pid": os.getpid(),
            "queues": [w.queue.name for w in workers], "started_ms": started,
            "concurrency": {w.queue.name: w.concurrency for w in workers},
            "counts": {w.queue.name: {"processed": w.stats.processed, "succeeded": w.stats.succeeded,
                                      "failed": w.stats.failed, "active": w.active} for w in workers},
        }

    writer = RegistryWriter(app.client, app.prefix, f"dashboard-test-{os.getpid()}", record, 1.0)

    async def beat() -> None:
        while True:
            await writer.beat()
            await asyncio.sleep(1.0)

    await writer.beat()
    return asyncio.create_task(beat())


async def serve(asgi: Any, keys: dict[str, str]) -> None:
    """Serve `asgi` with uvicorn on a free port; print {"port", "keys"} once it listens."""
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving
            raise SystemExit("uvicorn stopped before it started")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    print(json.dumps({"port": port, "keys": keys}), flush=True)
    await serving


async def main(redis_url: str, prefix: str) -> None:
    app = build(redis_url, prefix)
    keys = await make_keys(app)
    # One queue with fleet-wide limits and per-group caps, for the limits panel.
    await app.queue("limited").set_limits(
        concurrency=2, rate=RateLimit(100, 1.0), group_defaults=GroupLimits(concurrency=1)
    )
    await app.queue(UNDECLARED).add("old-task", {"from": "a previous release"})
    # A named limiter with one finished call and one in flight, for the limiters page.
    limiter = SharedLimiter(app.client, "openai:gpt-4o-mini", prefix)
    await limiter.declare(app.limiter(Limiter("openai:gpt-4o-mini", requests=RateLimit(500, per_s=60, burst=10),
                                              concurrency=8, adaptive=Adaptive(maximum=8))))
    await limiter.acquire("dash:1", 2, 800, 200, 3_600_000)
    await limiter.confirm("dash:1", ["dash-h1", "dash-h2"], 3_600_000)
    await limiter.release([("dash-h1", 750, 120, "ok", 0)], 3_600_000)
    # Usage of two tenants and a budget, for the costs page.
    ledger = CostLedger(app.client, prefix)
    await ledger.set_price(Price("gpt-4o-mini", "0.15", "0.60"))
    await ledger.record("dash-run-1", "acme", "ai.flashcards", Usage.of(10_000, 2_000, "gpt-4o-mini"))
    await ledger.record("dash-run-2", "acme", "ai.generate", Usage.of(1_000, 1_000, "gpt-4o-mini"))
    await ledger.record("dash-run-3", "globex", "ai.generate", Usage.of(500, 0, "gpt-4o-mini"))
    await ledger.set_budget("acme", Budget(soft="0.002", hard="1", period="month"))
    scheduler = app.scheduler(alerts_interval_s=0.5, maintenance_interval_s=None)
    await scheduler.start()
    api = create_app(app, Settings.from_env({}, redis_url=redis_url, prefix=prefix, api_rate_limit=0))
    workers = [app.worker(q, lease_ms=5000, idle_block_s=1.0, shutdown_grace_s=1.0) for q in QUEUES]
    for w in workers:
        await w.start()
    beating = await register(app, workers)
    try:
        await serve(api, keys)
    finally:
        if beating is not None:
            await cancel_and_wait([beating])  # a cancellation caught in a send can be lost (Python 3.11)
        await scheduler.close()
        for w in workers:
            await w.close(1.0)
        await app.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
