"""The chaos suite (short form; `make chaos` runs the long one): real `conveyor worker` processes
SIGKILLed and SIGSTOPped past their lease, connections reset by a proxy, the server killed and
restarted from its AOF, a Cluster whose slot owner restarts and whose queue slot migrates live, a
Sentinel failover. Lost, double-completed, unfinished and failed jobs must all be zero;
re-executions are allowed and reported (printed with -s, and in the failure message)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.backends import Cluster, Sentinel, Standalone
from tests.chaos.scenario import Plan, run

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(400)]


def check(title: str, counts_table: str, problems: dict[str, int]) -> None:
    print("\n" + counts_table)
    assert problems == {}, f"{title}: {problems}\n{counts_table}"


async def test_standalone_workers_killed_paused_connections_reset_server_restarted(tmp_path: Path) -> None:
    plan = Plan(jobs=400, window_s=16, kill_every_s=4, pause_every_s=6, reset_every_s=2.5, server_restarts=1)
    counts = await run(plan, Standalone(), tmp_path)
    check("standalone", counts.table("standalone chaos"), counts.problems())


async def test_cluster_slot_owner_restarted_and_slot_migrated_live(tmp_path: Path) -> None:
    plan = Plan(jobs=400, window_s=16, kill_every_s=5, pause_every_s=7, server_restarts=1, migrations=1)
    counts = await run(plan, Cluster(), tmp_path)
    check("cluster", counts.table("cluster chaos"), counts.problems())


async def test_partitioned_queue_on_cluster_owners_restarted_and_slots_migrated_live(tmp_path: Path) -> None:
    """A queue of three partitions, one per shard: the owner of one partition's slot restarts and
    another partition's slot migrates while workers are killed and frozen."""
    plan = Plan(jobs=400, window_s=16, kill_every_s=5, pause_every_s=7, server_restarts=1, migrations=1,
                partitions=3)
    counts = await run(plan, Cluster(), tmp_path)
    check("partitioned cluster", counts.table("partitioned cluster chaos"), counts.problems())


async def test_partitioned_queue_standalone_workers_killed_connections_reset(tmp_path: Path) -> None:
    plan = Plan(jobs=400, window_s=16, kill_every_s=4, pause_every_s=6, reset_every_s=2.5, server_restarts=1,
                partitions=3)
    counts = await run(plan, Standalone(), tmp_path)
    check("partitioned standalone", counts.table("partitioned standalone chaos"), counts.problems())


@pytest.mark.timeout(900)  # a hang guard: each re-link may take minutes on a busy machine
async def test_sentinel_failover_under_load_with_durable_acknowledgement(tmp_path: Path) -> None:
    """Replication is asynchronous: only writes acknowledged after a replica has them survive the
    primary's death for sure, so enqueues and outcomes here wait for one replica."""
    plan = Plan(jobs=300, window_s=12, kill_every_s=6, pause_every_s=None, failovers=1, replicas=1)
    counts = await run(plan, Sentinel(tmp_path / "sentinel"), tmp_path)
    check("sentinel", counts.table("sentinel failover"), counts.problems())
