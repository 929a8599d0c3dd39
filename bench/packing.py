"""Command packing on the asyncio clients: redis-py's Python packer against hiredis's (redis/packing.py),
the same checkout, alternating fresh processes on one private redis-server.

    .venv/bin/python -m bench.packing [--rounds 5] [--jobs 20000]

Each run is one process that bulk-enqueues `--jobs` no-op jobs (`add_bulk` in chunks of 1,000,
`result_ttl=0`), then drains them with one `Worker` (concurrency 100). It reports the enqueue rate and
the producer's CPU per job, and the drain rate (first handler start to last handler end) and the
worker's CPU per job (process CPU over the drain). The variant `python` switches packing back to
redis-py's own before connecting. Raw rows and a summary go to bench/results/<UTC time>-packing/.
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
import uuid
from pathlib import Path
from typing import Any

from conveyor.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VARIANTS = ("python", "hiredis")


async def one_run(url: str, variant: str, jobs: int) -> dict[str, Any]:
    if variant == "python":
        import conveyor.redis.connection as connection

        connection.pack_in_c = lambda client: None  # type: ignore[assignment]
    from conveyor import JobSpec, Queue, Worker
    from conveyor.options import JobOptions

    queue = Queue(f"packing-{uuid.uuid4().hex[:8]}", redis=url)
    options = JobOptions(result_ttl=0)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for start in range(0, jobs, 1000):
        await queue.add_bulk([JobSpec("noop", {"i": i}, options) for i in range(start, min(jobs, start + 1000))])
    enqueue_s, enqueue_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    done = asyncio.Event()
    first: list[float] = []
    ended = 0
    last = 0.0

    async def noop(ctx: Any, data: Any) -> None:
        nonlocal ended, last
        if not first:
            first.append(time.perf_counter())
        ended += 1
        if ended == jobs:
            last = time.perf_counter()
            done.set()

    worker = Worker(queue, {"noop": noop}, concurrency=100)
    cpu1 = time.process_time()
    await worker.start()
    await done.wait()
    drain_cpu = time.process_time() - cpu1
    await worker.close()
    await queue.obliterate(force=True)
    await queue.close()
    return {"variant": variant, "jobs": jobs, "enqueue_per_s": round(jobs / enqueue_s),
            "enqueue_cpu_us_per_job": round(enqueue_cpu / jobs * 1e6, 2),
            "drain_per_s": round(jobs / (last - first[0])),
            "worker_cpu_us_per_job": round(drain_cpu / jobs * 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--run", nargs=3, metavar=("URL", "VARIANT", "JOBS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run:
        print(json.dumps(asyncio.run(one_run(a.run[0], a.run[1], int(a.run[2])))))
        return
    started = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = RESULTS / f"{started}-packing"
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with RedisServer() as server:
        for r in range(a.rounds):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                command = [sys.executable, "-m", "bench.packing", "--run", server.url, variant, str(a.jobs)]
                proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
                row = {"round": r, "loadavg": round(os.getloadavg()[0], 2), **json.loads(proc.stdout.splitlines()[-1])}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    (out / "runs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    figures = ("enqueue_per_s", "enqueue_cpu_us_per_job", "drain_per_s", "worker_cpu_us_per_job")
    med = {v: {f: statistics.median(row[f] for row in rows if row["variant"] == v) for f in figures} for v in VARIANTS}
    pairs = {f: [next(x[f] for x in rows if x["round"] == r and x["variant"] == "hiredis")
                 / next(x[f] for x in rows if x["round"] == r and x["variant"] == "python")
                 for r in range(a.rounds)] for f in figures}
    lines = [f"# Command packing, {a.rounds} rounds of {a.jobs:,} no-op jobs (started {started} UTC)", "",
             "| figure | redis-py (Python) | hiredis | hiredis / Python per round |", "|---|---:|---:|---|"]
    for f in figures:
        lines.append(f"| {f} | {med['python'][f]:,} | {med['hiredis'][f]:,} | "
                     + " / ".join(f"{x:.2f}" for x in pairs[f]) + " |")
    loads = [row["loadavg"] for row in rows]
    lines.append(f"\nLoad average during the runs: {min(loads)}-{max(loads)}.")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nraw results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
