"""Where the drain's time goes: CPU split between the worker and Redis, and a py-spy profile.

    python -m bench.profile [--n 200000] [--out /tmp/conveyor-profile] [--native]

1. A plain drain of N no-op jobs (`result_ttl=0`) with CPU seconds of the worker process and of
   redis-server read from /proc, so it shows which side saturates first.
2. The same drain with py-spy attached to the worker (non-blocking sampling, so the worker is not
   paused; `--native` adds C frames but pauses it); writes `drain.txt` (collapsed stacks,
   `py-spy record --format raw`) and a summary of the functions with the most self and inclusive
   samples. Needs `pip install py-spy` in the bench venv.
3. Bulk enqueue: wall time vs redis-server CPU, and py-spy on the producer (`enqueue.txt`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import measure
from conveyor import JobOptions, Queue
from conveyor.testing import RedisServer

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def _set_paused(url: str, queue: str, paused: bool) -> None:
    async with Queue(queue, redis=url) as q:
        await (q.pause() if paused else q.resume())


def paused_drain(server: RedisServer, n: int, raw: Path | None = None) -> dict[str, Any]:
    """N no-op jobs wait in a paused queue while a fresh worker starts (imports, connections),
    so CPU counters and the profile cover the drain alone; then the queue is resumed."""
    assert server.proc is not None
    queue = measure.qname("prof")
    measure._run(_set_paused(server.url, queue, True))
    measure._run(measure._enqueue_bulk(server.url, queue, "noop", n, JobOptions(result_ttl=0)))
    worker = measure.WorkerProcess(server.url, queue, n, 100)
    proc = None
    try:
        time.sleep(2.0)  # started and idle (startup takes about 0.2 s)
        if raw is not None:
            proc = spy(worker.proc.pid, raw)
        worker_before, redis_before = cpu_s(worker.proc.pid), cpu_s(server.proc.pid)
        measure._run(_set_paused(server.url, queue, False))
        rep = worker.wait_report("done", 600)
        t_settled = measure._wait_settled(server.url, queue)
        wall = t_settled - rep["t_first"]
        return {"n": n, "wall_s": wall, "rate": n / wall,
                "worker_cpu_s": cpu_s(worker.proc.pid) - worker_before,
                "redis_cpu_s": cpu_s(server.proc.pid) - redis_before}
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        worker.stop()


def enqueue_split(server: RedisServer, n: int) -> dict[str, Any]:
    """Bulk enqueue: wall time vs redis-server CPU. The chunks go one after another (each call
    waits for its reply), so wall - redis CPU is roughly the client's own share."""
    assert server.proc is not None
    redis_before = cpu_s(server.proc.pid)
    rate = measure._run(measure._enqueue_bulk(server.url, measure.qname("enq"), "noop", n, JobOptions()))
    wall = n / rate
    return {"n": n, "rate": rate, "wall_s": wall, "redis_cpu_s": cpu_s(server.proc.pid) - redis_before}


def pyspy_bin() -> str:
    return shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


NATIVE: list[str] = []  # ["--native"] with --native: C frames too (epoll wait, writev, ...)


def spy(pid: int, raw: Path) -> subprocess.Popen[bytes]:
    # --native pauses the process for each sample (py-spy cannot unwind C frames without it)
    mode = NATIVE or ["--nonblocking"]
    cmd = [pyspy_bin(), "record", "--pid", str(pid), "--rate", "500", *mode, "--format", "raw", "--output", str(raw)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the measured work starts
    return proc


def profiled_enqueue(server: RedisServer, n: int, out: Path) -> Path:
    """py-spy on this very process while it bulk-enqueues (the producer side)."""
    raw = out / "enqueue.txt"
    proc = spy(os.getpid(), raw)
    try:
        measure._run(measure._enqueue_bulk(server.url, measure.qname("enq"), "noop", n, JobOptions()))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
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
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "conveyor-profile")
    ap.add_argument("--no-spy", action="store_true", help="only the CPU split")
    ap.add_argument("--native", action="store_true", help="py-spy --native: include C frames")
    a = ap.parse_args()
    if a.native:
        NATIVE.append("--native")
    a.out.mkdir(parents=True, exist_ok=True)
    with RedisServer() as server:
        split = paused_drain(server, a.n)
        wall = split["wall_s"]
        print(f"drain of {split['n']:,} no-op jobs: {split['rate']:,.0f} jobs/s over {wall:.2f} s; "
              f"worker CPU {split['worker_cpu_s']:.2f} s ({100 * split['worker_cpu_s'] / wall:.0f} % of one "
              f"core), redis-server CPU {split['redis_cpu_s']:.2f} s "
              f"({100 * split['redis_cpu_s'] / wall:.0f} %)")
        enq = enqueue_split(server, a.n)
        print(f"bulk enqueue of {enq['n']:,} jobs: {enq['rate']:,.0f} jobs/s over {enq['wall_s']:.2f} s; "
              f"redis-server CPU {enq['redis_cpu_s']:.2f} s "
              f"({100 * enq['redis_cpu_s'] / enq['wall_s']:.0f} % of the wall time)")
        if not a.no_spy:
            spied = paused_drain(server, a.n, a.out / "drain.txt")
            print(f"drain under py-spy: {spied['rate']:,.0f} jobs/s")
            enqueue_raw = profiled_enqueue(server, a.n, a.out)
            for label, raw in (("drain", a.out / "drain.txt"), ("enqueue", enqueue_raw)):
                summary = summarize(raw)
                (a.out / f"{label}-summary.txt").write_text(summary + "\n")
                print(f"\n## {label} (py-spy)\n{summary}")


if __name__ == "__main__":
    main()
