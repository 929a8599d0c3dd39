"""A worker process for bench/scale.py: `--mode drain` runs one queue (plain or partitioned) of no-op
jobs; `--mode many` runs a worker service over `--queues` queues whose handler records pickup
latency (enqueue -> handler start) and reports it once `--n` jobs have run."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from typing import Any

from conveyor import Conveyor, JobContext
from conveyor.partitions import PartitionedQueue, worker_for
from conveyor.queue import Queue
from conveyor.redis.connection import connect
from conveyor.service import WorkerService, plan_queues
from conveyor.settings import Settings


async def drain(args: argparse.Namespace) -> None:
    client = connect(args.url)
    queue: Queue = (PartitionedQueue(args.queue, partitions=args.partitions, redis=client) if args.partitions
                    else Queue(args.queue, redis=client))

    async def noop(ctx: JobContext, data: Any) -> None:
        return None

    worker = worker_for(queue, {"noop": noop}, concurrency=args.concurrency)
    await worker.start()
    await client.rpush(args.report_key, json.dumps({"kind": "ready", "pid": os.getpid()}))
    await _until_signal()
    await worker.close(2.0)
    await client.aclose()


async def many(args: argparse.Namespace) -> None:
    app = Conveyor(args.url, name="bench-many")
    lats: list[float] = []
    report = connect(args.url)

    async def lat(ctx: JobContext, data: dict[str, Any]) -> None:
        if data["i"] >= 0:
            lats.append((time.time() - data["ts"]) * 1000.0)
            if len(lats) == args.n:
                hub = service.wake_hub
                await report.rpush(args.report_key, json.dumps({
                    "kind": "lats", "lats": lats,
                    "hub": {"waits": hub.waits, "interrupts": hub.interrupts, "returned": hub.returned}}))

    for i in range(args.queues):
        app.declare_queue(f"{args.queue}-{i}", concurrency=4)
        app.task(lat, queue=f"{args.queue}-{i}", name="lat")
    settings = Settings(stats_interval_s=0, scheduler=False)
    service = WorkerService(app, settings, plan_queues(app, None, {}))
    await service.start()
    def idle() -> int:  # queues waiting in the hub, or with a parked claim (a process of few queues)
        return service.wake_hub.watched + sum(
            1 for w in service.workers.values() if getattr(getattr(w, "pump", None), "parked", None) is not None)

    while True:
        if idle() >= args.queues:
            break
        await asyncio.sleep(0.05)
    await report.rpush(args.report_key, json.dumps({"kind": "ready", "pid": os.getpid()}))
    await _until_signal()
    await service.stop(2.0)
    await report.aclose()


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["drain", "many"], required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--report-key", required=True)
    ap.add_argument("--partitions", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--queues", type=int, default=1)
    ap.add_argument("--n", type=int, default=0)
    args = ap.parse_args()
    run = drain if args.mode == "drain" else many
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))


if __name__ == "__main__":
    main()
