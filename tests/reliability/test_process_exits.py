"""SystemExit and SIGINT outside a handler, in real processes: a worker's background loop that
raises SystemExit is restarted like any loop that ended on an error (the process and its jobs go on)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from conveyor.testing import RedisServer

ROOT = Path(__file__).resolve().parents[2]

LOOP_EXIT = textwrap.dedent("""
    import asyncio, sys
    from conveyor import Queue, Worker

    async def main(url: str, name: str) -> None:
        queue = Queue(name, redis=url)
        done = asyncio.Event()

        async def note(ctx, data):
            done.set()

        worker = Worker(queue, {"note": note}, stalled_interval_ms=50)
        sweeper = worker._sweeper
        calls = 0

        async def exits_once() -> None:  # stands for code a loop calls that raises SystemExit
            nonlocal calls
            calls += 1
            if calls == 1:
                raise SystemExit(3)
            await sweeper()

        worker._sweeper = exits_once
        await worker.start()
        while worker.loop_restarts < 1:
            await asyncio.sleep(0.01)
        await queue.add("note")
        await asyncio.wait_for(done.wait(), 60)
        await worker.close()
        print("worker went on", flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")

def test_a_background_loop_raising_system_exit_is_restarted_and_the_worker_goes_on(
    redis_server: RedisServer, qname: str, tmp_path: Path
) -> None:
    script = tmp_path / "loop_exit.py"
    script.write_text(LOOP_EXIT)
    proc = subprocess.run([sys.executable, str(script), redis_server.url, qname], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "worker went on" in proc.stdout
    assert "the sweep loop ended (LoopExitError: SystemExit(3) raised in the sweep loop)" in proc.stderr
