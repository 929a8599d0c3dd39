"""One interleaved session: Conveyor, BullMQ for Node and the Python peers, taking turns, so that every
ratio compares figures measured minutes apart on the same machine and the same redis-server.

    PEER_BENCH_DIR=<python peer harness> BULLMQ_BENCH_DIR=<bullmq harness> \\
        .venv/bin/python -m bench.interleaved                # the full session (10-20 minutes)
    ... -m bench.interleaved --rounds 1 --scale 0.1          # a short check of the machinery

The peer harness (one script per library, `run_all.py`, `common.py`, `setup.sh`) and the BullMQ
anchor (`bench.mjs`, `package.json`, `package-lock.json`) are not part of this repository; the two
variables name where they are. Every run of every library uses the harness's own measurement
(`run_all.run_one`: a fresh worker process, drain timed from the first handler start to the last
handler end), Conveyor included, against one private redis-server on a free loopback port.

Phase 1 (no-op: enqueue N, then drain with concurrency 100), `--rounds` rounds, the order reversed
on odd rounds. Phase 2 (IO-bound 2,000 x 50 ms, then pickup latency of 500 jobs one per 10 ms), the
same. Raw results (one JSON line per run, with the load average before and after), the exact command
and a summary with per-round ratios go to bench/results/<UTC time>-interleaved/.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.interleaved_report import summary
from conveyor.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / ".work"
PEERS_ENV, NODE_ENV = "PEER_BENCH_DIR", "BULLMQ_BENCH_DIR"

NOOP_STEPS = ["conveyor", "bullmq-node", "dramatiq", "dramatiq-t8", "huey", "huey-w8", "taskiq-stream",
              "bullmq", "conveyor-default", "conveyor-own"]
LATENCY_STEPS = ["conveyor", "taskiq-list", "taskiq-stream", "saq", "bullmq"]
NODE_FILES = ("bench.mjs", "package.json", "package-lock.json")


def harness(env: str, required: tuple[str, ...]) -> Path:
    value = os.environ.get(env)
    if not value:
        raise SystemExit(f"set {env} to the folder of the harness (see the module docstring)")
    path = Path(value).resolve()
    missing = [f for f in required if not (path / f).exists()]
    if missing:
        raise SystemExit(f"{env} has no {', '.join(missing)}")
    return path


def fingerprint(folder: Path, names: list[str]) -> dict[str, str]:
    """sha256 of each harness file, so a run names exactly what it ran without naming where."""
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest()[:16] for n in sorted(names)}


class Session:
    """The peers' harness imported from PEER_BENCH_DIR, the Node anchor, and the raw-results file."""

    def __init__(self, peers: Path, node: Path, out: Path, scale: float, redis: RedisServer,
                 venv_root: str | None = None, with_node: bool = True) -> None:
        self.peers, self.node_src, self.out, self.scale, self.redis = peers, node, out, scale, redis
        self.node_dir = WORK / "bullmq-node"
        self.raw = (out / "runs.jsonl").open("a")
        if venv_root is None:  # every peer's venv, built on first use
            setup = subprocess.run([str(peers / "setup.sh")], check=True, capture_output=True, text=True)
            venv_root = setup.stdout.strip().splitlines()[-1]
        os.environ["PEERBENCH_VENV_ROOT"] = venv_root
        os.environ["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{redis.port}/1"
        os.environ["CONVEYOR_VENV"] = sys.prefix
        sys.path.insert(0, str(peers))
        self.run_all: Any = importlib.import_module("run_all")
        self.entries = {e["name"]: e for e in self.run_all.ENTRIES + self.run_all.EXTRAS}
        # Raw results name no path of this machine: harness, venvs, checkout and home become placeholders.
        self.hide = [(str(peers), "<peers>"), (str(node), "<bullmq>"),
                     (os.environ["PEERBENCH_VENV_ROOT"], "<peer venvs>"), (str(ROOT), "<checkout>"),
                     (str(Path.home()), "<home>"), ("/tmp/", "<tmp>/")]
        if with_node:
            self._prepare_node()

    def _prepare_node(self) -> None:
        self.node_dir.mkdir(parents=True, exist_ok=True)
        for name in NODE_FILES:
            shutil.copyfile(self.node_src / name, self.node_dir / name)
        if not (self.node_dir / "node_modules" / "bullmq").exists():
            subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=self.node_dir, check=True)

    def record(self, result: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(result)
        for secret, placeholder in self.hide:
            text = text.replace(secret, placeholder)
        self.raw.write(text + "\n")
        self.raw.flush()
        return dict(json.loads(text))

    def step(self, name: str, mode: str, round_no: int) -> dict[str, Any]:
        load_before, t0 = os.getloadavg(), time.time()
        if name == "bullmq-node":
            result = self._node()
        elif name == "conveyor-own":
            result = self._conveyor_own(round_no)
        else:
            self.run_all.common.redis_cmd("FLUSHDB")
            result = self.run_all.run_one(self.entries[name], mode, round_no, self.scale)
        result.update(step=name, mode=mode, round=round_no, load_before=[round(x, 2) for x in load_before],
                      load_after=[round(x, 2) for x in os.getloadavg()], wall_s=round(time.time() - t0, 1),
                      ts=time.strftime("%H:%M:%S", time.gmtime(t0)))
        brief = {k: round(v, 2) for k, v in result.items() if isinstance(v, float)}
        print(f"[{result['ts']} r{round_no} {mode} {name}] {brief if result.get('ok') else result.get('error')}",
              file=sys.stderr, flush=True)
        return self.record(result)

    def _node(self) -> dict[str, Any]:
        n = max(10, int(20_000 * self.scale))
        run = subprocess.run(["node", "bench.mjs", str(n), "100", str(self.redis.port)], cwd=self.node_dir,
                             capture_output=True, text=True, timeout=900)
        lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
        if run.returncode != 0 or not lines:
            return {"ok": False, "error": f"node exited {run.returncode}: {run.stderr[-300:]}"}
        out: dict[str, Any] = json.loads(lines[-1])
        out.update(ok=True, lib="bullmq-node", drain_rate=out["drain_per_s"], enqueue_rate=out["enqueue_bulk_per_s"])
        return out

    def _conveyor_own(self, round_no: int) -> dict[str, Any]:
        target = self.out / f"conveyor-own-r{round_no}.json"
        run = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(target)], cwd=ROOT,
                             capture_output=True, text=True, timeout=900)
        if run.returncode != 0:
            return {"ok": False, "error": run.stderr[-300:]}
        own = json.loads(target.read_text())
        return {"ok": True, "lib": "conveyor-own", "drain_rate": own["drain_per_s"],
                "enqueue_rate": own["enqueue_bulk_per_s"], "file": target.name}

    def close(self) -> None:
        self.raw.close()


def rounds(steps: list[str], count: int, mode_runs: Callable[[str, int], None]) -> None:
    for r in range(count):
        for name in steps if r % 2 == 0 else list(reversed(steps)):
            mode_runs(name, r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every job count (short checks)")
    ap.add_argument("--noop-steps", default=",".join(NOOP_STEPS))
    ap.add_argument("--latency-steps", default=",".join(LATENCY_STEPS))
    ap.add_argument("--phases", default="noop,latency", help="noop, latency or both")
    ap.add_argument("--venv-root", default=None,
                    help="use the peer venvs already in this folder (only the steps' libraries) instead of setup.sh")
    a = ap.parse_args()
    peers = harness(PEERS_ENV, ("run_all.py", "common.py", "setup.sh"))
    node = harness(NODE_ENV, NODE_FILES)
    out = RESULTS / (time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-interleaved")
    out.mkdir(parents=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True)
    args = " ".join(sys.argv[1:])
    if a.venv_root:
        args = args.replace(a.venv_root, "<peer venvs>")
    (out / "command.txt").write_text(
        f"{PEERS_ENV}=<python peer harness> {NODE_ENV}=<bullmq harness> .venv/bin/python -m bench.interleaved {args}\n"
    )
    meta: dict[str, Any] = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": {**vars(a), "venv_root": "<peer venvs>" if a.venv_root else None},
        "commit": commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else ""),
        "harness_sha256": {"peers": fingerprint(peers, [p.name for p in peers.glob("*.py")] + ["setup.sh"]),
                           "bullmq": fingerprint(node, list(NODE_FILES))},
        "nproc": os.cpu_count(), "python": sys.version.split()[0],
    }
    with RedisServer() as redis:
        meta["server"] = subprocess.run([redis.binary, "--version"], capture_output=True, text=True).stdout.strip()
        steps = (a.noop_steps.split(",") if "noop" in a.phases else []) + (
            a.latency_steps.split(",") if "latency" in a.phases else [])
        session = Session(peers, node, out, a.scale, redis, a.venv_root, "bullmq-node" in steps)
        try:
            phases = a.phases.split(",")
            def noop(name: str, r: int) -> None:
                session.step(name, "noop", r)

            def io_and_latency(name: str, r: int) -> None:
                session.step(name, "io", r)
                session.step(name, "latency", r)

            if "noop" in phases:
                rounds(a.noop_steps.split(","), a.rounds, noop)
            if "latency" in phases:
                rounds(a.latency_steps.split(","), a.rounds, io_and_latency)
        finally:
            session.close()
    meta["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    text = summary(runs, meta, (out / "command.txt").read_text().strip())
    (out / "summary.md").write_text(text)
    print(text)
    print(f"\nresults: {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
