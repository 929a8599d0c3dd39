"""Where the drain's time goes: CPU split between the worker and Redis, and a py-spy profile.

    python -m bench.profile [--n 200000] [--out bench/profiles]

1. A plain drain of N no-op jobs (`result_ttl=0`) with CPU seconds of the worker process and of
   redis-server read from /proc, so it shows which side saturates first.
2. The same drain with py-spy attached to the worker (non-blocking sampling, so the worker is not
   paused); writes `drain.txt` (collapsed stacks, `py-spy record --format raw`) and a summary of the
   functions with the most self and inclusive samples. Needs `pip install py-spy` in the bench venv.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench import measure
from conveyor import JobOptions
from conveyor.testing import RedisServer

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def cpu_split(server: RedisServer, n: int) -> dict[str, Any]:
    assert server.proc is not None
    queue = measure.qname("cpu")
    measure._run(measure._enqueue_bulk(server.url, queue, "noop", n, JobOptions(result_ttl=0)))
    redis_before = cpu_s(server.proc.pid)
    worker = measure.WorkerProcess(server.url, queue, n, 100)
    try:
        rep = worker.wait_report("done", 600)
        t_settled = measure._wait_settled(server.url, queue)
        wall = t_settled - rep["t_first"]
        return {"n": n, "wall_s": wall, "rate": n / wall,
                "worker_cpu_s": cpu_s(worker.proc.pid), "redis_cpu_s": cpu_s(server.proc.pid) - redis_before}
    finally:
        worker.stop()


def profiled(server: RedisServer, n: int, out: Path) -> Path:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    queue = measure.qname("prof")
    measure._run(measure._enqueue_bulk(server.url, queue, "noop", n, JobOptions(result_ttl=0)))
    worker = measure.WorkerProcess(server.url, queue, n, 100)
    raw = out / "drain.txt"
    spy = subprocess.Popen([pyspy, "record", "--pid", str(worker.proc.pid), "--rate", "500", "--nonblocking",
                            "--format", "raw", "--output", str(raw)], stdout=subprocess.DEVNULL)
    try:
        worker.wait_report("done", 600)
        measure._wait_settled(server.url, queue)
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
        worker.stop()
    return raw


def summarize(raw: Path, top: int = 30) -> str:
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        self_c[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    out = [f"{total} samples", "", "self %  | function"]
    out += [f"{100 * c / total:6.1f} | {f}" for f, c in self_c.most_common(top)]
    out += ["", "incl. % | function"]
    out += [f"{100 * c / total:6.1f} | {f}" for f, c in incl.most_common(top)]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("profiles"))
    ap.add_argument("--no-spy", action="store_true", help="only the CPU split")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    with RedisServer() as server:
        split = cpu_split(server, a.n)
        wall = split["wall_s"]
        print(f"drain of {split['n']:,} no-op jobs: {split['rate']:,.0f} jobs/s over {wall:.2f} s; "
              f"worker CPU {split['worker_cpu_s']:.2f} s ({100 * split['worker_cpu_s'] / wall:.0f} % of one "
              f"core, includes startup), redis-server CPU {split['redis_cpu_s']:.2f} s "
              f"({100 * split['redis_cpu_s'] / wall:.0f} %)")
        if not a.no_spy:
            raw = profiled(server, a.n, a.out)
            summary = summarize(raw)
            (a.out / "drain-summary.txt").write_text(summary + "\n")
            print(summary)


if __name__ == "__main__":
    main()
