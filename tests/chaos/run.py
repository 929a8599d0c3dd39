"""`make chaos`: the long form of the chaos suite. 10,000 jobs per backend (standalone, then Cluster;
`--backends` adds sentinel), and on standalone and Cluster 200 flows of 5 children more, under every
fault for several minutes; prints the counts of each run and
exits 1 if any must-be-zero count is not zero.

    python -m tests.chaos.run [--jobs 10000] [--window 240] [--backends standalone,cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos.backends import Cluster, Sentinel, Standalone
from tests.chaos.scenario import Plan, run


def plans(jobs: int, window_s: float) -> dict[str, Plan]:
    restarts = max(1, int(window_s // 80))
    common = {"jobs": jobs, "window_s": window_s, "workers": 4, "concurrency": 8, "drain_timeout_s": 600.0}
    flows = jobs // 50  # plus flows of 5 children each, parents on a queue in another slot
    return {
        "standalone": Plan(**common, kill_every_s=8, pause_every_s=10, reset_every_s=3, server_restarts=restarts,
                           flows=flows),
        "cluster": Plan(**common, kill_every_s=8, pause_every_s=10, server_restarts=restarts, flows=flows,
                        migrations=max(1, restarts - 1)),
        "sentinel": Plan(**common, kill_every_s=8, pause_every_s=10, failovers=1),
    }


async def main(jobs: int, window_s: float, backends: list[str], keep: bool) -> int:
    failed = False
    for name in backends:
        backend = {"standalone": Standalone, "cluster": Cluster}.get(name)
        tmp = tempfile.mkdtemp(prefix=f"conveyor-chaos-{name}-")
        try:
            started = time.monotonic()
            if keep:
                print(f"{name}: worker logs in {tmp}/logs", flush=True)
            target = backend() if backend is not None else Sentinel(Path(tmp) / "sentinel")
            counts = await run(plans(jobs, window_s)[name], target, Path(tmp))
            print(counts.table(f"{name}: {jobs} jobs, {time.monotonic() - started:.0f} s"), flush=True)
            problems = counts.problems()
            print(f"  must be zero: {problems or 'all zero'}\n", flush=True)
            failed = failed or bool(problems)
        finally:
            if not keep:
                shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=240.0, help="seconds of faults and enqueueing")
    parser.add_argument("--backends", default="standalone,cluster")
    parser.add_argument("--keep", action="store_true", help="keep the worker logs")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.jobs, args.window, [b for b in args.backends.split(",") if b], args.keep)))
