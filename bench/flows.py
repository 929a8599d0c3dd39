"""Flows benchmark (`make bench` runs it): Conveyor's flows against BullMQ for Node's FlowProducer on
the same Redis, in the same run, interleaved (BullMQ, Conveyor, BullMQ, Conveyor, ...).

Measured the same way on both sides, one process each, jobs removed on completion:
- flows/s: F flows of 1 parent + K no-op children (children on one queue, parents on another),
  created one flow per call, then run until every parent has completed (children concurrency C,
  parents 10); the clock runs from the first create to the last parent's completion.
- wide create: one flow of 1 parent + W children created in one call, R times; ms per call.

    python -m bench.flows [--rounds 3] [--flows 50] [--children 100] [--quick]

Raw results go to bench/results/<stamp>-flows/ (runs.jsonl, summary.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conveyor import JobContext, Queue, Worker
from conveyor.flows import FlowNode
from conveyor.options import JobOptions
from conveyor.redis.connection import connect
from conveyor.testing import RedisServer

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "flows_node"
RESULTS = HERE / "results"


async def conveyor_run(
    url: str, flows: int, children: int, concurrency: int, wide: int, repeats: int
) -> dict[str, Any]:
    client = connect(url)
    tag = f"fb{time.monotonic_ns() % 10**9}"
    parents, kids = Queue(f"{tag}-parents", redis=client), Queue(f"{tag}-kids", redis=client)
    done = asyncio.Event()
    finished = 0

    async def noop(ctx: JobContext, data: Any) -> Any:
        return data

    async def total(ctx: JobContext, data: Any) -> int:
        nonlocal finished
        values = await ctx.children()
        finished += 1
        if finished >= flows:
            done.set()
        return len(values.results)

    gone = JobOptions(result_ttl=0)  # removed on completion, as BullMQ's removeOnComplete

    def tree(k: int, i: int) -> FlowNode:
        return FlowNode(parents.name, "sum", {"i": i}, gone,
                        children=[FlowNode(kids.name, "noop", {"j": j}, gone) for j in range(k)])
    try:
        t0 = time.perf_counter()
        for i in range(flows):
            await parents.add_flow(tree(children, i))
        t1 = time.perf_counter()
        workers = [Worker(kids, {"noop": noop}, concurrency=concurrency),
                   Worker(parents, {"sum": total}, concurrency=10)]
        for w in workers:
            await w.start()
        await asyncio.wait_for(done.wait(), 600)
        t2 = time.perf_counter()
        for w in workers:
            await w.close()
        times = []
        for r in range(repeats):
            s = time.perf_counter()
            await parents.add_flow(tree(wide, r))
            times.append((time.perf_counter() - s) * 1000)
        times.sort()
        return {
            "system": "conveyor", "flows": flows, "children": children, "concurrency": concurrency,
            "create_flows_per_s": round(flows / (t1 - t0), 1),
            "flows_per_s": round(flows / (t2 - t0), 2),
            "jobs_per_s": round(flows * (children + 1) / (t2 - t0)),
            "wide_children": wide, "wide_create_ms": [round(t, 1) for t in times],
            "wide_create_ms_median": round(times[repeats // 2], 1),
        }
    finally:
        for q in (parents, kids):
            await q.obliterate(force=True)
        await client.aclose()


def bullmq_run(port: int, flows: int, children: int, concurrency: int, wide: int, repeats: int) -> dict[str, Any]:
    out = subprocess.run(["node", "flows.mjs", str(port), str(flows), str(children), str(concurrency), str(wide),
                          str(repeats)], cwd=NODE_DIR, capture_output=True, text=True, timeout=900, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def ensure_node() -> bool:
    if shutil.which("node") is None:
        print("node is not installed: BullMQ side skipped", file=sys.stderr)
        return False
    if not (NODE_DIR / "node_modules" / "bullmq").is_dir():
        subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=600)
    return True


FIGURES = (("flows_per_s", "flows/s, create + run until every parent completed", True),
           ("jobs_per_s", "jobs/s in those flows", True),
           ("create_flows_per_s", "flows created per second (one call each)", True),
           ("wide_create_ms_median", "ms to create 1 parent + W children in one call", False))


def report(runs: list[dict[str, Any]]) -> str:
    """Medians per system, and the median of the per-round ratios (a ratio pairs runs of one round)."""
    first = runs[0]
    lines = [f"Flows of 1 + {first['children']} no-op jobs, {first['flows']} flows per run, "
             f"{1 + max(r['round'] for r in runs)} interleaved rounds (medians; ratio = median of the per-round "
             f"ratios, > 1 means Conveyor is ahead); one flow of 1 + {first['wide_children']} children created "
             "in one call, several times per run.", "",
             "| figure | Conveyor | BullMQ Node 6.7.0 | ratio |", "|---|---|---|---|"]
    for key, label, higher in FIGURES:
        mine = {s: [r[key] for r in runs if r["system"] == s] for s in ("conveyor", "bullmq-node")}
        ratios = []
        for rnd in sorted({r["round"] for r in runs}):
            pair = {r["system"]: r[key] for r in runs if r["round"] == rnd}
            if "conveyor" in pair and "bullmq-node" in pair and pair["conveyor"] and pair["bullmq-node"]:
                c, b = pair["conveyor"], pair["bullmq-node"]
                ratios.append(c / b if higher else b / c)
        c_med = statistics.median(mine["conveyor"]) if mine["conveyor"] else "-"
        b_med = statistics.median(mine["bullmq-node"]) if mine["bullmq-node"] else "-"
        ratio = f"{statistics.median(ratios):.2f}x" if ratios else "-"
        lines.append(f"| {label.replace('W', str(first['wide_children']))} | {c_med} | {b_med} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flows", type=int, default=50)
    parser.add_argument("--children", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--wide", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one round of 10 flows")
    parser.add_argument("--report", type=Path, help="rewrite the summary.md of a results directory and exit")
    args = parser.parse_args()
    if args.report:
        runs = [json.loads(line) for line in (args.report / "runs.jsonl").read_text().splitlines() if line]
        (args.report / "summary.md").write_text(report(runs))
        print(report(runs))
        return 0
    if args.quick:
        args.rounds, args.flows = 1, 10
    node = ensure_node()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    outdir = RESULTS / f"{stamp}-flows"
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "command.txt").write_text("python -m bench.flows " + " ".join(sys.argv[1:]) + "\n")
    runs: list[dict[str, Any]] = []
    with RedisServer() as server:
        for r in range(args.rounds):
            shape = (args.flows, args.children, args.concurrency, args.wide, args.repeats)
            if node:
                load = os.getloadavg()[0]
                runs.append({"round": r, **bullmq_run(server.port, *shape), "load_before": load,
                             "load_after": os.getloadavg()[0]})
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
            load = os.getloadavg()[0]
            runs.append({"round": r, **asyncio.run(conveyor_run(server.url, *shape)), "load_before": load,
                         "load_after": os.getloadavg()[0]})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    (outdir / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    summary = report(runs)
    (outdir / "summary.md").write_text(summary)
    print(summary)
    print(f"raw results: {outdir.relative_to(HERE.parent)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
