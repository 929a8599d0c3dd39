"""Redis's own cost per job, for two Conveyor versions and BullMQ for Node, against one redis-server
with the default configuration, in alternating rounds (docs/benchmarks.md, "Redis work and memory").

    .venv/bin/python -m bench.redis_cost --base <git revision>            # Conveyor only
    BULLMQ_BENCH_DIR=<bullmq harness> .venv/bin/python -m bench.redis_cost --base <rev>   # with BullMQ

Per round, for each variant:
- cpu: bulk-enqueue N no-op jobs (`result_ttl=0`), then one fresh worker process (concurrency 100)
  drains them. Redis CPU is the server's own counters (INFO cpu used_cpu_sys + used_cpu_user), read
  before and after the enqueue and the drain (worker spawn until nothing is ready or active), in
  microseconds per job; the enqueue and drain rates are recorded too.
- waiting: INFO used_memory growth per waiting job, M jobs with a 200-byte payload (MEMORY USAGE of one
  job record and of the ready set alongside).
- retained: used_memory growth per retained completed job, K jobs with a 2 KB payload whose handler
  returns a 4 KB result (default retention), after the drain has settled.
Variants: `base` (the revision, extracted with `git archive`), `this` (the checkout) in events modes
`all`, `followed` (nobody follows: no lifecycle events) and `none`, and `bullmq-node` (bench.mjs:
addBulk + drain with removeOnComplete, CPU over the whole run; memory: M waiting jobs with the same
payload, bench/bullmq_memory.mjs). The database is flushed between steps (a private server).
Raw results (one JSON line per step) and a summary go to bench/results/<UTC time>-redis-cost/.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import redis as syncredis

from bench.measure import WorkerProcess, _wait_settled, qname
from conveyor.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"
RESULTS = ROOT / "bench" / "results"
NODE_FILES = ("bench.mjs", "package.json", "package-lock.json")
THIS_MODES = ("all", "followed", "none")


def cpu_s(r: syncredis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def used_memory(r: syncredis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def extract(rev: str) -> tuple[Path, str]:
    """`src/` of a git revision, extracted once under bench/.work/; (its src folder, short sha)."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    dest = WORK / f"base-{sha}"
    if not (dest / "src" / "conveyor").exists():
        tar = subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, capture_output=True, check=True).stdout
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            t.extractall(dest, filter="data")
    return dest / "src", sha


class Variant:
    """One Conveyor version (a src folder on PYTHONPATH) in one events mode ('' = do not set one)."""

    def __init__(self, label: str, src: Path, events: str) -> None:
        self.label, self.src, self.events = label, src, events
        self.env = {**os.environ, "PYTHONPATH": str(src)}

    def enqueue(self, url: str, queue: str, n: int, payload: int = 0, keep: bool = False) -> float:
        cmd = [sys.executable, "-m", "bench.cost_proc", "--url", url, "--queue", queue, "--n", str(n),
               "--payload", str(payload), "--events", self.events] + (["--keep"] if keep else [])
        run = subprocess.run(cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=900)
        if run.returncode != 0:
            raise RuntimeError(f"{self.label}: enqueue failed: {run.stderr[-500:]}")
        return float(json.loads(run.stdout.strip().splitlines()[-1])["rate"])

    def drain(self, url: str, queue: str, n: int) -> tuple[float, float]:
        """(drain rate from first job start to last job end, time the drain settled)."""
        worker = WorkerProcess(url, queue, n, 100, prefix=["env", f"PYTHONPATH={self.src}"])
        try:
            rep = worker.wait_report("done", 900)
            settled = _wait_settled(url, queue, timeout=300)
            return n / (rep["t_last"] - rep["t_first"]), settled
        finally:
            worker.stop()

    def cpu(self, r: syncredis.Redis, url: str, n: int) -> dict[str, Any]:
        queue = qname("cost")
        c0 = cpu_s(r)
        enqueue_rate = self.enqueue(url, queue, n)
        c1 = cpu_s(r)
        drain_rate, _ = self.drain(url, queue, n)
        c2 = cpu_s(r)
        return {"enqueue_cpu_us_per_job": (c1 - c0) / n * 1e6, "drain_cpu_us_per_job": (c2 - c1) / n * 1e6,
                "total_cpu_us_per_job": (c2 - c0) / n * 1e6, "enqueue_rate": enqueue_rate,
                "drain_rate": drain_rate}

    def waiting(self, r: syncredis.Redis, url: str, m: int) -> dict[str, Any]:
        queue = qname("mem")
        self.enqueue(url, qname("warm"), 10, payload=200)  # scripts loaded, registry created
        before = used_memory(r)
        self.enqueue(url, queue, m, payload=200)
        after = used_memory(r)
        some = r.zrange(f"cv:{{{queue}}}:ready", 0, 0)
        job = r.memory_usage(f"cv:{{{queue}}}:job:{some[0]}") if some else None
        return {"bytes_per_waiting_job": (after - before) / m, "job_record_bytes": job,
                "ready_set_bytes_per_job": (r.memory_usage(f"cv:{{{queue}}}:ready", samples=0) or 0) / m,
                "events_entries": r.xlen(f"cv:{{{queue}}}:events")}

    def retained(self, r: syncredis.Redis, url: str, k: int) -> dict[str, Any]:
        queue = qname("keep")
        before = used_memory(r)
        self.enqueue(url, queue, k, payload=2048, keep=True)
        self.drain(url, queue, k)
        r.delete(f"bench:report:{queue}")
        after = used_memory(r)
        some = r.zrange(f"cv:{{{queue}}}:completed", 0, 0)
        job = r.memory_usage(f"cv:{{{queue}}}:job:{some[0]}") if some else None
        return {"bytes_per_retained_job": (after - before) / k, "retained_record_bytes": job,
                "payload_plus_result_bytes": 2048 + 4096, "events_entries": r.xlen(f"cv:{{{queue}}}:events")}


class Node:
    """BullMQ for Node: the harness's bench.mjs (and bench/bullmq_memory.mjs) in bench/.work/."""

    def __init__(self, src: Path) -> None:
        self.dir = WORK / "bullmq-node"
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in NODE_FILES:
            shutil.copyfile(src / name, self.dir / name)
        shutil.copyfile(ROOT / "bench" / "bullmq_memory.mjs", self.dir / "bullmq_memory.mjs")
        if not (self.dir / "node_modules" / "bullmq").exists():
            subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=self.dir, check=True)

    def node(self, *args: str) -> dict[str, Any]:
        run = subprocess.run(["node", *args], cwd=self.dir, capture_output=True, text=True, timeout=900)
        lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
        if run.returncode != 0 or not lines:
            raise RuntimeError(f"node exited {run.returncode}: {run.stderr[-300:]}")
        out: dict[str, Any] = json.loads(lines[-1])
        return out

    def cpu(self, r: syncredis.Redis, port: int, n: int) -> dict[str, Any]:
        c0 = cpu_s(r)
        out = self.node("bench.mjs", str(n), "100", str(port))
        c1 = cpu_s(r)
        return {"total_cpu_us_per_job": (c1 - c0) / n * 1e6, "enqueue_rate": out["enqueue_bulk_per_s"],
                "drain_rate": out["drain_per_s"]}

    def waiting(self, r: syncredis.Redis, port: int, m: int) -> dict[str, Any]:
        self.node("bullmq_memory.mjs", "10", str(port), "200")
        before = used_memory(r)
        self.node("bullmq_memory.mjs", str(m), str(port), "200")
        return {"bytes_per_waiting_job": (used_memory(r) - before) / m}


def summarize(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    figures = ["total_cpu_us_per_job", "enqueue_cpu_us_per_job", "drain_cpu_us_per_job", "enqueue_rate",
               "drain_rate", "bytes_per_waiting_job", "bytes_per_retained_job"]
    med: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(r["variant"] for r in rows):
        for f in figures:
            vals = [r[f] for r in rows if r["variant"] == label and f in r]
            if vals:
                med.setdefault(label, {})[f] = statistics.median(vals)
    lines = [f"Redis cost per job, one redis-server ({meta['server']}, default configuration), "
             f"{meta['rounds']} rounds, N={meta['n']:,} (CPU), M={meta['m']:,} (waiting), K={meta['k']:,} "
             f"(retained); medians. Base = {meta['base']}, this = {meta['commit']}.", "",
             "| Variant | " + " | ".join(figures) + " |", "|---|" + "---:|" * len(figures)]
    for label, vals in med.items():
        cells = [f"{vals[f]:,.1f}" if f in vals else "-" for f in figures]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    base = med.get("base", {})
    lines.append("")
    for label, vals in med.items():
        if label == "base":
            continue
        for f in ("total_cpu_us_per_job", "drain_cpu_us_per_job", "bytes_per_waiting_job", "bytes_per_retained_job"):
            if f in vals and base.get(f):
                lines.append(f"- {label} / base, {f}: {vals[f] / base[f]:.2f}")
    node = med.get("bullmq-node", {})
    for label in (x for x in med if x.startswith("this")):
        for f in ("enqueue_rate", "drain_rate", "total_cpu_us_per_job", "bytes_per_waiting_job"):
            if f in node and f in med[label]:
                lines.append(f"- {label} / bullmq-node, {f}: {med[label][f] / node[f]:.2f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision to compare with (e.g. main, HEAD~3)")
    ap.add_argument("--n", type=int, default=100_000, help="no-op jobs per CPU run")
    ap.add_argument("--m", type=int, default=100_000, help="waiting jobs per memory run")
    ap.add_argument("--k", type=int, default=10_000, help="retained jobs per memory run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default=",".join(THIS_MODES), help="events modes of this checkout to run")
    ap.add_argument("--steps", default="cpu,waiting,retained", help="which measurements to run")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    base_src, base_sha = extract(a.base)
    variants = [Variant("base", base_src, "")]
    variants += [Variant(f"this-{mode}", ROOT / "src", mode) for mode in a.modes.split(",") if mode]
    node_dir = os.environ.get("BULLMQ_BENCH_DIR")
    node = Node(Path(node_dir).resolve()) if node_dir else None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True)
    out = a.out or RESULTS / (time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-redis-cost")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with RedisServer() as server, syncredis.Redis.from_url(server.url, decode_responses=True) as r, \
            (out / "runs.jsonl").open("a") as raw:
        meta = {"server": r.info("server")["redis_version"], "n": a.n, "m": a.m, "k": a.k, "rounds": a.rounds,
                "base": base_sha, "commit": commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else ""),
                "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "nproc": os.cpu_count()}

        def record(row: dict[str, Any]) -> None:
            row.update(loadavg=[round(x, 2) for x in os.getloadavg()], ts=time.strftime("%H:%M:%S", time.gmtime()))
            rows.append(row)
            raw.write(json.dumps(row) + "\n")
            raw.flush()
            brief = {k: round(v, 1) for k, v in row.items() if isinstance(v, float)}
            print(f"[{row['ts']} r{row['round']} {row['variant']} {row['step']}] {brief}", file=sys.stderr, flush=True)

        order: list[Any] = [*variants, node] if node else list(variants)
        steps = a.steps.split(",")
        for rnd in range(a.rounds):
            for v in order if rnd % 2 == 0 else list(reversed(order)):
                label = "bullmq-node" if v is node else v.label
                where = server.port if v is node else server.url
                for step, size in (("cpu", a.n), ("waiting", a.m), ("retained", a.k)):
                    if step not in steps or (v is node and step == "retained"):
                        continue
                    r.flushall()
                    record({"variant": label, "round": rnd, "step": step, **getattr(v, step)(r, where, size)})
        meta["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    text = summarize(rows, meta)
    (out / "summary.md").write_text(text)
    print(text)
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
