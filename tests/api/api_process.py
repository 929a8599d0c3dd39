"""A real `conveyor api` process serving tests.api.sample_app on a port, for tests of what only the
process does (its signals, its open-files limit, its worker processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def api_env(redis_url: str, queue: str, **settings: str) -> dict[str, str]:
    """This environment without CONVEYOR_* settings, plus the app's Redis and queue and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return {**env, "REDIS_URL": redis_url, "API_TEST_QUEUE": queue, **settings}


@contextmanager
def conveyor_api(
    port: int, env: dict[str, str], *args: str, stop_s: float = 30.0,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`conveyor api` running until the block ends; then SIGTERM, and its output must hold no
    traceback."""
    conveyor = str(Path(sys.executable).with_name("conveyor"))
    proc = subprocess.Popen(
        [conveyor, "api", "tests.api.sample_app:app", "--port", str(port), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=preexec_fn,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(stop_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "Traceback" not in output, output
