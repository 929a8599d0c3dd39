"""Autoscaling signals: the formula, and the JSON and Prometheus endpoints against a real Redis and
a real worker."""

from __future__ import annotations

import math

import pytest

from conveyor import JobState
from conveyor.autoscaling import suggested_workers
from conveyor.limits import RateLimit
from tests.api.conftest import Api
from tests.conftest import wait_for


@pytest.mark.parametrize(
    ("backlog", "active", "mean_s", "target_s", "concurrency", "cap", "expected"),
    [
        (0, 0, 1.0, 60, 10, None, 0),  # idle: scale to zero
        (25, 0, None, 60, 10, None, 3),  # no durations yet: one slot per job
        (25, 5, 120.0, 60, 10, None, 3),  # jobs longer than the target: one slot per job
        (600, 0, 1.0, 60, 10, None, 1),  # 600 one-second jobs fit in one 10-slot worker's minute
        (6000, 0, 1.0, 60, 10, None, 10),
        (6000, 0, 1.0, 60, 10, 25, 3),  # a fleet-wide cap of 25 slots needs 3 workers at most
        (1, 0, 0.001, 60, 10, None, 1),  # anything to do needs a worker
    ],
)
def test_formula(backlog: int, active: int, mean_s: float | None, target_s: float, concurrency: int,
                 cap: int | None, expected: int) -> None:
    assert suggested_workers(backlog, active, mean_s, target_s, concurrency, cap) == expected


async def test_endpoints_follow_backlog_durations_and_limits(api: Api) -> None:
    q = api.app.queue(api.queue)
    url = f"/api/autoscaling/queues/{api.queue}"
    assert (await api.http.get(url)).status_code == 401
    for i in range(25):
        await api.enqueue("echo", {"text": str(i)})
    body = (await api.http.get(url, headers=api.auth("read"))).json()
    assert body["backlog"] == 25 and body["active"] == 0 and body["workers"] == 0
    assert body["concurrency"] == 10 and body["concurrency_source"] == "declared"
    assert body["mean_duration_s"] is None and body["oldest_waiting_s"] >= 0
    assert body["suggested_workers"] == math.ceil(25 / 10)

    text = (await api.http.get("/api/autoscaling/metrics", headers=api.auth("read"))).text
    assert f'conveyor_queue_backlog{{queue="{api.queue}"}} 25.0' in text
    assert f'conveyor_queue_suggested_workers{{queue="{api.queue}"}} 3.0' in text

    await q.set_limits(concurrency=10, rate=RateLimit(1000, 1.0))  # a 10-slot fleet cap: 1 worker is enough
    assert (await api.http.get(url, headers=api.auth("read"))).json()["suggested_workers"] == 1
    await q.pause()
    paused = (await api.http.get(url, headers=api.auth("read"))).json()
    assert paused["paused"] and paused["suggested_workers"] == 0  # nothing may start
    await q.resume()
    await q.set_limits()

    await api.start_worker()
    await wait_for(lambda: _done(api), what="jobs completed")
    body = (await api.http.get(url, headers=api.auth("read"), params={"target_s": 1})).json()
    assert body["backlog"] == 0 and body["suggested_workers"] == 0
    assert body["duration_sample"] == 25 and body["mean_duration_s"] is not None
    listed = (await api.http.get("/api/autoscaling", headers=api.auth("read"))).json()["queues"]
    assert api.queue in [x["queue"] for x in listed]
    assert (await api.http.get("/api/autoscaling/queues/no-such-queue-x", headers=api.auth("read"))).status_code == 404
    bad = await api.http.get(url, headers=api.auth("read"), params={"target_s": 0})
    assert bad.status_code == 422


async def _done(api: Api) -> bool:
    return (await api.app.queue(api.queue).counts())[JobState.COMPLETED] == 25
