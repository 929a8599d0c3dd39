"""What streaming output costs, as same-run ratios: one job publishes N chunks with `ctx.stream`
against one job reporting N progress values with `ctx.progress` (the nearest existing per-job write),
alternating rounds on one private Redis server (the machine's load is whatever it is: only the
ratio is meaningful).

Run: `.venv/bin/python -m bench.stream_output [--chunks 5000] [--rounds 3]`; results are written to
bench/results/<timestamp>-stream-output/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from conveyor import JobContext, Queue, Worker
from conveyor.redis.connection import connect
from conveyor.testing import RedisServer

CHUNK = "token-ish "  # 10 bytes, about two LLM tokens


async def one_job(queue: Queue, name: str, chunks: int) -> float:
    """Seconds from enqueue to completion of one job doing `chunks` writes."""
    t0 = time.perf_counter()
    job = await queue.add(name, {"n": chunks})
    await job.result(timeout=600)
    return time.perf_counter() - t0


async def main(chunks: int, rounds: int) -> dict[str, Any]:
    with RedisServer() as server:
        client = connect(server.url)
        queue = Queue("bench-stream", redis=client)

        async def streamer(ctx: JobContext, data: dict[str, int]) -> int:
            for _ in range(data["n"]):
                await ctx.stream(CHUNK)
            return data["n"]

        async def progresser(ctx: JobContext, data: dict[str, int]) -> int:
            for i in range(data["n"]):
                await ctx.progress(i)
            return data["n"]

        worker = Worker(queue, {"stream": streamer, "progress": progresser}, concurrency=2, lease_ms=30000)
        await worker.start()
        times: dict[str, list[float]] = {"stream": [], "progress": []}
        try:
            await one_job(queue, "stream", 100)  # warm-up: scripts cached, connections open
            await one_job(queue, "progress", 100)
            for _ in range(rounds):
                for name in ("stream", "progress"):
                    times[name].append(await one_job(queue, name, chunks))
        finally:
            await worker.close(5.0)
            await queue.obliterate(force=True)
            await client.aclose()
    med = {name: statistics.median(values) for name, values in times.items()}
    return {
        "chunks": chunks, "rounds": rounds, "seconds": times,
        "stream_chunks_per_s": chunks / med["stream"], "progress_writes_per_s": chunks / med["progress"],
        "stream_vs_progress": med["stream"] / med["progress"],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(main(args.chunks, args.rounds))
    out = Path(__file__).with_name("results") / f"{time.strftime('%Y%m%d-%H%M%S')}-stream-output"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=2))
    print(f"written to {out}")
