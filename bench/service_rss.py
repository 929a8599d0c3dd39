"""RSS of a `conveyor worker` process over 100,000 jobs: it should stay flat (within ±10 %).

Starts a private Redis server and the service as a real subprocess (JSON logs at info level to
/dev/null, health server on), enqueues no-op jobs in batches and samples the service's RSS from
/proc every 10,000 processed jobs. Run: `.venv/bin/python bench/service_rss.py [--jobs 100000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conveyor import Conveyor, JobContext, Queue
from conveyor.testing import RedisServer, free_port

app = Conveyor(prefix=os.environ.get("CONVEYOR_PREFIX", "cv"), name="rss-bench")


@app.task(queue="bench", concurrency=50)
async def noop(ctx: JobContext, payload: int) -> int:
    return payload


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def processed(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
        return int(json.loads(resp.read())["queues"]["bench"]["processed"])


def start_service(redis_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "WORKER_"))}
    env.update(
        {
            "REDIS_URL": redis_url,
            "CONVEYOR_PREFIX": "rss",
            "WORKER_HEALTH_HOST": "127.0.0.1",
            "WORKER_HEALTH_PORT": str(port),
            "CONVEYOR_LOG_FORMAT": "json",
            "CONVEYOR_STATS_INTERVAL_S": "5",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "service_rss:app"],
        cwd=Path(__file__).parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def measure(redis_url: str, pid: int, port: int, total: int, every: int) -> int:
    queue = Queue("bench", redis=redis_url, prefix="rss")
    try:
        while True:
            try:
                processed(port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        print(f"service pid {pid}; RSS at start {rss_kib(pid)} KiB", flush=True)
        added, next_mark, samples, started = 0, every, [], time.monotonic()
        while next_mark <= total:
            done = processed(port)
            if added < total and added - done < 5000:
                n = min(1000, total - added)
                await queue.add_bulk([{"name": "noop", "data": added + i} for i in range(n)])
                added += n
                continue
            if done >= next_mark:
                rss = rss_kib(pid)
                samples.append(rss)
                rate = done / (time.monotonic() - started)
                print(f"processed {done:>7}: RSS {rss} KiB ({rate:.0f} jobs/s)", flush=True)
                next_mark += every
                continue
            await asyncio.sleep(0.05)
    finally:
        await queue.close()
    base = samples[0]
    worst = max(abs(s - base) / base for s in samples)
    print(
        f"RSS from the first sample: min {min(samples)} max {max(samples)} KiB, "
        f"largest change {worst * 100:.1f} % (limit 10 %)"
    )
    print("FLAT" if worst <= 0.10 else "NOT FLAT")
    return 0 if worst <= 0.10 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000)
    args = parser.parse_args()
    with RedisServer() as server:
        port = free_port()
        proc = start_service(server.url, port)
        try:
            code = asyncio.run(measure(server.url, proc.pid, port, args.jobs, args.every))
        finally:
            proc.terminate()
            proc.wait(60)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
