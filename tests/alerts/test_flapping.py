"""A flapping condition against a real webhook receiver: a rule with `for_s=0` whose queue fills and
empties at every evaluation sends one `fired` and, once the queue stays empty, one `resolved`; the
receiver counts the deliveries."""

from __future__ import annotations

import json

from conveyor import Conveyor
from conveyor.alerts import AlertStore
from conveyor.alerts.evaluator import AlertEvaluator
from conveyor.handlers import install
from conveyor.settings import Settings
from tests.conftest import running, wait_for
from tests.handlers.servers import Receiver


async def test_a_flapping_condition_sends_one_fired_and_one_resolved(
    redis_url: str, prefix: str, receiver: Receiver
) -> None:
    app = Conveyor(redis_url, prefix=prefix)
    install(app, webhooks=True, settings=Settings(webhook_allow_hosts="127.0.0.1"))
    receiver.unsigned_paths.add("/hook")
    rule = app.alert("queue_depth", id="flappy", queue="flappy", threshold=0, for_s=0, repeat_s=None,
                     channels=[{"type": "webhook", "url": f"{receiver.url}/hook"}])
    flappy, webhooks = app.queue("flappy"), app.queue("webhooks")
    evaluator = AlertEvaluator(app.client, prefix, declared=[rule])
    try:
        await evaluator.sync()
        sec, _ = await app.client.time()
        now = int(sec) * 1000
        for i in range(12):  # one job waits at every other evaluation
            if i % 2 == 0:
                await flappy.add("anything", {}, job_id="blip")
            else:
                await flappy.remove("blip")
            await evaluator.run(now + i * 15_000)
        await evaluator.run(now + 12 * 15_000)  # clear at two evaluations in a row: resolved
        async with running(app.worker("webhooks", lease_ms=5000, idle_block_s=0.2)):
            async def delivered() -> bool:
                counts = await webhooks.counts()
                return counts["waiting"] + counts["active"] + counts["delayed"] == 0 and counts["completed"] >= 1

            await wait_for(delivered, timeout=30, what="the webhook deliveries done")
        kinds = [json.loads(r.body)["kind"] for r in receiver.received if r.path == "/hook"]
        assert kinds == ["fired", "resolved"]
        (info,) = await AlertStore(app.client, prefix).all()
        assert info.state.status == "ok" and info.state.episode == 1 and info.state.flaps == 5
    finally:
        for name in ("flappy", "webhooks"):
            await app.queue(name).obliterate(force=True)
        await app.close()
