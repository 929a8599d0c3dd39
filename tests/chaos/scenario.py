"""One chaos run: real workers, a producer and fault loops over a window, then a drain and the count.

Faults (each optional): SIGKILL a worker (a replacement starts at once), SIGSTOP a worker past its
lease then SIGCONT it, reset every proxied connection, SIGKILL the server and restart it from its AOF
(standalone; on Cluster the queue's slot owner), migrate the queue's slot to another node, kill the
Sentinel primary so the replica is promoted.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import Queue
from conveyor.errors import ConveyorError
from conveyor.partitions import PartitionedQueue
from conveyor.redis.connection import connect
from conveyor.redis.durability import Durability
from conveyor.testing import RedisServer
from tests.chaos.backends import Cluster, Sentinel, Standalone
from tests.chaos.book import Counts, FlowProducer, Producer, all_events, job_records, settle, settle_flows
from tests.chaos.fleet import FleetConfig, WorkerFleet

Backend = Standalone | Cluster | Sentinel


@dataclass(frozen=True, slots=True)
class Plan:
    jobs: int = 400
    window_s: float = 15.0  # faults and enqueueing run this long
    workers: int = 3
    concurrency: int = 4
    lease_ms: int = 2000
    kill_every_s: float | None = 4.0
    pause_every_s: float | None = 6.0
    reset_every_s: float | None = None  # proxy resets (standalone only)
    server_restarts: int = 0  # standalone: the server; Cluster: the slot owner
    migrations: int = 0  # Cluster only
    failovers: int = 0  # Sentinel only
    replicas: int = 0  # durable acknowledgement: enqueues and outcomes wait for this many replicas
    job_ms: tuple[int, int] = (20, 400)  # each handler sleeps this long (so kills hit running jobs)
    flows: int = 0  # flows (a parent on a queue in another slot, `flow_children` children) added too
    flow_children: int = 5
    drain_timeout_s: float = 120.0
    seed: int = 1
    partitions: int = 0  # a partitioned queue of that many partitions (0: a plain queue)


async def _repeat(stop: asyncio.Event, period: float, rng: random.Random, action: Callable[[], Awaitable[None]],
                  done: Counter[str], name: str) -> None:
    while True:
        try:
            await asyncio.wait_for(stop.wait(), period * rng.uniform(0.6, 1.4))
            return
        except TimeoutError:
            pass
        await action()
        done[name] += 1


Timed = list[tuple[float, str, Callable[[], Awaitable[None]]]]


async def _at(stop: asyncio.Event, plan: Timed, done: Counter[str]) -> None:
    """Server faults at their moments, one after the other (never two at once)."""
    start = time.monotonic()
    for t, name, action in sorted(plan, key=lambda item: item[0]):
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, start + t - time.monotonic()))
            return
        except TimeoutError:
            pass
        await action()
        done[name] += 1


def _queue(name: str, client: Any, prefix: str, partitions: int, durability: Durability | None) -> Queue:
    if partitions:
        return PartitionedQueue(name, partitions=partitions, redis=client, prefix=prefix, durability=durability)
    return Queue(name, redis=client, prefix=prefix, durability=durability)


def _server_faults(plan: Plan, backend: Backend, parts: list[Queue]) -> Timed:
    """When each server fault happens: restarts, migrations and failovers spread evenly over the
    window, interleaved (a restart, then a migration, ...)."""
    kinds: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    restarts = plan.server_restarts
    migrations = plan.migrations if isinstance(backend, Cluster) else 0
    failovers = plan.failovers if isinstance(backend, Sentinel) else 0
    for i in range(max(restarts, migrations, failovers)):
        queue = parts[i % len(parts)]
        if i < restarts and isinstance(backend, Standalone):
            kinds.append(("server SIGKILL + restart from AOF", backend.restart_server))
        if i < restarts and isinstance(backend, Cluster):
            kinds.append(("slot owner SIGKILL + restart from AOF", lambda q=queue: backend.restart_owner(q)))
        if i < migrations and isinstance(backend, Cluster):
            kinds.append(("live migration of the queue's slot", lambda q=queue: backend.migrate(q)))
        if i < failovers and isinstance(backend, Sentinel):
            kinds.append(("primary SIGKILL + Sentinel failover", backend.failover))
    return [(t, name, action) for t, (name, action) in zip(_spread(len(kinds), plan.window_s), kinds, strict=True)]


def _spread(n: int, window_s: float) -> list[float]:
    """n moments inside the window, away from its ends (so jobs run before and after each)."""
    return [window_s * (i + 1) / (n + 1) for i in range(n)]


async def run(plan: Plan, backend: Backend, workdir: Path) -> Counts:
    rng = random.Random(plan.seed)
    qname = f"chaos-{uuid.uuid4().hex[:8]}"
    pname = _other_slot(qname) if plan.flows else ""
    prefix = "cv"
    ledger = RedisServer()
    await asyncio.to_thread(ledger.start)
    ledger_client = connect(ledger.url)
    await backend.start()
    fleet = WorkerFleet(FleetConfig(backend.worker_url, prefix, qname, ledger.url, f"ledger:{qname}",
                                    workdir / "logs", plan.workers, plan.concurrency, plan.lease_ms,
                                    plan.replicas, plan.partitions,
                                    extra_env={"CHAOS_PARENT_QUEUE": pname} if pname else {}))
    producer_client = backend.producer_client()
    admin = backend.admin_client()
    done: Counter[str] = Counter()
    try:
        fleet.start()
        durability = Durability(replicas=plan.replicas, timeout_ms=2000) if plan.replicas else None
        queue = _queue(qname, producer_client, prefix, plan.partitions, durability)
        producer = Producer(queue, plan.jobs, plan.window_s, plan.job_ms, seed=plan.seed)
        parents = Queue(pname, redis=producer_client, prefix=prefix, durability=durability) if pname else None
        flows = (FlowProducer(parents, producer, plan.flows, plan.flow_children, plan.jobs, plan.window_s)
                 if parents is not None else None)
        stop = asyncio.Event()

        async def kill() -> None:
            await asyncio.to_thread(fleet.kill, rng.randrange(plan.workers))

        async def pause() -> None:
            i = rng.randrange(plan.workers)
            fleet.pause(i)
            await asyncio.sleep(plan.lease_ms / 1000 * 1.5 + 0.5)  # frozen past its lease
            fleet.resume(i)

        async def reset() -> None:
            backend.reset_connections()

        async def watch() -> None:
            fleet.check()

        admin_queue = _queue(qname, admin, prefix, plan.partitions, None)
        # Server faults hit the slot of the queue, or of one partition (a different one each time).
        parts = admin_queue.serving if isinstance(admin_queue, PartitionedQueue) else [admin_queue]
        loops = [_repeat(stop, 1.0, rng, watch, Counter(), "watch")]
        if plan.kill_every_s:
            loops.append(_repeat(stop, plan.kill_every_s, rng, kill, done, "worker SIGKILL"))
        if plan.pause_every_s:
            loops.append(_repeat(stop, plan.pause_every_s, rng, pause, done, "worker SIGSTOP past the lease"))
        if plan.reset_every_s and isinstance(backend, Standalone):
            loops.append(_repeat(stop, plan.reset_every_s, rng, reset, done, "proxy reset of every connection"))
        loops.append(_at(stop, _server_faults(plan, backend, parts), done))
        tasks = [asyncio.create_task(loop) for loop in loops]
        await asyncio.gather(producer.run(), *([flows.run()] if flows is not None else []))
        stop.set()
        await asyncio.gather(*tasks)
        fleet.resume_all()
        admin_parents = Queue(pname, redis=admin, prefix=prefix) if pname else None
        drained = await _drain([admin_queue, *([admin_parents] if admin_parents else [])], fleet,
                               plan.drain_timeout_s)
        exit_codes = await asyncio.to_thread(fleet.stop)
        records: dict[str, dict[str, Any]] = {}
        events: list[dict[str, str]] = []
        complete = True
        for part in parts:
            records.update(await job_records(admin, part, await backend.job_keys(part)))
            part_events, part_complete = await all_events(admin, part)
            events += part_events
            complete = complete and part_complete
        counts = Counts(faults=dict(done))
        await settle(producer, records, events, complete, ledger_client, f"ledger:{qname}", counts)
        counts.worker_crashes = len(fleet.unexpected_exits) + sum(1 for c in exit_codes if c != 0)
        for code in fleet.unexpected_exits + [c for c in exit_codes if c != 0]:
            counts.example("worker_crashes", f"exit {code}")
        counts.loop_crashes = fleet.log_count("loop crashed")
        for kind, n in fleet.crash_kinds().items():
            counts.example("loop_crashes", f"{n}x {kind}")
        counts.notes = {
            "trips resent after a fault": fleet.log_count("sending it again"),
            "late writes rejected": fleet.log_count("late write for job"),
            "leases lost while running": fleet.log_count("lost its lease"),
            "sweeps that recovered expired leases": fleet.log_count("whose lease expired")
            + fleet.log_count("stalled job(s)"),
            "tracebacks": fleet.log_count("Traceback"),
            "producer errors": sum(producer.errors.values()),
            "drained before the deadline": int(drained),
        }
        if isinstance(backend, Cluster):
            counts.notes["keys migrated while jobs ran"] = backend.migrated_keys
        if flows is not None and admin_parents is not None:
            parent_records = await job_records(admin, admin_parents, await backend.job_keys(admin_parents))
            parent_events, parents_complete = await all_events(admin, admin_parents)
            counts.events_complete = counts.events_complete and parents_complete
            settle_flows(flows, parent_records, parent_events, counts)
        return counts
    finally:
        fleet.kill_all()
        for c in (producer_client, admin, ledger_client):
            await c.aclose()
        await backend.close()
        await asyncio.to_thread(ledger.close)


def _other_slot(qname: str) -> str:
    """A parent queue name whose keys live in another Cluster slot than `qname`'s."""
    from redis.crc import key_slot

    from conveyor.redis.keys import QueueKeys

    base = key_slot(QueueKeys(qname).meta.encode())
    i = 0
    while key_slot(QueueKeys(f"{qname}-parents{i}").meta.encode()) // 5462 == base // 5462:
        i += 1
    return f"{qname}-parents{i}"


async def _drain(queues: list[Queue], fleet: WorkerFleet, timeout_s: float, stuck_s: float = 30.0) -> bool:
    """Until nothing is waiting, delayed or active (workers that died are replaced meanwhile). Gives up
    at `timeout_s`, or when the number left has not moved for `stuck_s` (a drain that makes no
    progress at all will not finish: the report then counts what is left as unfinished)."""
    deadline = time.monotonic() + timeout_s
    last_left, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        fleet.check()
        try:
            left = 0
            for queue in queues:
                counts = await queue.counts()
                left += sum(n for state, n in counts.items()
                            if state.value in ("waiting", "delayed", "active", "waiting-children"))
            if left == 0:
                return True
            if left != last_left:
                last_left, last_change = left, time.monotonic()
            elif time.monotonic() - last_change > stuck_s:
                return False
        except (ConveyorError, OSError, RuntimeError):
            pass
        await asyncio.sleep(0.5)
    return False
