"""SystemExit and SIGINT outside a handler, in real processes: a worker's background loop that
raises SystemExit is restarted like any loop that ended on an error (the process and its jobs go on);
Ctrl-C while `conveyor worker` imports the app ends it with code 130 and one line, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
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
        sweeper = worker.sweeper.run
        calls = 0

        async def exits_once() -> None:  # stands for code a loop calls that raises SystemExit
            nonlocal calls
            calls += 1
            if calls == 1:
                raise SystemExit(3)
            await sweeper()

        worker.sweeper.run = exits_once
        await worker.start()
        while worker.loop_restarts < 1:
            await asyncio.sleep(0.01)
        await queue.add("note")
        await asyncio.wait_for(done.wait(), 60)
        await worker.close()
        print("worker went on", flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")

UNCLOSED = textwrap.dedent("""
    import asyncio, logging, sys
    from conveyor import Queue, Worker

    async def main(url: str, name: str) -> None:
        queue = Queue(name, redis=url)
        done = asyncio.Event()

        async def note(ctx, data):
            done.set()

        worker = Worker(queue, {"note": note})
        await worker.start()
        await queue.add("note")
        await asyncio.wait_for(done.wait(), 60)
        print("returning with the worker open", flush=True)  # asyncio.run then cancels its loops

    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")

SLOW_APP = textwrap.dedent("""
    import pathlib, time
    pathlib.Path("importing").write_text("1")
    for _ in range(1200):  # a slow import (a model loading, say): up to two minutes
        time.sleep(0.1)
    from conveyor import Conveyor
    app = Conveyor()
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


def test_an_event_loop_ending_with_the_worker_open_is_one_warning_not_loop_errors(
    redis_server: RedisServer, qname: str, tmp_path: Path
) -> None:
    """asyncio.run cancels every task when its coroutine returns: the worker's loops end cancelled.
    That is one warning naming the cause (the Worker was not closed), not an error per loop saying
    it ended and will be restarted."""
    script = tmp_path / "unclosed.py"
    script.write_text(UNCLOSED)
    proc = subprocess.run([sys.executable, str(script), redis_server.url, qname], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "returning with the worker open" in proc.stdout
    assert "loop ended" not in proc.stderr, proc.stderr
    assert proc.stderr.count("stopped from outside the worker") == 1, proc.stderr
    assert "await worker.close()" in proc.stderr


def test_sigint_while_the_app_imports_exits_130_with_one_line(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "WORKER_"))}
    env.update({"REDIS_URL": redis_server.url, "WORKER_HEALTH_PORT": "0"})
    proc = subprocess.Popen([sys.executable, "-m", "conveyor", "worker", "slowapp:app"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "importing").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a condition, with a deadline
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Traceback" not in out
    assert err.strip() == "interrupted while loading slowapp:app; no worker started"
