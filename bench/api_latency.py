"""POST enqueue latency of `conveyor api` at a fixed request rate (a benchmark, not a test).

    python bench/api_latency.py [--rate 200] [--duration 20] [--worker/--no-worker] [--redis-url URL]

Starts a Redis server on a free port (unless --redis-url is given), `conveyor api` (uvicorn) as a
subprocess serving the app defined below, optionally a worker process draining the queue, and then
drives POST /api/queues/bench-api/jobs from this process (aiohttp client) on an open-loop schedule:
request i is due at t0 + i/rate whether or not earlier ones have answered, and its latency is
measured from that due time, so a stalled server cannot hide its backlog (no coordinated omission).
Prints p50/p90/p99/max as JSON, with the 1-minute load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from conveyor import Conveyor, JobContext

HERE = Path(__file__).resolve().parent
QUEUE = "bench-api"


class Order(BaseModel):
    order_id: int
    customer: str
    amount_cents: int


app = Conveyor(os.environ.get("REDIS_URL"))


@app.task(queue=QUEUE)
async def charge(ctx: JobContext, order: Order) -> int:
    return order.amount_cents


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def make_key(redis_url: str) -> str:
    from conveyor.api.keys import KeyStore
    from conveyor.redis.connection import connect

    client = connect(redis_url)
    try:
        token, _ = await KeyStore(client).create("bench", ["enqueue"], rate_limit=0)
        return token
    finally:
        await client.aclose()


async def wait_healthy(base_url: str, limit_s: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient(base_url=base_url) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get("/api/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the API did not become healthy")


async def drive(base_url: str, token: str, rate: float, duration: float, warmup: float) -> dict[str, Any]:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []  # from the due time (what a caller on the schedule sees)
    service: list[float] = []  # from the actual send (excludes this process's own scheduling lag)
    errors: dict[str, int] = {}
    url = f"{base_url}/api/queues/{QUEUE}/jobs"
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def one(i: int, due: float, record: bool) -> None:
            body = orjson.dumps(
                {"name": "charge", "data": {"order_id": i, "customer": f"c{i % 97}", "amount_cents": 100 + i}}
            )
            sent = time.perf_counter()
            try:
                async with http.post(url, data=body, headers=headers) as r:
                    await r.read()
                    ok, kind = r.status == 202, str(r.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok, kind = False, type(exc).__name__
            done = time.perf_counter()
            if not record:
                return
            if ok:
                latencies.append((done - due) * 1000)
                service.append((done - sent) * 1000)
            else:
                errors[kind] = errors.get(kind, 0) + 1

        total = int((warmup + duration) * rate)
        warm = int(warmup * rate)
        start = time.perf_counter() + 0.1
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due, i >= warm)))
        await asyncio.gather(*tasks)
        sent_for = time.perf_counter() - start
    latencies.sort()
    service.sort()
    return {
        "rate_target": rate,
        "requests": total - warm,
        "achieved_rate": round(total / sent_for, 1),
        "ok": len(latencies),
        "errors": errors,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p90_ms": round(percentile(latencies, 90), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "p999_ms": round(percentile(latencies, 99.9), 2),
        "max_ms": round(latencies[-1], 2) if latencies else None,
        "from_send_p50_ms": round(percentile(service, 50), 2),
        "from_send_p99_ms": round(percentile(service, 99), 2),
    }


def start_process(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


WORKER = """
import asyncio, signal
from api_latency import app, QUEUE

async def main():
    worker = app.worker(QUEUE, concurrency=50)
    await worker.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await worker.close(5)

asyncio.run(main())
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (open loop)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument(
        "--worker",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run a worker process draining the queue meanwhile",
    )
    parser.add_argument("--redis-url", default=None, help="use this server instead of starting one")
    args = parser.parse_args()

    from conveyor.testing import RedisServer, free_port

    server = None if args.redis_url else RedisServer().start()
    redis_url = args.redis_url or (server.url if server else "")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(REDIS_URL=redis_url, CONVEYOR_API_RATE_LIMIT="0")
    conveyor_bin = str(Path(sys.executable).with_name("conveyor"))
    procs = [start_process([conveyor_bin, "api", "api_latency:app", "--port", str(port)], env)]
    if args.worker:
        procs.append(start_process([sys.executable, "-c", WORKER], env))
    try:
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            run = asyncio.run
        base_url = f"http://127.0.0.1:{port}"
        run(wait_healthy(base_url))
        token = run(make_key(redis_url))
        load_before = os.getloadavg()[0]
        result = run(drive(base_url, token, args.rate, args.duration, args.warmup))
        result["worker"] = args.worker
        result["cpus"] = os.cpu_count()
        result["loadavg_1m_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        print(json.dumps(result, indent=2))
    finally:
        for proc in procs:
            stop(proc)
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
