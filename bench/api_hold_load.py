"""Enqueue latency and health of `conveyor api` while 1,000 event streams and 500 long-polls are open
(a benchmark, not a test).

    python -m bench.api_hold_load [--streams 1000] [--waits 500] [--rate 200] [--duration 10] [--rounds 2]

Starts a Redis server on a free port and one `conveyor api` process (caps on streams and waits per
key raised to fit), then alternates, round by round, two phases of the same open-loop enqueue
schedule (`bench.api_latency.drive`: POST /api/queues/bench-api/jobs at `--rate` requests/s, latency
from each request's due time):

- idle: nothing else open;
- held: `--streams` SSE streams (GET .../events) and `--waits` long-polls (GET .../wait?timeout=300)
  open on jobs that never finish (no worker runs), each on its own connection, while every enqueue
  adds an event that the API's event reader fans out; `/api/health` is polled every 0.25 s.

The target (issue: hostile clients): with them open, `/api/health` stays 200 and the enqueue p99 stays
within 2x its idle value. Prints one JSON document and writes it to bench/results/<time>-api-hold.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.api_latency import QUEUE, drive, start_process, stop, wait_healthy

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = 50  # jobs the streams and waits follow (spread over them)


async def make_key(redis_url: str) -> str:
    from conveyor.api.keys import KeyStore
    from conveyor.redis.connection import connect

    client = connect(redis_url)
    try:
        token, _ = await KeyStore(client).create("bench-hold", ["enqueue", "read"], rate_limit=0)
        return token
    finally:
        await client.aclose()


async def _enqueue_targets(base_url: str, token: str) -> list[str]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
        ids = []
        for i in range(TARGETS):
            r = await http.post(f"/api/queues/{QUEUE}/jobs", json={
                "name": "charge", "data": {"order_id": i, "customer": "held", "amount_cents": 1}})
            r.raise_for_status()
            ids.append(r.json()["id"])
        return ids


async def _open(port: int, path: str, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def _drain(reader: asyncio.StreamReader) -> None:
    """Reads whatever a stream sends (keep-alives, events) so that the server never blocks on it."""
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, asyncio.CancelledError):
        pass


class Held:
    """The open streams and waits of one held phase."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.readers: list[asyncio.Task[None]] = []
        self.stream_status: dict[str, int] = {}

    async def open(self, port: int, token: str, jobs: list[str], streams: int, waits: int) -> None:
        for i in range(streams):
            reader, writer = await _open(port, f"/api/jobs/{QUEUE}/{jobs[i % len(jobs)]}/events", token)
            status = (await reader.readline()).decode().split(" ")[1]
            self.stream_status[status] = self.stream_status.get(status, 0) + 1
            self.writers.append(writer)
            self.readers.append(asyncio.create_task(_drain(reader)))
        for i in range(waits):
            reader, writer = await _open(port, f"/api/jobs/{QUEUE}/{jobs[i % len(jobs)]}/wait?timeout=300", token)
            self.writers.append(writer)
            self.readers.append(asyncio.create_task(_drain(reader)))

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


async def _health_during(base_url: str, stop_at: asyncio.Event) -> dict[str, int]:
    seen: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        while not stop_at.is_set():
            try:
                code = str((await http.get("/api/health")).status_code)
            except httpx.TransportError as exc:
                code = type(exc).__name__
            seen[code] = seen.get(code, 0) + 1
            await asyncio.sleep(0.25)
    return seen


async def _phase(base_url: str, port: int, token: str, jobs: list[str], held: bool,
                 args: argparse.Namespace) -> dict[str, Any]:
    opened = Held()
    out: dict[str, Any] = {"held": held, "loadavg_1m_before": round(os.getloadavg()[0], 2)}
    try:
        if held:
            await opened.open(port, token, jobs, args.streams, args.waits)
            out["stream_status"] = opened.stream_status
            await asyncio.sleep(1.0)  # let the waits reach their subscriptions
        done = asyncio.Event()
        health = asyncio.create_task(_health_during(base_url, done))
        try:
            out["enqueue"] = await drive(base_url, token, args.rate, args.duration, args.warmup)
        finally:
            done.set()
            out["health"] = await health
        if held:
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
                r = await http.get(f"/api/jobs/{QUEUE}/{jobs[0]}/wait?timeout=0",
                                   headers={"Authorization": f"Bearer {token}"})
                out["one_more_wait_status"] = r.status_code  # past the cap: 429 expected
    finally:
        await opened.close()
    out["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    return out


async def _run(base_url: str, port: int, redis_url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    await wait_healthy(base_url)
    token = await make_key(redis_url)
    jobs = await _enqueue_targets(base_url, token)
    phases = []
    for r in range(args.rounds):
        order = [False, True] if r % 2 == 0 else [True, False]
        for held in order:
            result = await _phase(base_url, port, token, jobs, held, args)
            result["round"] = r
            phases.append(result)
            await asyncio.sleep(2.0)  # closed connections settle before the next phase
    return phases


def _summary(phases: list[dict[str, Any]]) -> dict[str, Any]:
    rounds: dict[int, dict[str, Any]] = {}
    for p in phases:
        rounds.setdefault(p["round"], {})["held" if p["held"] else "idle"] = p
    per_round = []
    for r, pair in sorted(rounds.items()):
        idle, held = pair["idle"]["enqueue"], pair["held"]["enqueue"]
        health = pair["held"]["health"]
        per_round.append({
            "round": r,
            "p99_idle_ms": idle["p99_ms"], "p99_held_ms": held["p99_ms"],
            "p99_ratio": round(held["p99_ms"] / idle["p99_ms"], 2) if idle["p99_ms"] else None,
            "health_held": health, "health_all_200": set(health) == {"200"},
            "errors_held": held["errors"],
        })
    return {"per_round": per_round}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--waits", type=int, default=500)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from conveyor.testing import RedisServer, free_port

    server = RedisServer().start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(REDIS_URL=server.url, CONVEYOR_API_RATE_LIMIT="0",
               CONVEYOR_API_MAX_STREAMS_PER_KEY=str(args.streams), CONVEYOR_API_MAX_WAITS_PER_KEY=str(args.waits))
    conveyor_bin = str(Path(sys.executable).with_name("conveyor"))
    proc = start_process([conveyor_bin, "api", "api_latency:app", "--port", str(port)], env)
    try:
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            run = asyncio.run
        phases = run(_run(f"http://127.0.0.1:{port}", port, server.url, args))
    finally:
        stop(proc)
        server.close()
    result = {"args": vars(args) | {"out": None}, "cpus": os.cpu_count(),
              "phases": phases, **_summary(phases)}
    out = args.out or RESULTS / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-api-hold.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["per_round"], indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
