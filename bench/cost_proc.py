"""One step of bench/redis_cost.py in its own process, so that PYTHONPATH picks the Conveyor version:
    python -m bench.cost_proc --url URL --queue Q --n N [--payload BYTES] [--keep] [--events MODE]
Bulk-enqueues N jobs named `noop` (or `big` with --keep: the worker returns a 4 KB result and the
record is retained) and prints {"rate": jobs/s}. --events sets the queue's events mode first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from conveyor import JobOptions, JobSpec, Queue

CHUNK = 1000


async def enqueue(a: argparse.Namespace) -> float:
    filler = "x" * max(0, a.payload - len('{"p":""}'))
    # No-op jobs drop their record when done (as in the drain bench); jobs with a payload (the memory
    # runs) carry default options, so their records hold no `opts` field.
    options = JobOptions() if a.keep or a.payload else JobOptions(result_ttl=0)
    name = "big" if a.keep else "noop"
    async with Queue(a.queue, redis=a.url) as q:
        if a.events:
            await q.set_events_mode(a.events)  # type: ignore[attr-defined,unused-ignore]
        await q.client.ping()
        t0 = time.perf_counter()
        for start in range(0, a.n, CHUNK):
            await q.add_bulk([JobSpec(name, {"p": filler} if a.payload else {"i": i}, options)
                              for i in range(start, min(a.n, start + CHUNK))])
        return a.n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--payload", type=int, default=0, help="payload JSON size in bytes (0: {'i': i})")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--events", default="")
    a = ap.parse_args()
    print(json.dumps({"rate": asyncio.run(enqueue(a))}))


if __name__ == "__main__":
    main()
