"""An alert rule deleted (or dropped by a replacing PUT) and defined again under the same id, against
a real Redis: its next firing must still be delivered, and it must not stop the other rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor import Queue
from conveyor.alerts import parse_rule
from conveyor.alerts.delivery import WEBHOOK_QUEUE
from conveyor.alerts.evaluator import AlertEvaluator
from conveyor.alerts.store import AlertStore
from conveyor.redis.connection import RedisClient

HOOK = [{"type": "webhook", "url": "https://alerts.example/hook"}]


def rule(rule_id: str, queue: str, **params: Any) -> Any:
    return parse_rule({"kind": "queue_depth", "id": rule_id, "queue": queue, "threshold": 0, "repeat_s": None,
                       "channels": HOOK, **params})


@pytest.fixture
async def watched(rclient: RedisClient, prefix: str) -> AsyncIterator[Queue]:
    queue = Queue("watched", redis=rclient, prefix=prefix)
    await queue.add("job", {})
    yield queue
    await queue.obliterate(force=True)
    await Queue(WEBHOOK_QUEUE, redis=rclient, prefix=prefix).obliterate(force=True)


async def delivery_ids(client: RedisClient, prefix: str) -> list[str]:
    hooks = Queue(WEBHOOK_QUEUE, redis=client, prefix=prefix)
    return sorted(j.id for j in (await hooks.list_jobs("waiting", limit=100)).jobs)


@pytest.mark.parametrize("how", ["delete", "replace"])
async def test_a_rule_defined_again_fires_again_and_other_rules_go_on(
    rclient: RedisClient, prefix: str, watched: Queue, how: str
) -> None:
    store = AlertStore(rclient, prefix)
    evaluator = AlertEvaluator(rclient, prefix)
    await store.put_rules([rule("r", watched.name), rule("s", watched.name)], source="api", replace=True)
    sec, _ = await rclient.time()
    now = int(sec) * 1000
    report = await evaluator.run(now)
    assert report.notices == 2
    first = await delivery_ids(rclient, prefix)
    assert len(first) == 2
    if how == "delete":  # the rule is removed, then defined again under the same id
        assert await store.delete_rule("r")
    else:  # a PUT without it, then one with it again
        await store.put_rules([rule("s", watched.name)], source="api", replace=True)
    await store.put_rules([rule("r", watched.name, description="again"), rule("s", watched.name)],
                          source="api", replace=True)
    report = await evaluator.run(now + 1000)  # fires again: its first delivery job is still there
    assert report.notices == 1 and report.errors == 0
    again = await delivery_ids(rclient, prefix)
    assert len(again) == 3 and set(first) < set(again)
    assert "alert:r:2:1:0" in again  # its episodes are numbered on: the notice id is new
    assert await store.pending_notices() == []
    # The rule and the others keep being evaluated on later passes.
    await store.put_rules([rule("r", watched.name, threshold=5), rule("s", watched.name, threshold=5)],
                          source="api", replace=True)
    report = await evaluator.run(now + 2000)
    assert (report.notices, report.errors) == (0, 0)  # clear once: not yet resolved
    report = await evaluator.run(now + 3000)
    assert (report.notices, report.errors) == (2, 0)  # clear twice in a row: both resolved
    assert len(await delivery_ids(rclient, prefix)) == 5


async def test_a_notice_whose_job_id_an_older_notice_took_is_still_delivered(
    rclient: RedisClient, prefix: str, watched: Queue
) -> None:
    """State left by a deletion that forgot the episode count (as before episodes were kept): the
    rule's next firing reuses the notice id of an earlier one. It is delivered under an id made
    unique by the notice's time, once, and the pass goes on."""
    store = AlertStore(rclient, prefix)
    evaluator = AlertEvaluator(rclient, prefix)
    await store.put_rules([rule("r", watched.name)], source="api", replace=True)
    sec, _ = await rclient.time()
    now = int(sec) * 1000
    assert (await evaluator.run(now)).notices == 1
    await rclient.hdel(store.keys.state, "r")  # the episode count forgotten
    await rclient.hdel(store.keys.versions, "r")
    report = await evaluator.run(now + 1000)
    assert report.notices == 1
    ids = await delivery_ids(rclient, prefix)
    assert ids == ["alert:r:1:1:0", f"alert:r:1:1:0:{now + 1000}"]
    assert await store.pending_notices() == []


async def test_a_rule_whose_reading_fails_unexpectedly_does_not_stop_the_others(
    rclient: RedisClient, prefix: str, watched: Queue
) -> None:
    """A queue whose limits hash holds a value this version cannot read (written by hand or by
    another version): the rule that reads it records the error in its state; the others are
    evaluated and notify as usual."""
    broken = Queue("broken", redis=rclient, prefix=prefix)
    await broken.add("job", {})
    await rclient.hset(broken.keys.limits, mapping={"cost_t": "not-a-number", "cost_cap": "1"})
    store = AlertStore(rclient, prefix)
    await store.put_rules([
        parse_rule({"kind": "budget", "id": "a-broken", "queue": "broken", "channels": HOOK}),
        rule("b-watched", watched.name),
    ], source="api", replace=True)
    sec, _ = await rclient.time()
    report = await AlertEvaluator(rclient, prefix).run(int(sec) * 1000)
    assert (report.rules, report.errors, report.notices) == (2, 1, 1)
    states = {i.rule.id: i.state for i in await store.all()}
    assert states["a-broken"].error and states["b-watched"].status.value == "firing"
    await broken.obliterate(force=True)
