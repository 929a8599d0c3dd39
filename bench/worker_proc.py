"""The benchmark's worker process: one Conveyor Worker, timings kept in memory, one report at the end.

Started fresh for every run by bench/measure.py (as the peer harness starts its workers):
    python -m bench.worker_proc --url URL --queue Q --report-key K --n N --concurrency C
Handlers touch no Redis; when the N-th job ends the worker RPUSHes one JSON report to the report key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from typing import Any

from conveyor import Durability, JobContext, Queue, Worker

IO_SLEEP_S = 0.05
BIG_RESULT = "y" * 4094  # 4,096 bytes as JSON


class Tally:
    """In-process counters: first job start, last job end, pickup latencies."""

    def __init__(self, n: int, queue: Queue, report_key: str) -> None:
        self.n = n
        self.queue = queue
        self.report_key = report_key
        self.count = 0
        self.t_first: float | None = None
        self.lats: list[float] = []
        self.pending: set[asyncio.Task[Any]] = set()

    def push(self, report: dict[str, Any]) -> None:
        report["pid"] = os.getpid()
        task: asyncio.Task[Any] = asyncio.ensure_future(self.queue.client.rpush(self.report_key, json.dumps(report)))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def start(self) -> None:
        if self.t_first is None:
            self.t_first = time.time()

    def done(self) -> None:
        now = time.time()
        self.count += 1
        if self.count == self.n:
            self.push({"kind": "done", "t_first": self.t_first, "t_last": now, "count": self.count})

    def latency(self, data: dict[str, Any]) -> None:
        now = time.time()
        if data["i"] < 0:  # readiness probe
            self.push({"kind": "ready", "t": now})
            return
        self.lats.append((now - data["ts"]) * 1000.0)
        if len(self.lats) == self.n:
            self.push({"kind": "lats", "lats": self.lats})


def handlers(tally: Tally) -> dict[str, Any]:
    async def noop(ctx: JobContext, data: Any) -> None:
        tally.start()
        tally.done()

    async def io(ctx: JobContext, data: Any) -> None:
        tally.start()
        await asyncio.sleep(IO_SLEEP_S)
        tally.done()

    async def lat(ctx: JobContext, data: Any) -> None:
        tally.latency(data)

    async def big(ctx: JobContext, data: Any) -> str:  # an LLM-sized result (4 KB), retained
        tally.start()
        tally.done()
        return BIG_RESULT

    return {"noop": noop, "io": io, "lat": lat, "big": big}


def durability(spec: str) -> Durability | None:
    """'' (none), 'replicas=N' or 'aof'."""
    if not spec:
        return None
    if spec == "aof":
        return Durability(aof=True)
    return Durability(replicas=int(spec.removeprefix("replicas=")))


async def serve(args: argparse.Namespace) -> None:
    queue = Queue(args.queue, redis=args.url, durability=durability(args.durability))
    tally = Tally(args.n, queue, args.report_key)
    # BENCH_BATCH overrides the claim batch size (default: the concurrency), for experiments only.
    batch = int(os.environ.get("BENCH_BATCH", "0")) or None
    worker = Worker(queue, handlers(tally), concurrency=args.concurrency, batch_size=batch)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.start()
    await stop.wait()
    await worker.close(grace_s=2.0)
    await queue.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--report-key", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--durability", default="", help="'' (none), 'replicas=N' or 'aof'")
    args = ap.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
