"""Adaptive concurrency against a real local OpenAI-compatible server whose hidden capacity is N
requests in flight (429 above): two worker processes share one adaptive limiter that starts at 3N.
Convergence properties, not timings: the limit comes down to about N and stays within its bounds,
the 429s stop being the common answer, and every job completes (a 429 uses no attempt)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import httpx

from conveyor import JobSpec, Queue
from conveyor.limits import Adaptive, Limiter, SharedLimiter
from conveyor.testing import free_port
from tests.conftest import wait_for
from tests.limits.conftest import ROOT


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


async def test_adaptive_limit_converges_to_hidden_capacity(sq: Queue, redis_url: str) -> None:
    # Calls of 0.2 s: a slot is held for the worker's own time around the call too, and on a busy
    # machine that share must stay small, or the limit settles where the provider sees 3 at once.
    capacity, jobs = 3, 150
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = _spawn(["bench.llm_server", str(port), str(capacity), "0.2"], env)
    name = f"prov:{sq.name}"
    lim = SharedLimiter(sq.client, name)
    await lim.declare(Limiter(name, adaptive=Adaptive(maximum=3 * capacity, minimum=1, decrease=0.85, window=4)))
    uses = json.dumps([[name, 120, 40]])
    workers = [_spawn(["bench.limits_worker", redis_url, sq.name, "6", uses], env) for _ in range(2)]
    stats_url = f"http://127.0.0.1:{port}/stats"
    try:
        async with httpx.AsyncClient() as http:
            async def up() -> bool:
                try:
                    return (await http.get(stats_url)).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(up, timeout=60, interval=0.05, what="the chat server")
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            await sq.add_bulk([JobSpec("chat", {"url": url}) for _ in range(jobs)])

            async def done() -> bool:
                for w in workers:
                    assert w.poll() is None, "a worker process died"
                return (await sq.counts())["completed"] == jobs

            await wait_for(done, timeout=240, interval=0.1, what=f"{jobs} chat jobs done")
            stats = (await http.get(stats_url)).json()
        state = await lim.state()
        limit = state["concurrency"]["adaptive_limit"]
        # Within its bounds, and down from 3N to the hidden capacity's neighbourhood.
        assert 1 <= limit <= capacity + 1, state["concurrency"]
        assert state["totals"]["rate_limited"] >= 1  # it did probe above the capacity
        assert state["totals"]["ok"] == jobs == stats["ok"]
        assert state["totals"]["tokens_in"] == 120 * jobs  # the usage each job reported
        # Started at 3N (9 in flight, 6 of them refused), it settled: far fewer than 2/3 refused.
        assert stats["rate_limited"] < stats["ok"] / 2, stats

        # Every run's hold was released. An idle worker's probe holds room for its claim between
        # reserving and confirming it, so a reading can land in that moment: wait for it to pass,
        # within half the workers' 10 s lease (a hold that leaked would stay until its lease expired).
        async def released() -> bool:
            return (await lim.state())["concurrency"]["held"] == 0

        await wait_for(released, timeout=5, interval=0.05, what="every hold released")
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(15)
            except subprocess.TimeoutExpired:
                w.kill()
        server.terminate()
        server.wait(10)
        await sq.client.delete(*lim.keys.all)
    await asyncio.sleep(0)
