"""Scale figures (part of `make bench`): one queue across a 3-master Cluster, partitioned or not, and
one worker process serving 1,000 queues against one serving a single queue, in the same run.

    python -m bench.scale            # both, results in bench/results/<time>-scale/
    python -m bench.scale --quick    # smaller counts

Cluster: N no-op jobs are enqueued while the queue is paused, three worker processes start, then the
queue is resumed and the drain timed until nothing is waiting or active; each shard's Redis CPU
(INFO cpu, user + sys) is read before and after. Many queues: a worker service over Q queues; while
it is idle its connections are counted (CLIENT LIST) and its Redis commands per second taken from
INFO commandstats over a window; then jobs are enqueued one per 10 ms on random queues and the
pickup latency (enqueue -> handler start) recorded in the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis as syncredis

from bench.measure import environment, nearest_rank
from conveyor.partitions import PartitionedQueue
from conveyor.queue import Queue
from conveyor.redis.connection import connect, connect_sync
from conveyor.testing import RedisClusterServers, RedisServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("results")


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.scale_worker", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_reports(r: syncredis.Redis, key: str, kind: str, count: int, timeout: float) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"waiting for {count} {kind} report(s)")
        try:
            item = r.blpop([key], timeout=max(0.1, min(left, 5)))
        except syncredis.TimeoutError:  # the server was busy (a start-up burst): ask again
            continue
        if item:
            rep = json.loads(item[1])
            if rep["kind"] == kind:
                got.append(rep)
    return got


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def node_cpu(cluster: RedisClusterServers) -> list[float]:
    out = []
    for server in cluster.servers:
        with syncredis.Redis(port=server.port, decode_responses=True) as c:
            info = c.info("cpu")
            out.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
    return out


async def _fill(url: str, queue: Queue, n: int) -> None:
    await queue.pause()
    for start in range(0, n, 1000):
        await queue.add_bulk([{"name": "noop", "data": None, "options": {"result_ttl": 0}}
                              for _ in range(start, min(n, start + 1000))])


async def _left(queue: Queue) -> int:
    c = await queue.counts()
    return sum(c[s] for s in c if s.value in ("waiting", "active", "delayed"))


def cluster_drain(cluster: RedisClusterServers, partitions: int, n: int, workers: int = 3) -> dict[str, Any]:
    url = cluster.url
    name = f"scale-{uuid.uuid4().hex[:6]}"
    report_key = f"bench:{name}:reports"

    async def setup() -> None:
        client = connect(url)
        q = PartitionedQueue(name, partitions=partitions, redis=client) if partitions else Queue(name, redis=client)
        await _fill(url, q, n)
        await client.aclose()

    asyncio.run(setup())
    args = ["--mode", "drain", "--url", url, "--queue", name, "--report-key", report_key,
            "--partitions", str(partitions), "--concurrency", "100"]
    procs = [spawn(*args) for _ in range(workers)]
    try:
        r = connect_sync(url)
        try:
            wait_reports(r, report_key, "ready", workers, 120)  # type: ignore[arg-type]
        finally:
            r.close()

        async def timed() -> tuple[float, list[float], list[float]]:
            client = connect(url)
            q = PartitionedQueue(name, partitions=partitions, redis=client) if partitions else Queue(name, redis=client)
            cpu0 = node_cpu(cluster)
            t0 = time.monotonic()
            await q.resume()
            while await _left(q):  # noqa: ASYNC110 - the count is in Redis
                await asyncio.sleep(0.02)
            elapsed = time.monotonic() - t0
            cpu1 = node_cpu(cluster)
            await q.obliterate(force=True)
            await client.aclose()
            return elapsed, cpu0, cpu1

        elapsed, cpu0, cpu1 = asyncio.run(timed())
    finally:
        stop(procs)
    cpu = [round(b - a, 3) for a, b in zip(cpu0, cpu1, strict=True)]
    mean = statistics.mean(cpu)
    return {"partitions": partitions, "jobs": n, "workers": workers, "seconds": round(elapsed, 3),
            "jobs_per_s": round(n / elapsed, 1), "cpu_s_per_shard": cpu,
            "max_deviation_from_mean": round(max(abs(c - mean) for c in cpu) / mean, 3) if mean else None}


def many_queues(url: str, queues: int, n: int, idle_window_s: float) -> dict[str, Any]:
    name = f"many-{uuid.uuid4().hex[:6]}"
    report_key = f"bench:{name}:reports"
    proc = spawn("--mode", "many", "--url", url, "--queue", name, "--report-key", report_key,
                 "--queues", str(queues), "--n", str(n))
    try:
        with syncredis.Redis.from_url(url, decode_responses=True, socket_timeout=60) as r:
            wait_reports(r, report_key, "ready", 1, 600)
            time.sleep(min(30.0, idle_window_s))  # past the start-up burst
            own = r.client_id()
            connections = sum(1 for c in r.client_list() if int(c["id"]) != own)

            def calls() -> int:
                return sum(int(v["calls"]) for k, v in r.info("commandstats").items()
                           if k not in ("cmdstat_info", "cmdstat_client|list", "cmdstat_client|id"))

            c0, t0 = calls(), time.monotonic()
            time.sleep(idle_window_s)
            idle_rate = (calls() - c0) / (time.monotonic() - t0)

        async def paced() -> None:
            client = connect(url)
            targets = [Queue(f"{name}-{i}", redis=client) for i in range(queues)]
            # A handle's first add also registers its queue (one more round trip): done before the
            # clock runs, so both runs time the worker's pickup, not the producer's first call.
            for q in targets:
                await q._register()
            rng = random.Random(1)
            t0 = time.perf_counter()
            for i in range(n):
                delay = t0 + i * 0.010 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await rng.choice(targets).add("lat", {"i": i, "ts": time.time()})
            await client.aclose()

        asyncio.run(paced())
        with syncredis.Redis.from_url(url, decode_responses=True, socket_timeout=60) as r:
            rep = wait_reports(r, report_key, "lats", 1, 300)[0]
            lats = rep["lats"]
    finally:
        stop([proc])
    return {"queues": queues, "hub": rep.get("hub"), "connections": connections,
            "idle_commands_per_s": round(idle_rate, 1), "pickup_p50_ms": round(statistics.median(lats), 2),
            "pickup_p99_ms": round(nearest_rank(lats, 99), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--pickup-jobs", type=int, default=1000, help="jobs timed per pickup run (one per 10 ms)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="pairs of each comparison, in alternating order; ratios per round and their median")
    a = ap.parse_args()
    jobs = 15_000 if a.quick else 45_000
    env = environment()
    started = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    results: dict[str, Any] = {"machine": env, "started_utc": started, "cluster_rounds": [], "many_rounds": []}
    with RedisClusterServers() as cluster:
        for r in range(a.rounds):
            order = (0, 3) if r % 2 == 0 else (3, 0)
            pair = {p: cluster_drain(cluster, p, jobs) for p in order}
            results["cluster_rounds"].append([pair[0], pair[3]])
            print(json.dumps(results["cluster_rounds"][-1]), file=sys.stderr, flush=True)
    with RedisServer() as server:
        for r in range(a.rounds):
            order = (1, 1000) if r % 2 == 0 else (1000, 1)
            idle_s = 10.0 if a.quick else 20.0
            runs = {n: many_queues(server.url, n, a.pickup_jobs, idle_s) for n in order}
            results["many_rounds"].append([runs[1], runs[1000]])
            print(json.dumps(results["many_rounds"][-1]), file=sys.stderr, flush=True)
    throughput = [round(parted["jobs_per_s"] / plain["jobs_per_s"], 2) for plain, parted in results["cluster_rounds"]]
    pickup = [round(many["pickup_p99_ms"] / max(one["pickup_p99_ms"], 1e-9), 2) for one, many in results["many_rounds"]]
    results["cluster"], results["many_queues"] = results["cluster_rounds"][0], results["many_rounds"][0]
    results["ratios"] = {
        "partitioned_over_plain_throughput": statistics.median(throughput),
        "thousand_over_one_pickup_p99": statistics.median(pickup),
        "per_round": {"partitioned_over_plain_throughput": throughput, "thousand_over_one_pickup_p99": pickup},
    }
    results["loadavg_after"] = environment()["loadavg"]
    out = a.out or RESULTS / f"{started}-scale" / "scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nraw results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def table(r: dict[str, Any]) -> str:
    plain, parted = r["cluster"]
    one, many = r["many_queues"]
    per_round = r["ratios"].get("per_round", {})
    rows = [
        "First round's figures; ratios are the median of the rounds' ratios.", "",
        "| Figure | Value | Target |", "|---|---:|---|",
        f"| Cluster (3 masters), one queue, 3 workers: jobs/s unpartitioned | {plain['jobs_per_s']:,.0f} | - |",
        f"| ... same queue, 3 partitions: jobs/s | {parted['jobs_per_s']:,.0f} | >= 1.3x unpartitioned |",
        f"| ... ratio partitioned / unpartitioned | {r['ratios']['partitioned_over_plain_throughput']} | >= 1.3 |",
        f"| ... Redis CPU s per shard, unpartitioned | {plain['cpu_s_per_shard']} | - |",
        f"| ... Redis CPU s per shard, 3 partitions | {parted['cpu_s_per_shard']} | each within 25 % of the mean |",
        f"| ... largest deviation from the mean, 3 partitions | {parted['max_deviation_from_mean']:.0%} | <= 25 % |",
        f"| One worker process, 1 queue: connections / idle commands/s | {one['connections']} / "
        f"{one['idle_commands_per_s']} | - |",
        f"| One worker process, 1,000 queues: connections | {many['connections']} | <= 50 |",
        f"| ... idle Redis commands/s | {many['idle_commands_per_s']} | <= 50 |",
        f"| Pickup p50 / p99 ms, 1 queue | {one['pickup_p50_ms']} / {one['pickup_p99_ms']} | - |",
        f"| Pickup p50 / p99 ms, 1,000 queues | {many['pickup_p50_ms']} / {many['pickup_p99_ms']} "
        "| p99 <= 2x 1 queue |",
        f"| ... pickup p99 1,000 queues / 1 queue | {r['ratios']['thousand_over_one_pickup_p99']} | <= 2 |",
    ]
    for name, ratios in per_round.items():
        rows.append(f"| per round: {name} | {' / '.join(str(x) for x in ratios)} | - |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
