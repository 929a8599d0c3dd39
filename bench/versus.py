"""This checkout against an earlier commit, in one session: bulk enqueue, drain and single add, the two
taking turns (A B, then B A, ...) against one redis-server, so every ratio compares runs made a
minute apart on the same machine.

    .venv/bin/python -m bench.versus --base <commit> [--rounds 5]

The earlier commit's `src/` and `bench/` are extracted with `git archive` into a temporary folder; each
run is a fresh process of that tree's own `bench.measure` (drain: 20,000 no-op jobs bulk-enqueued,
then one fresh worker process at concurrency 100, `result_ttl=0`; single add: 20,000 `add` calls,
500 at a time) with that tree's `src/` first on the import path. Raw results (one JSON line per run,
with the load average before and after) and a summary go to bench/results/<UTC time>-versus/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from conveyor.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FIGURES = {
    "drain": ("from bench import measure; import json, sys; "
              "print(json.dumps(measure.drain(sys.argv[1], result_ttl=0)))"),
    "single": ("from bench import measure; import json, sys; "
               "print(json.dumps(measure.enqueue_single(sys.argv[1])))"),
}
KEYS = {"drain": ("enqueue_bulk_per_s", "rate", "settled_rate"), "single": ("enqueue_single_per_s",)}


def extract(commit: str, into: Path) -> str:
    """`src/` and `bench/` of `commit` under `into`; returns the full commit id."""
    full = subprocess.run(["git", "rev-parse", commit], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", full, "src", "bench"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return full


def one(tree: Path, figure: str, url: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree}"}
    load_before = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-c", FIGURES[figure], url], cwd=tree, env=env, check=True,
                         capture_output=True, text=True, timeout=900).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["load_before"], result["load_after"] = round(load_before, 2), round(os.getloadavg()[0], 2)
    return result


def summarise(runs: list[dict[str, Any]]) -> str:
    lines = ["| figure | this checkout (median) | base (median) | ratio this/base per round | median ratio |",
             "|---|---:|---:|---|---:|"]
    for figure, keys in KEYS.items():
        for key in keys:
            mine = [r[key] for r in runs if r["tree"] == "head" and r["figure"] == figure]
            base = [r[key] for r in runs if r["tree"] == "base" and r["figure"] == figure]
            ratios = [a / b for a, b in zip(mine, base, strict=True)]
            lines.append(f"| {figure} {key} (/s) | {statistics.median(mine):,.0f} | {statistics.median(base):,.0f} "
                         f"| {', '.join(f'{x:.2f}' for x in ratios)} | **{statistics.median(ratios):.2f}** |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the earlier commit")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out_dir = RESULTS / f"{stamp}-versus"
    out_dir.mkdir(parents=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="conveyor-versus-") as tmp, RedisServer() as server:
        base_tree = Path(tmp)
        base = extract(a.base, base_tree)
        trees = {"head": ROOT, "base": base_tree}
        for r in range(a.rounds):
            order = ["head", "base"] if r % 2 == 0 else ["base", "head"]
            for figure in FIGURES:
                for name in order:
                    result = {"round": r, "tree": name, "figure": figure, **one(trees[name], figure, server.url)}
                    runs.append(result)
                    print(json.dumps(result), file=sys.stderr, flush=True)
                    with (out_dir / "runs.jsonl").open("a") as f:
                        f.write(json.dumps(result) + "\n")
    summary = (f"# This checkout ({head[:12]}) against {base[:12]}\n\n"
               f"{a.rounds} rounds, A B / B A alternating, one redis-server; {os.cpu_count()} CPUs.\n"
               f"Command: `python -m bench.versus --base {a.base} --rounds {a.rounds}`\n\n{summarise(runs)}\n")
    (out_dir / "summary.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
