"""Server time of the scripts on the pickup path, per call: what an idle worker's pickup costs inside
Redis, next to the single commands a list-based queue sends (docs/benchmarks.md, "Where Conveyor is
behind").

    .venv/bin/python -m bench.script_costs [--calls 5000]

On a private redis-server, INFO commandstats (reset before each figure) gives the microseconds per
call of: `add-5` with one job of default options and with `result_ttl=0` (the form the peer harness
sends); the claim trip of an idle worker (`finish-10` asking for up to 10 jobs with one waiting, an
idempotent trip with its record) and the same trip recording the previous job's completion first,
each timed alone right after its job's enqueue; the same scripts' preambles
alone (the included functions defined, then `return 1`); `return 1`; `LPUSH` and `RPOP` of a list.
Raw figures go to bench/results/<UTC time>-script-costs/script_costs.json.

    .venv/bin/python -m bench.script_costs --base <revision> [--rounds 5]

compares the scripts of an earlier revision with this checkout's on the same server: the rounds
alternate the two (odd rounds reversed), each loading its scripts under the same wrappers (the calls'
keys and arguments are this checkout's, so only script changes that keep the call format compare).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from conveyor import Queue
from conveyor.redis import scripts
from conveyor.redis.connection import RedisClient
from conveyor.redis.scripts import CLAIM_HEADER, Script, core_script
from conveyor.testing import RedisServer

from .redis_cost import extract

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BODY_START = {"add": "local meta, ready", "finish": "local k = {meta"}


async def per_call(client: RedisClient, command: str, calls: int, step: Callable[[int], Awaitable[Any]]) -> float:
    """Server µs per call of `command` (commandstats) over `calls` runs of `step`."""
    await client.config_resetstat()
    for i in range(calls):
        await step(i)
    stats = (await client.info("commandstats"))[f"cmdstat_{command}"]
    return round(stats["usec"] / stats["calls"], 2)


async def evalsha_usec(client: RedisClient) -> int:
    stats = (await client.info("commandstats")).get("cmdstat_evalsha", {})
    return int(stats.get("usec", 0))


async def measure(url: str, calls: int) -> dict[str, float]:
    queue = Queue(f"costs-{uuid.uuid4().hex[:8]}", redis=url)
    client = queue.client
    scripts = queue.scripts
    out: dict[str, float] = {}
    out["add, one job, default options"] = await per_call(
        client, "evalsha", calls, lambda i: queue.add("noop", {"i": i}))
    out["add, one job, result_ttl=0"] = await per_call(
        client, "evalsha", calls, lambda i: queue.add("noop", {"i": i}, result_ttl=0))
    await queue.obliterate(force=True)

    # The pickup path: one job enqueued, an idle worker's claim (asking for up to 10, its free slots)
    # takes it; every other claim also records the previous job's completion. Each call is timed
    # alone (commandstats read around it), so the enqueues in between do not count.
    leased: tuple[str, str] | None = None
    claim_us: dict[str, list[float]] = {"idle": [], "record": []}
    for i in range(calls):
        await queue.add("noop", {"i": i}, result_ttl=0)
        outcomes: list[Any] = []
        if leased is not None and i % 2:
            outcomes = [leased[0], leased[1], "C", "null", 0, "", ""]
        before = await evalsha_usec(client)
        reply = await scripts.trip("bench-worker", 30_000, 10, trip_id=f"bench:{i}", record_ttl_ms=60_000,
                                   outcomes=outcomes, count=len(outcomes) // 7)
        claim_us["record" if outcomes else "idle"].append(await evalsha_usec(client) - before)
        first = CLAIM_HEADER + len(outcomes) // 7
        leased = (str(reply[first]), str(reply[first + 1]))
    await queue.obliterate(force=True)
    out["trip: an idle worker's claim (asks for 10, one job waiting)"] = round(statistics.mean(claim_us["idle"]), 2)
    out["trip: record one completion, then that claim"] = round(statistics.mean(claim_us["record"]), 2)

    for script in ("add", "finish"):
        preamble = core_script(script).source.split(BODY_START[script])[0] + "\nreturn 1"
        sha = await client.script_load(preamble)
        out[f"{script} preamble only (included functions defined, then return)"] = await per_call(
            client, "evalsha", calls, lambda i, s=sha: client.evalsha(s, 0))
    sha = await client.script_load("return 1")
    out["return 1"] = await per_call(client, "evalsha", calls, lambda i: client.evalsha(sha, 0))
    out["LPUSH"] = await per_call(client, "lpush", calls, lambda i: client.lpush("bench:list", "x" * 60))
    out["RPOP"] = await per_call(client, "rpop", calls, lambda i: client.rpop("bench:list"))
    await client.delete("bench:list")
    await queue.close()
    return out


def sources_of(rev: str) -> tuple[dict[str, Script], str]:
    """The core scripts of revision `rev`, flattened by that revision's own loader."""
    src, sha = extract(rev)
    dump = "import json, conveyor.redis.scripts as s; print(json.dumps({n: x.source for n, x in s._S.items()}))"
    out = subprocess.run([sys.executable, "-c", dump], env={**os.environ, "PYTHONPATH": str(src)},
                         capture_output=True, text=True, check=True).stdout
    this = scripts._S
    loaded = {n: Script(this[n].name, text, hashlib.sha1(text.encode()).hexdigest(), this[n].num_keys)
              for n, text in json.loads(out).items() if n in this}
    return loaded, sha


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--base", help="an earlier revision whose scripts to compare with this checkout's")
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    started = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    variants = {"this": dict(scripts._S)}
    base_sha = ""
    if a.base:
        base, base_sha = sources_of(a.base)
        variants = {"base": {**scripts._S, **base}, **variants}
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in variants}
    with RedisServer() as server:
        load_before = os.getloadavg()[0]
        for r in range(a.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for label in order:
                scripts._S.clear()
                scripts._S.update(variants[label])
                runs[label].append(asyncio.run(measure(server.url, a.calls)))
        load_after = os.getloadavg()[0]
    scripts._S.clear()
    scripts._S.update(variants["this"])
    medians = {label: {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]} for label, rs in runs.items()}
    out = RESULTS / f"{started}-script-costs" / "script_costs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"started_utc": started, "calls": a.calls, "rounds": a.rounds, "base": base_sha,
                               "loadavg": [load_before, load_after], "runs": runs,
                               "server_us_per_call": medians["this"], "medians": medians}, indent=2) + "\n")
    if a.base:
        print(f"| call (medians of {a.rounds} rounds) | base {base_sha} µs | this µs | this / base |")
        print("|---|---:|---:|---:|")
        for name, value in medians["this"].items():
            before = medians["base"][name]
            print(f"| {name} | {before} | {value} | {value / before:.2f} |")
    else:
        print("| call | server µs per call |\n|---|---:|")
        for name, value in medians["this"].items():
            print(f"| {name} | {value} |")
    print(f"\nload average {load_before:.2f} -> {load_after:.2f}; raw results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
