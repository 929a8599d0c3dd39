"""Conveyor's enqueue endpoint against a bare FastAPI/uvicorn endpoint doing one Redis SET, in one run.

    python -m bench.api_vs_bare [--rounds 3] [--saturate-s 8] [--rate 200] [--paced-s 10] [--quick]

Both servers run as subprocesses on the same machine, against the same Redis server, with the same
uvicorn settings (`conveyor.api.server.make_config`: httptools with the read deadlines, uvloop, no
access log, one process). The bare app is the framework's floor: `POST /api/queues/{q}/jobs` that
reads the body and does one `SET`. Conveyor's is the real route: key check (no rate limit on the
key), validation, encoding, the add script. Rounds are interleaved (the order alternates), and each
round measures, for each server:

- saturation: 32 closed-loop clients for `--saturate-s` seconds; completed requests per second, and
  the server process's CPU time per completed request (from /proc; steadier than requests/s on a
  shared machine, since the clients run on the same cores);
- paced: `--rate` requests/s on an open-loop schedule for `--paced-s` seconds; latency from each
  request's due time (p50, p99, max) and stalls (requests over 50 ms).

Writes bench/results/<stamp>-api-vs-bare.json and prints the medians and the ratios
(saturation: Conveyor/bare, target >= 0.8; p99 at the paced rate: Conveyor/bare, target <= 2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QUEUE = "bench-api"
CLIENTS = 32
STALL_MS = 50.0

SERVE = """
import os, sys
import uvicorn
from conveyor.api.server import make_config
from conveyor.settings import Settings
settings = Settings.from_env(api_port=int(sys.argv[2]))
if sys.argv[1] == "bare":
    from bench.bare_app import app as asgi
else:
    from bench.api_latency import app as conveyor_app
    from conveyor.api import create_app
    asgi = create_app(conveyor_app, settings)
import uvloop
uvloop.run(uvicorn.Server(make_config(asgi, settings, log_level="warning")).serve())
"""


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _body(i: int) -> bytes:
    return orjson.dumps({"name": "charge", "data": {"order_id": i, "customer": f"c{i % 97}", "amount_cents": 100 + i}})


async def saturate(url: str, headers: dict[str, str], seconds: float) -> dict[str, Any]:
    import aiohttp

    done = errors = 0
    stop_at = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS)) as http:

        async def client(k: int) -> None:
            nonlocal done, errors
            i = k
            while time.perf_counter() < stop_at:
                async with http.post(url, data=_body(i), headers=headers) as r:
                    await r.read()
                    if r.status == 202:
                        done += 1
                    else:
                        errors += 1
                i += CLIENTS

        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(CLIENTS)))
        elapsed = time.perf_counter() - start
    return {"rps": round(done / elapsed, 1), "requests": done, "errors": errors}


async def paced(url: str, headers: dict[str, str], rate: float, seconds: float) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def one(i: int, due: float) -> None:
            nonlocal errors
            async with http.post(url, data=_body(i), headers=headers) as r:
                await r.read()
                if r.status != 202:
                    errors += 1
                    return
            latencies.append((time.perf_counter() - due) * 1000)

        start = time.perf_counter() + 0.05
        tasks = []
        for i in range(int(rate * seconds)):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
    return {
        "p50_ms": round(_pct(latencies, 50), 2),
        "p99_ms": round(_pct(latencies, 99), 2),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "stalls_over_50ms": sum(1 for v in latencies if v > STALL_MS),
        "requests": len(latencies),
        "errors": errors,
    }


def _start(kind: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", SERVE, kind, str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--saturate-s", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--paced-s", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 4 s + 5 s")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.saturate_s, args.paced_s = 2, 4.0, 5.0

    import uvloop

    from bench.api_latency import make_key, wait_healthy
    from conveyor.testing import RedisServer, free_port

    server = RedisServer().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(REDIS_URL=server.url, PYTHONPATH=str(ROOT))
    ports = {"conveyor": free_port(), "bare": free_port()}
    procs = {kind: _start(kind, port, env) for kind, port in ports.items()}
    rounds: list[dict[str, Any]] = []
    try:
        for port in ports.values():
            uvloop.run(wait_healthy(f"http://127.0.0.1:{port}"))
        token = uvloop.run(make_key(server.url))
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        for r in range(args.rounds):
            order = ["conveyor", "bare"] if r % 2 == 0 else ["bare", "conveyor"]
            row: dict[str, Any] = {"order": order, "loadavg_1m": round(os.getloadavg()[0], 2)}
            for kind in order:
                url = f"http://127.0.0.1:{ports[kind]}/api/queues/{QUEUE}/jobs"
                cpu_before = _cpu_s(procs[kind].pid)
                saturation = uvloop.run(saturate(url, headers, args.saturate_s))
                cpu_s = _cpu_s(procs[kind].pid) - cpu_before
                saturation["cpu_ms_per_request"] = round(1000 * cpu_s / max(1, saturation["requests"]), 3)
                latency = uvloop.run(paced(url, headers, args.rate, args.paced_s))
                row[kind] = {"saturation": saturation, "paced": latency}
            rounds.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(15)
        server.close()

    def med(kind: str, part: str, field: str) -> float:
        return statistics.median(float(row[kind][part][field]) for row in rounds)

    summary = {
        "conveyor_rps": med("conveyor", "saturation", "rps"),
        "bare_rps": med("bare", "saturation", "rps"),
        "conveyor_cpu_ms_per_request": med("conveyor", "saturation", "cpu_ms_per_request"),
        "bare_cpu_ms_per_request": med("bare", "saturation", "cpu_ms_per_request"),
        "conveyor_p99_ms": med("conveyor", "paced", "p99_ms"),
        "bare_p99_ms": med("bare", "paced", "p99_ms"),
        "conveyor_max_ms": max(float(row["conveyor"]["paced"]["max_ms"]) for row in rounds),
        "bare_max_ms": max(float(row["bare"]["paced"]["max_ms"]) for row in rounds),
        "conveyor_stalls": sum(row["conveyor"]["paced"]["stalls_over_50ms"] for row in rounds),
        "bare_stalls": sum(row["bare"]["paced"]["stalls_over_50ms"] for row in rounds),
    }
    summary["saturation_ratio"] = round(summary["conveyor_rps"] / summary["bare_rps"], 3)
    summary["p99_ratio"] = round(summary["conveyor_p99_ms"] / summary["bare_p99_ms"], 3)
    summary["cpu_per_request_ratio"] = round(
        summary["conveyor_cpu_ms_per_request"] / summary["bare_cpu_ms_per_request"], 3
    )
    result = {
        "benchmark": "api-vs-bare", "cpus": os.cpu_count(), "clients": CLIENTS, "rate": args.rate,
        "saturate_s": args.saturate_s, "paced_s": args.paced_s, "rounds": rounds, "summary": summary,
    }
    out = HERE / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-api-vs-bare.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
