"""One measurement per function, each returning a dict of figures for one run.

Definitions match the peer benchmarks (/work/shared/bench/peers/common.py) so the numbers compare:
enqueue = N / wall time of the enqueue calls; drain and IO = N / (last job end - first job start),
taken inside the worker process; latency = enqueue call -> handler start at one job per 10 ms.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis as syncredis

from conveyor import JobOptions, JobSpec, Queue
from conveyor.redis.connection import connect
from conveyor.redis.keys import QueueKeys

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1000
SINGLE_GROUP = 500
LAT_INTERVAL_S = 0.010


def qname(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:8]}"


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


class WorkerProcess:
    """A fresh `bench.worker_proc` subprocess (optionally under a profiler command prefix)."""

    def __init__(
        self, url: str, queue: str, n: int, concurrency: int, prefix: list[str] | None = None, durability: str = ""
    ) -> None:
        self.report_key = f"bench:report:{queue}"
        cmd = [*(prefix or []), sys.executable, "-m", "bench.worker_proc", "--url", url, "--queue", queue,
               "--report-key", self.report_key, "--n", str(n), "--concurrency", str(concurrency),
               "--durability", durability]
        self.t_spawn = time.time()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL)
        self.redis = syncredis.Redis.from_url(url, decode_responses=True)

    def wait_report(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.redis.blpop([self.report_key], timeout=1)
            if got:
                msg: dict[str, Any] = json.loads(got[1])
                if msg["kind"] == kind:
                    return msg
            elif self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early with code {self.proc.returncode}")
        raise TimeoutError(f"no {kind!r} report from the worker within {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.redis.close()


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _specs(name: str, start: int, stop: int, options: JobOptions) -> list[JobSpec]:
    return [JobSpec(name, {"i": i}, options) for i in range(start, stop)]


async def _enqueue_bulk(url: str, queue: str, name: str, n: int, options: JobOptions, durability: str = "") -> float:
    from bench.worker_proc import durability as parse_durability

    async with Queue(queue, redis=url, durability=parse_durability(durability)) as q:
        await q.client.ping()
        t0 = time.perf_counter()
        for start in range(0, n, CHUNK):
            await q.add_bulk(_specs(name, start, min(n, start + CHUNK), options))
        return n / (time.perf_counter() - t0)


async def _enqueue_single(url: str, queue: str, n: int) -> float:
    # redis-py 8's asyncio pool refuses more than 100 connections by default ("Too many
    # connections"), so the client for 500 concurrent adds gets a larger pool.
    client = connect(url, max_connections=SINGLE_GROUP + 10)
    async with Queue(queue, redis=client) as q:
        await q.client.ping()
        t0 = time.perf_counter()
        for start in range(0, n, SINGLE_GROUP):
            stop = min(n, start + SINGLE_GROUP)
            await asyncio.gather(*[q.add("noop", {"i": i}) for i in range(start, stop)])
        rate = n / (time.perf_counter() - t0)
    await client.aclose()
    return rate


def enqueue_single(url: str, n: int = 20_000) -> dict[str, Any]:
    return {"enqueue_single_per_s": _run(_enqueue_single(url, qname("single"), n))}


def _wait_settled(url: str, queue: str, timeout: float = 120.0) -> float:
    """The moment every outcome is recorded in Redis (nothing ready or active any more)."""
    keys = QueueKeys(queue)
    with syncredis.Redis.from_url(url, decode_responses=True) as r:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pipe = r.pipeline(transaction=False)
            pipe.zcard(keys.ready)
            pipe.zcard(keys.active)
            ready, active = pipe.execute()
            if ready == 0 and active == 0:
                return time.time()
            time.sleep(0.001)
    raise TimeoutError("jobs still ready or active after the drain")


def drain(url: str, *, mode: str = "noop", n: int = 20_000, concurrency: int = 100,
          result_ttl: float | None = 0, prefix: list[str] | None = None, durability: str = "") -> dict[str, Any]:
    """Bulk-enqueue N jobs, then one fresh worker process drains them (`durability`: '' (none),
    'replicas=N' or 'aof', for both the enqueue and the worker's outcomes)."""
    queue = qname(mode)
    options = JobOptions(result_ttl=result_ttl)
    enqueue_rate = _run(_enqueue_bulk(url, queue, mode, n, options, durability))
    worker = WorkerProcess(url, queue, n, concurrency, prefix, durability)
    try:
        rep = worker.wait_report("done", 600)
        t_settled = _wait_settled(url, queue)
        out: dict[str, Any] = {
            "rate": n / (rep["t_last"] - rep["t_first"]),
            "settled_rate": n / (t_settled - rep["t_first"]),
            "startup_s": rep["t_first"] - worker.t_spawn,
        }
        if mode == "noop":
            out["enqueue_bulk_per_s"] = enqueue_rate
        if prefix is None:
            out["worker_rss_mb"] = rss_mb(worker.proc.pid)
        return out
    finally:
        worker.stop()


async def _paced(url: str, queue: str, n: int) -> None:
    async with Queue(queue, redis=url) as q:
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i * LAT_INTERVAL_S - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await q.add("lat", {"i": i, "ts": time.time()})


async def _probe(url: str, queue: str) -> None:
    async with Queue(queue, redis=url) as q:
        await q.add("lat", {"i": -1, "ts": time.time()})


def latency(url: str, n: int = 500) -> dict[str, Any]:
    queue = qname("lat")
    worker = WorkerProcess(url, queue, n, 100)
    try:
        _run(_probe(url, queue))
        worker.wait_report("ready", 60)
        time.sleep(1.0)  # let the worker go idle (blocked on the wake list)
        _run(_paced(url, queue, n))
        lats = worker.wait_report("lats", 120)["lats"]
        return {"pickup_p50_ms": statistics.median(lats), "pickup_p99_ms": nearest_rank(lats, 99),
                "pickup_max_ms": max(lats)}
    finally:
        worker.stop()


async def _fill(url: str, queue: str, n: int, payload_bytes: int) -> None:
    filler = "x" * (payload_bytes - len('{"p":""}'))
    async with Queue(queue, redis=url) as q:
        step = 20 * CHUNK
        for start in range(0, n, step):
            await q.add_bulk([JobSpec("noop", {"p": filler}) for _ in range(start, min(n, start + step))])


def memory(n: int = 1_000_000, payload_bytes: int = 200, server_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Redis used_memory growth per waiting job, on a fresh server of its own, with a breakdown.
    `server_args` e.g. ("--hash-max-listpack-value", "1024"), the setting docs/deployment.md recommends."""
    from conveyor.testing import RedisServer

    queue = qname("mem")
    with (
        RedisServer(extra_args=server_args) as server,
        syncredis.Redis.from_url(server.url, decode_responses=True) as r,
    ):
        _run(_fill(server.url, qname("warm"), 10, payload_bytes))  # load the scripts, create the registry
        before = int(r.info("memory")["used_memory"])
        _run(_fill(server.url, queue, n, payload_bytes))
        after = int(r.info("memory")["used_memory"])
        keys = QueueKeys(queue)
        usage = {
            "job_hash": r.memory_usage(keys.job("1")),
            "ready_zset_total": r.memory_usage(keys.ready, samples=0),
            "events_stream_total": r.memory_usage(keys.events, samples=0),
            "events_stream_len": r.xlen(keys.events),
            "keys": r.dbsize(),
        }
        return {"redis_bytes_per_job": (after - before) / n, "redis_used_delta_mb": (after - before) / 2**20,
                "memory_breakdown": usage}


def durable(n: int = 20_000) -> dict[str, Any]:
    """The cost of durable acknowledgement: bulk enqueue and drain with and without it, on the same
    servers: a primary with one replica (WAIT 1), and a Valkey with appendonly yes, appendfsync
    everysec (WAITAOF 1 0)."""
    from conveyor.embedded.config import server_binary as valkey_binary
    from conveyor.testing import RedisServer

    out: dict[str, Any] = {}
    with RedisServer() as primary, RedisServer() as replica:
        with syncredis.Redis(port=replica.port, decode_responses=True) as r:
            r.replicaof("127.0.0.1", primary.port)
            while r.info("replication").get("master_link_status") != "up":
                time.sleep(0.05)
        for label, spec in (("plain", ""), ("replica", "replicas=1")):
            res = drain(primary.url, n=n, durability=spec)
            out[f"{label}_enqueue_per_s"], out[f"{label}_drain_per_s"] = res["enqueue_bulk_per_s"], res["settled_rate"]
    with RedisServer(binary=valkey_binary(), extra_args=["--appendonly", "yes", "--appendfsync", "everysec"]) as aof:
        for label, spec in (("aof_plain", ""), ("aof", "aof")):
            res = drain(aof.url, n=n, durability=spec)
            out[f"{label}_enqueue_per_s"], out[f"{label}_drain_per_s"] = res["enqueue_bulk_per_s"], res["settled_rate"]
    return out


def environment() -> dict[str, Any]:
    """Machine facts recorded with every result."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    from conveyor.testing import server_binary

    version = subprocess.run([server_binary(), "--version"], capture_output=True, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gb": round(mem_kb / 2**20, 1), "server": version,
            "python": sys.version.split()[0], "loadavg": os.getloadavg()}
