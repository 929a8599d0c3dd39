"""`make bench`: Conveyor's throughput and latency figures as a Markdown table and bench/results.json.

    python -m bench.run             # every figure, median of 3 runs (about 5-8 minutes)
    python -m bench.run --quick     # one run of bulk enqueue, single add and drain (under a minute)
    python -m bench.run --durable-only  # the cost of durable acknowledgement (replica, AOF)

Starts its own redis-server on a free port (conveyor.testing.RedisServer, the same binary the peer
harness uses) and a fresh worker process for every run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import measure
from conveyor.testing import RedisServer

RESULTS = Path(__file__).with_name("results.json")

# (key, label, unit, target text)
ROWS = [
    ("enqueue_bulk_per_s", "Bulk enqueue, 20,000 jobs (`add_bulk`, chunks of 1,000)", "jobs/s",
     ">= 2x BullMQ Node"),
    ("enqueue_single_per_s", "Single `add`, 20,000 jobs (gather x500)", "jobs/s", "-"),
    ("drain_per_s", "Drain 20,000 no-op, 1 process, concurrency 100 (`result_ttl=0`)", "jobs/s",
     ">= 2x BullMQ Node, >= 10x best Python peer"),
    ("drain_settled_per_s", "... same, until every outcome is recorded in Redis", "jobs/s", "-"),
    ("drain_retained_per_s", "Drain 20,000 no-op, default retention (results kept)", "jobs/s", "-"),
    ("drain_retained_settled_per_s", "... same, until every outcome is recorded in Redis", "jobs/s", "-"),
    ("worker_startup_s", "Worker startup (spawn -> first job start)", "s", "-"),
    ("io_bound_per_s", "IO-bound, 2,000 x 50 ms sleep, concurrency 100 (ideal 2,000)", "jobs/s", ">= 1,800"),
    ("pickup_p50_ms", "Pickup latency p50 (500 jobs, 1 per 10 ms, idle worker)", "ms", "<= 2"),
    ("pickup_p99_ms", "Pickup latency p99", "ms", "<= 10"),
    ("worker_rss_mb", "Worker RSS after the drain", "MB", "<= 80"),
    ("redis_bytes_per_job", "Redis memory per waiting job (1,000,000 x 200-byte payload), server defaults",
     "bytes", "<= 600"),
    ("plain_enqueue_per_s", "Bulk enqueue, primary with one replica, no durable ack", "jobs/s", "-"),
    ("replica_enqueue_per_s", "... same, each chunk acknowledged by the replica (`Durability(replicas=1)`)", "jobs/s",
     "-"),
    ("plain_drain_per_s", "Drain until recorded, primary with one replica, no durable ack", "jobs/s", "-"),
    ("replica_drain_per_s", "... same, each trip's outcomes acknowledged by the replica", "jobs/s", "-"),
    ("aof_plain_enqueue_per_s", "Bulk enqueue, Valkey appendonly everysec, no durable ack", "jobs/s", "-"),
    ("aof_enqueue_per_s", "... same, each chunk waits for the AOF fsync (`Durability(aof=True)`)", "jobs/s", "-"),
    ("aof_plain_drain_per_s", "Drain until recorded, Valkey appendonly everysec, no durable ack", "jobs/s", "-"),
    ("aof_drain_per_s", "... same, each trip's outcomes wait for the AOF fsync", "jobs/s", "-"),
    ("redis_bytes_per_job_listpack", "... same, with `hash-max-listpack-value 1024` (recommended; embedded server)",
     "bytes", "<= 600"),
    ("redis_cpu_us_per_job", "Redis CPU per no-op job (INFO cpu; bulk enqueue + drain of 100,000, events mode all)",
     "us", "-"),
    ("redis_cpu_us_per_job_followed", "... same, events mode `followed` with nobody following", "us",
     "<= 50 % of the previous commit (bench.redis_cost)"),
    ("redis_bytes_per_waiting_job_followed", "Redis memory per waiting job (100,000 x 200 bytes), mode `followed`",
     "bytes", "<= 500"),
    ("redis_bytes_per_retained_job", "Redis memory per retained completed job (2 KB payload, 4 KB result)", "bytes",
     "<= 6,544 (payload + result + 400)"),
]
REQUIRED = ["enqueue_bulk_per_s", "enqueue_single_per_s", "drain_per_s", "io_bound_per_s", "pickup_p50_ms",
            "pickup_p99_ms", "worker_rss_mb", "redis_bytes_per_job"]


def repeat(runs: int, label: str, fn: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i in range(runs):
        t = time.monotonic()
        res = fn()
        brief = {k: round(v, 2) for k, v in res.items() if isinstance(v, float)}
        print(f"[{label} #{i} {time.monotonic() - t:.0f}s] {brief}", file=sys.stderr, flush=True)
        out.append(res)
    return out


def collect(url: str, runs: int, quick: bool) -> dict[str, list[Any]]:
    raw: dict[str, list[Any]] = {}

    def keep(results: list[dict[str, Any]], mapping: dict[str, str]) -> None:
        for src, dst in mapping.items():
            raw.setdefault(dst, []).extend(r[src] for r in results if src in r)

    drains = repeat(runs, "drain result_ttl=0", lambda: measure.drain(url, result_ttl=0))
    keep(drains, {"enqueue_bulk_per_s": "enqueue_bulk_per_s", "rate": "drain_per_s",
                  "settled_rate": "drain_settled_per_s", "startup_s": "worker_startup_s",
                  "worker_rss_mb": "worker_rss_mb"})
    keep(repeat(runs, "single add", lambda: measure.enqueue_single(url)),
         {"enqueue_single_per_s": "enqueue_single_per_s"})
    if quick:
        return raw
    retained = repeat(runs, "drain retained", lambda: measure.drain(url, result_ttl=None))
    keep(retained, {"rate": "drain_retained_per_s", "settled_rate": "drain_retained_settled_per_s"})
    keep(repeat(runs, "io", lambda: measure.drain(url, mode="io", n=2000)), {"rate": "io_bound_per_s"})
    keep(repeat(runs, "latency", lambda: measure.latency(url)),
         {"pickup_p50_ms": "pickup_p50_ms", "pickup_p99_ms": "pickup_p99_ms"})
    durable = repeat(runs, "durable ack", measure.durable)
    keep(durable, {k: k for k in durable[0]})
    mem = repeat(runs, "memory", measure.memory)
    keep(mem, {"redis_bytes_per_job": "redis_bytes_per_job"})
    raw["_memory_breakdown"] = [m["memory_breakdown"] for m in mem]
    tuned = repeat(runs, "memory listpack", lambda: measure.memory(server_args=("--hash-max-listpack-value", "1024")))
    keep(tuned, {"redis_bytes_per_job": "redis_bytes_per_job_listpack"})
    keep(repeat(1, "redis cost", redis_cost), {k: k for k in COST_KEYS})
    return raw


COST_KEYS = ("redis_cpu_us_per_job", "redis_cpu_us_per_job_followed", "redis_bytes_per_waiting_job_followed",
             "redis_bytes_per_retained_job")


def redis_cost() -> dict[str, Any]:
    """Redis's own CPU and memory per job for this checkout (bench.redis_cost compares revisions)."""
    import redis as syncredis

    from bench.redis_cost import ROOT, Variant

    out: dict[str, Any] = {}
    with RedisServer() as server, syncredis.Redis.from_url(server.url, decode_responses=True) as r:
        for mode, key in (("all", "redis_cpu_us_per_job"), ("followed", "redis_cpu_us_per_job_followed")):
            r.flushall()
            out[key] = Variant(mode, ROOT / "src", mode).cpu(r, server.url, 100_000)["total_cpu_us_per_job"]
        followed = Variant("followed", ROOT / "src", "followed")
        r.flushall()
        out["redis_bytes_per_waiting_job_followed"] = followed.waiting(r, server.url, 100_000)["bytes_per_waiting_job"]
        r.flushall()
        out["redis_bytes_per_retained_job"] = followed.retained(r, server.url, 10_000)["bytes_per_retained_job"]
    return out


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def table(medians: dict[str, float], raw: dict[str, list[Any]]) -> str:
    lines = ["| Figure | Median | Runs | Target |", "|---|---:|---|---|"]
    for key, label, unit, target in ROWS:
        if key not in medians:
            continue
        runs = ", ".join(fmt(v) for v in raw[key])
        lines.append(f"| {label} | **{fmt(medians[key])}** {unit} | {runs} | {target} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one run of the first three figures only")
    ap.add_argument("--runs", type=int, default=None, help="repetitions per figure (default 3, quick 1)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--durable-only", action="store_true", help="only the durable-acknowledgement figures")
    a = ap.parse_args()
    runs = a.runs or (1 if a.quick else 3)
    env_before = measure.environment()
    started = time.time()
    if a.durable_only:
        raw = {}
        for res in repeat(runs, "durable ack", measure.durable):
            for key, value in res.items():
                raw.setdefault(key, []).append(value)
    else:
        with RedisServer() as server:
            raw = collect(server.url, runs, a.quick)
    breakdown = raw.pop("_memory_breakdown", None)
    medians = {k: statistics.median(v) for k, v in raw.items() if v}
    results: dict[str, Any] = {k: (round(medians[k], 2) if k in medians else None) for k in REQUIRED}
    results["details"] = {
        "medians": {k: round(v, 3) for k, v in medians.items()},
        "runs": raw,
        "runs_per_figure": runs,
        "quick": a.quick,
        "memory_breakdown": breakdown,
        "machine": env_before,
        "loadavg_after": measure.environment()["loadavg"],
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
    }
    if not a.durable_only:  # a partial run does not replace the recorded figures
        a.out.write_text(json.dumps(results, indent=2) + "\n")
    m = env_before
    print(table(medians, raw))
    kind = f"Quick run ({runs} repetition(s), first figures only)" if a.quick else f"Median of {runs} runs"
    print(f"\n{kind}; each drain/IO/latency "
          f"run uses a fresh worker process. {m['server']}; Python {m['python']}; "
          f"{m['nproc']} CPUs ({m['cpu']}); "
          f"load average before {m['loadavg']}, after {results['details']['loadavg_after']}."
          + ("" if a.durable_only else f" Figures written to {a.out}."))


if __name__ == "__main__":
    main()
