"""Bookkeeping that cannot lie: what the producer was told, what the handlers did (a separate,
never-faulted ledger server), and what the queue holds at the end (records and events).

- acknowledged: jobs whose add returned (id known); ambiguous: adds that raised (the job may or may
  not exist; never retried, so a serial found twice means one add made two jobs).
- lost: an acknowledged job without a record, or whose record now holds another job's data (an id
  handed out twice).
- double-completed: a job with more than one `completed` event: two leases both recorded a completion.
- phantom: a recorded completion (job, attempt) for which no handler returned in the ledger.
- unfinished / failed / cancelled: final states of every job record of the queue (found by key scan,
  so a job in no state set is still seen).
- re-executions: handler starts beyond the first per job (allowed by at-least-once, reported).
The events stream must be complete (nothing trimmed), or the report says the count is unusable.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from conveyor import Queue
from conveyor.errors import ConveyorError
from conveyor.options import JobSpec
from tests.chaos.app import ledger_keys

MUST_BE_ZERO = ("lost", "double_completed", "phantom", "duplicates", "unfinished", "failed", "cancelled",
                "wrong_results", "worker_crashes", "loop_crashes")

FLOW_ZERO = ("flow_parents_lost", "flow_parents_unfinished", "flow_parents_failed", "flow_parents_double_completed",
             "flow_parents_released_twice", "flow_children_counted_twice", "flow_wrong_sums")


@dataclass
class Counts:
    acknowledged: int = 0
    ambiguous: int = 0
    jobs: int = 0
    completed: int = 0
    lost: int = 0
    double_completed: int = 0
    phantom: int = 0
    duplicates: int = 0
    unfinished: int = 0
    failed: int = 0
    cancelled: int = 0
    wrong_results: int = 0
    worker_crashes: int = 0
    loop_crashes: int = 0  # a queue loop ended by an error: every fault must be classified and ridden through
    reexecuted_jobs: int = 0
    extra_runs: int = 0
    flow_parents_lost: int = 0
    flow_parents_unfinished: int = 0
    flow_parents_failed: int = 0
    flow_parents_double_completed: int = 0
    flow_parents_released_twice: int = 0
    flow_children_counted_twice: int = 0
    flow_wrong_sums: int = 0
    events_complete: bool = True
    faults: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def problems(self) -> dict[str, int]:
        found = {name: getattr(self, name) for name in (*MUST_BE_ZERO, *FLOW_ZERO) if getattr(self, name)}
        if not self.events_complete:
            found["events_trimmed"] = 1
        return found

    def example(self, kind: str, what: str) -> None:
        items = self.examples.setdefault(kind, [])
        if len(items) < 5:
            items.append(what)

    def table(self, title: str) -> str:
        rows = [("acknowledged jobs", self.acknowledged), ("ambiguous adds (reply lost)", self.ambiguous),
                ("job records", self.jobs), ("completed", self.completed), ("lost", self.lost),
                ("double-completed", self.double_completed), ("completions without a handler", self.phantom),
                ("duplicate jobs from one add", self.duplicates), ("unfinished", self.unfinished),
                ("failed", self.failed), ("cancelled", self.cancelled), ("wrong results", self.wrong_results),
                ("workers that died by themselves", self.worker_crashes),
                ("queue loops that crashed", self.loop_crashes),
                ("jobs run more than once", self.reexecuted_jobs), ("extra runs", self.extra_runs)]
        if self.notes.get("flows acknowledged"):
            rows += [(f"flows: {name.removeprefix('flow_').replace('_', ' ')}", getattr(self, name))
                     for name in FLOW_ZERO]
        rows += [(f"fault: {k}", v) for k, v in sorted(self.faults.items())]
        rows += [(f"log: {k}", v) for k, v in sorted(self.notes.items())]
        width = max(len(r[0]) for r in rows)
        lines = [title, *(f"  {name:<{width}}  {value}" for name, value in rows)]
        if not self.events_complete:
            lines.append("  events stream was trimmed: double-completion count unusable")
        lines += [f"  e.g. {k}: {', '.join(v)}" for k, v in sorted(self.examples.items())]
        return "\n".join(lines)


class Producer:
    """Enqueues `total` jobs in batches spread over `duration_s`; never retries a failed add."""

    def __init__(self, queue: Queue, total: int, duration_s: float, job_ms: tuple[int, int], seed: int = 7) -> None:
        self.queue = queue
        self.total = total
        self.duration_s = duration_s
        self.job_ms = job_ms
        self.acked: dict[int, str] = {}
        self.ambiguous: set[int] = set()
        self.errors: Counter[str] = Counter()
        self._rng = random.Random(seed)

    async def run(self) -> None:
        batches = max(1, int(self.duration_s / 0.2))
        size = max(1, -(-self.total // batches))
        for start in range(0, self.total, size):
            serials = list(range(start, min(self.total, start + size)))
            specs = [JobSpec("work", {"n": n, "ms": self._rng.randint(*self.job_ms)}) for n in serials]
            try:
                async with asyncio.timeout(30):
                    jobs = await self.queue.add_bulk(specs)
            except (ConveyorError, RedisError, OSError, RuntimeError, TimeoutError) as exc:
                self.errors[type(exc).__name__] += 1
                self.ambiguous.update(serials)
            else:
                self.acked.update(zip(serials, (j.id for j in jobs), strict=True))
            await asyncio.sleep(0.2)  # pacing: spreads the jobs over the fault window


async def job_records(client: Any, queue: Queue, job_keys: list[str]) -> dict[str, dict[str, Any]]:
    """id -> {state, data, result, attempts} for every job key given (one slot: pipelined)."""
    marker = queue.keys.job("")
    ids = [k[len(marker):] for k in job_keys if k.startswith(marker)]
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        async with client.pipeline(transaction=False) as pipe:
            for job_id in chunk:
                pipe.hmget(queue.keys.job(job_id), "state", "data", "result", "attempts", "error")
            rows = await pipe.execute()
        for job_id, (state, data, result, attempts, error) in zip(chunk, rows, strict=True):
            if state is not None or data is not None:
                out[job_id] = {"state": state, "data": data, "result": result, "attempts": attempts, "error": error}
    return out


async def all_events(client: Any, queue: Queue) -> tuple[list[dict[str, str]], bool]:
    """Every event of the queue, and whether the stream is complete (never trimmed)."""
    info = await client.xinfo_stream(queue.keys.events)
    complete = int(info.get("entries-added", info["length"])) == int(info["length"])
    events: list[dict[str, str]] = []
    cursor = "-"
    while True:
        page = await client.xrange(queue.keys.events, min=cursor, count=5000)
        if cursor != "-" and page and page[0][0] == cursor:
            page = page[1:]
        if not page:
            return events, complete
        events += [fields for _, fields in page]
        cursor = page[-1][0]


async def settle(producer: Producer, records: dict[str, dict[str, Any]], events: list[dict[str, str]],
                 complete: bool, ledger: aioredis.Redis, ledger_key: str, counts: Counts) -> None:
    """Fill `counts` from what the producer was told, the final records and events, and the ledger."""
    import orjson

    counts.acknowledged, counts.ambiguous, counts.jobs = len(producer.acked), len(producer.ambiguous), len(records)
    counts.events_complete = complete
    serial_of: dict[str, int | None] = {}
    by_serial: dict[int, list[str]] = {}
    for job_id, rec in records.items():
        n = orjson.loads(rec["data"])["n"] if rec["data"] else None
        serial_of[job_id] = n
        if n is not None:
            by_serial.setdefault(n, []).append(job_id)
        state = rec["state"]
        if state == "completed":
            counts.completed += 1
            if rec["result"] is None or orjson.loads(rec["result"]) != n:
                counts.wrong_results += 1
                counts.example("wrong_results", job_id)
        elif state == "failed":
            counts.failed += 1
            error = orjson.loads(rec["error"]) if rec["error"] else {}
            counts.example("failed", f"{job_id} ({error.get('type')}: {error.get('message')})")
        elif state == "cancelled":
            counts.cancelled += 1
        else:
            counts.unfinished += 1
            counts.example("unfinished", f"{job_id}={state}")
    for n, job_id in producer.acked.items():
        if job_id not in records or serial_of.get(job_id) != n:
            counts.lost += 1
            counts.example("lost", f"{n}->{job_id}")
    counts.duplicates = sum(len(ids) - 1 for ids in by_serial.values() if len(ids) > 1)
    completions = Counter(e["id"] for e in events if e.get("ev") == "completed")
    counts.double_completed = sum(1 for n in completions.values() if n > 1)
    for job_id, n in completions.items():
        if n > 1:
            counts.example("double_completed", job_id)
    starts_key, ends_key = ledger_keys(ledger_key)
    starts = Counter(s.split("|")[0] for s in await ledger.lrange(starts_key, 0, -1))
    ended = {(e.split("|")[0], e.split("|")[2]) for e in await ledger.lrange(ends_key, 0, -1)}
    for e in events:
        if e.get("ev") == "completed" and (e["id"], e.get("att")) not in ended:
            counts.phantom += 1
            counts.example("phantom", f"{e['id']}@{e.get('att')}")
    counts.reexecuted_jobs = sum(1 for n in starts.values() if n > 1)
    counts.extra_runs = sum(n - 1 for n in starts.values() if n > 1)



class FlowProducer:
    """Adds `total` flows (a `sum` parent on the parent queue and `children` `work` jobs on the main
    queue) spread over `duration_s`; children's serials go into the main producer's books, so a lost
    or doubly completed child is counted there. Each flow has a root job_id: an add that failed (its
    reply lost, the server restarting) is sent again, the same tree, up to `SENDS` times, so an add
    written but not answered is completed and answered by the next, never written twice."""

    SENDS = 4

    def __init__(self, parents: Queue, jobs: Producer, total: int, children: int, first_serial: int,
                 duration_s: float) -> None:
        self.parents = parents
        self.jobs = jobs
        self.total = total
        self.children = children
        self.first_serial = first_serial
        self.duration_s = duration_s
        self.acked: dict[str, int] = {}  # parent id -> expected sum
        self.ambiguous = 0
        self.resent = 0  # adds sent again after a failed send

    async def run(self) -> None:
        from conveyor.flows import FlowNode
        from conveyor.options import JobOptions

        pause = self.duration_s / max(1, self.total)
        serial = self.first_serial
        for _ in range(self.total):
            serials = list(range(serial, serial + self.children))
            serial += self.children
            kids = [FlowNode(self.jobs.queue.name, "work", {"n": n, "ms": self.jobs._rng.randint(*self.jobs.job_ms)})
                    for n in serials]
            root = FlowNode(self.parents.name, "sum", {}, JobOptions(job_id=f"flow-{serials[0]}", attempts=10,
                                                                    backoff=0.2), children=kids)
            for send in range(self.SENDS):
                try:
                    async with asyncio.timeout(30):
                        job = await self.parents.add_flow(root)
                        record = await job.record()
                except (ConveyorError, RedisError, OSError, RuntimeError, TimeoutError) as exc:
                    self.jobs.errors[type(exc).__name__] += 1
                    if send + 1 < self.SENDS:
                        self.resent += 1
                        await asyncio.sleep(0.5)
                        continue
                    self.jobs.ambiguous.update(serials)
                    self.ambiguous += 1
                else:
                    self.acked[job.id] = sum(serials)
                    self.jobs.acked.update(zip(serials, (i for _, i in record.children), strict=True))
                break
            await asyncio.sleep(pause)


def settle_flows(flows: FlowProducer, records: dict[str, dict[str, Any]], events: list[dict[str, str]],
                 counts: Counts) -> None:
    """Each acknowledged flow's parent: present, completed once with the sum of its children, released
    once, and each child counted once."""
    import orjson

    counts.notes["flows acknowledged"] = len(flows.acked)
    counts.notes["flow adds with a lost reply"] = flows.ambiguous
    counts.notes["flow adds sent again"] = flows.resent
    completed = Counter(e["id"] for e in events if e.get("ev") == "completed")
    released = Counter(e["id"] for e in events if e.get("ev") == "waiting" and e.get("reason") == "children")
    counted = Counter((e["id"], e.get("child")) for e in events if e.get("ev") == "child")
    found = {"flow_parents_lost": 0, "flow_parents_unfinished": 0, "flow_parents_failed": 0,
             "flow_parents_double_completed": 0, "flow_parents_released_twice": 0,
             "flow_children_counted_twice": 0, "flow_wrong_sums": 0}
    for parent, expected in flows.acked.items():
        rec = records.get(parent)
        if rec is None:
            found["flow_parents_lost"] += 1
            continue
        if rec["state"] == "failed":
            found["flow_parents_failed"] += 1
            counts.example("flow_parents_failed", f"{parent}: {rec['error']}"[:300])
        elif rec["state"] != "completed":
            found["flow_parents_unfinished"] += 1
            counts.example("flow_parents_unfinished", f"{parent}={rec['state']}")
        elif rec["result"] is None or orjson.loads(rec["result"]) != expected:
            found["flow_wrong_sums"] += 1
        found["flow_parents_double_completed"] += completed[parent] > 1
        found["flow_parents_released_twice"] += released[parent] > 1
    found["flow_children_counted_twice"] = sum(1 for n in counted.values() if n > 1)
    for name, n in found.items():
        setattr(counts, name, n)
