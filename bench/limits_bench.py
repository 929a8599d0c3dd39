"""Limits scenarios of `make bench`: exact pacing and adaptive concurrency (docs/limits.md).

    python -m bench.limits_bench                 # both scenarios (about 4 minutes)
    python -m bench.limits_bench --only pacing   # or --only aimd

pacing: a rate limit of 50/s with burst 0, three worker processes, 1,001 no-op jobs (20 s at the
        limit): delivered fraction of the limit and the most starts seen in any 1 s window.
aimd:   a local OpenAI-compatible server (bench/llm_server.py) whose hidden capacity is N requests
        in flight (429 above) and whose answers take L s; two worker processes send every job
        through a named limiter that is fixed at 3N, fixed at N/3, or adaptive (AIMD, up to 3N):
        throughput against the ideal N/L, and the share of calls answered 429.
Raw results go to bench/results/<utc>-limits/ (results.json and summary.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench import measure
from conveyor import JobSpec, Queue
from conveyor.limits import Adaptive, Limiter, RateLimit, SharedLimiter
from conveyor.redis.connection import connect
from conveyor.testing import RedisServer

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).with_name("results")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_workers(url: str, queue: str, n: int, concurrency: int, uses: str = "[]") -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return [subprocess.Popen([sys.executable, "-m", "bench.limits_worker", url, queue, str(concurrency), uses],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(n)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


async def wait_done(queue: Queue, n: int, deadline_s: float) -> float:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if (await queue.counts())["completed"] >= n:
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{n} jobs not done in {deadline_s} s")


def max_in_window(times: list[int], window_ms: int) -> int:
    times = sorted(times)
    best = j = 0
    for i in range(len(times)):
        while j < len(times) and times[j] < times[i] + window_ms:
            j += 1
        best = max(best, j - i)
    return best


async def pacing(url: str, limit: int = 50, jobs: int = 1001, processes: int = 3) -> dict[str, Any]:
    client = connect(url)
    queue = Queue(f"bench-pacing-{int(time.time())}", redis=client)
    await queue.set_limits(rate=RateLimit(limit, per_s=1, burst=0))
    procs = spawn_workers(url, queue.name, processes, 8)
    try:
        await asyncio.sleep(2)  # the processes are up and idle
        await queue.add_bulk([JobSpec("noop", None) for _ in range(jobs)])
        await wait_done(queue, jobs, 300)
        ids = list(await client.zrange(queue.keys.completed, 0, -1))
        starts = sorted([int(await client.hget(queue.keys.job(i), "started")) for i in ids])
    finally:
        stop(procs)
        await queue.obliterate(force=True)
        await client.aclose()
    span_s = (starts[-1] - starts[0]) / 1000
    return {"limit_per_s": limit, "burst": 0, "jobs": jobs, "processes": processes, "span_s": round(span_s, 3),
            "delivered_fraction": round((jobs - 1) / (span_s * limit), 4),
            "max_in_any_1s_window": max_in_window(starts, 1000)}


async def aimd_run(url: str, mode: str, capacity: int, latency_s: float, jobs: int) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(  # noqa: ASYNC220 - started once per run, before anything is timed
        [sys.executable, "-m", "bench.llm_server", str(port), str(capacity), str(latency_s)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    client = connect(url)
    name = f"bench:{mode.replace('/', '-')}:{int(time.time() * 1000)}"
    if mode == "adaptive":
        limiter = Limiter(name, adaptive=Adaptive(maximum=3 * capacity, minimum=1, decrease=0.9, window=6))
    else:
        limiter = Limiter(name, concurrency=3 * capacity if mode == "fixed-3N" else max(1, capacity // 3))
    await SharedLimiter(client, name).declare(limiter)
    queue = Queue(f"bench-aimd-{mode.replace('/', '-')}-{port}", redis=client)
    procs = spawn_workers(url, queue.name, 2, 2 * capacity, json.dumps([[name, 120, 40]]))
    chat_url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                try:
                    await http.get(f"http://127.0.0.1:{port}/stats")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(2)
            t0 = time.monotonic()
            await queue.add_bulk([JobSpec("chat", {"url": chat_url}) for _ in range(jobs)])
            t1 = await wait_done(queue, jobs, 900)
            stats = (await http.get(f"http://127.0.0.1:{port}/stats")).json()
        state = await SharedLimiter(client, name).state()
    finally:
        stop(procs)
        server.terminate()
        server.wait(10)
        await queue.obliterate(force=True)
        await client.delete(*SharedLimiter(client, name).keys.all)
        await client.aclose()
    throughput = jobs / (t1 - t0)
    ideal = capacity / latency_s
    calls = stats["ok"] + stats["rate_limited"]
    return {"mode": mode, "capacity": capacity, "latency_s": latency_s, "jobs": jobs,
            "throughput_per_s": round(throughput, 2), "ideal_per_s": ideal,
            "fraction_of_ideal": round(throughput / ideal, 4), "calls": calls,
            "rate_limited_fraction": round(stats["rate_limited"] / calls, 4), "server_peak_inflight": stats["peak"],
            "final_adaptive_limit": state["concurrency"]["adaptive_limit"]}


async def aimd(url: str, capacity: int = 8, latency_s: float = 1.0, jobs: int = 600) -> list[dict[str, Any]]:
    out = []
    for mode in ("adaptive", "fixed-3N", "fixed-N/3"):
        # N/3 runs a third as many jobs (a third of the pace): throughput is a rate either way.
        res = await aimd_run(url, mode, capacity, latency_s, jobs // 3 if mode == "fixed-N/3" else jobs)
        print(f"[aimd {mode}] {res}", file=sys.stderr, flush=True)
        out.append(res)
    return out


def summary(results: dict[str, Any]) -> str:
    lines = [f"Limits bench, {results['started_utc']}; {results['machine']['server']}; "
             f"{results['machine']['nproc']} CPUs; load average before {results['machine']['loadavg']}, "
             f"after {results['loadavg_after']}.", ""]
    if "pacing" in results:
        p = results["pacing"]
        lines += ["| Pacing (rate 50/s, burst 0, 3 processes, 1,001 jobs) | value |", "|---|---:|",
                  f"| delivered fraction of the limit | {p['delivered_fraction']:.2%} |",
                  f"| most starts in any 1 s window (limit 50) | {p['max_in_any_1s_window']} |",
                  f"| span | {p['span_s']} s |", ""]
    if "aimd" in results:
        lines += ["| Concurrency vs a server of hidden capacity N=8, 1 s per call | throughput | of N/L | "
                  "calls answered 429 | final limit |", "|---|---:|---:|---:|---:|"]
        for r in results["aimd"]:
            lines.append(f"| {r['mode']} | {r['throughput_per_s']:.1f}/s | {r['fraction_of_ideal']:.1%} | "
                         f"{r['rate_limited_fraction']:.1%} | {r['final_adaptive_limit'] or '-'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["pacing", "aimd"], default=None)
    a = ap.parse_args()
    started = time.time()
    results: dict[str, Any] = {"machine": measure.environment(),
                               "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}
    with RedisServer() as server:
        if a.only in (None, "pacing"):
            results["pacing"] = asyncio.run(pacing(server.url))
            print(f"[pacing] {results['pacing']}", file=sys.stderr, flush=True)
        if a.only in (None, "aimd"):
            results["aimd"] = asyncio.run(aimd(server.url))
    results["loadavg_after"] = measure.environment()["loadavg"]
    results["duration_s"] = round(time.time() - started, 1)
    out = RESULTS_DIR / (time.strftime("%Y%m%d-%H%M%S", time.gmtime(started)) + "-limits")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = summary(results)
    (out / "summary.md").write_text(text)
    print(text)
    print(f"Raw results: {out}")


if __name__ == "__main__":
    main()
