"""Flows through the chaos suite: parents on a queue in another Cluster slot than their children,
workers SIGKILLed and SIGSTOPped past their lease, connections reset, the server (or the children's
slot owner) restarted from its AOF, the children's slot migrated live. No child lost or completed
twice, no parent lost, released twice, completed twice or left waiting, every parent's sum right."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.backends import Cluster, Standalone
from tests.chaos.scenario import Plan, run
from tests.chaos.test_chaos import check

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(400)]


async def test_flows_standalone_under_worker_kills_resets_and_a_server_restart(tmp_path: Path) -> None:
    plan = Plan(jobs=100, flows=40, window_s=14, kill_every_s=4, pause_every_s=6, reset_every_s=3,
                server_restarts=1)
    counts = await run(plan, Standalone(), tmp_path)
    assert counts.notes["flows acknowledged"] > 0
    check("standalone flows", counts.table("standalone flows chaos"), counts.problems())


async def test_flows_cluster_in_different_slots_under_restart_and_migration(tmp_path: Path) -> None:
    plan = Plan(jobs=100, flows=40, window_s=14, kill_every_s=5, pause_every_s=7, server_restarts=1, migrations=1)
    counts = await run(plan, Cluster(), tmp_path)
    assert counts.notes["flows acknowledged"] > 0
    check("cluster flows", counts.table("cluster flows chaos"), counts.problems())
