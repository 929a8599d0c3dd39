"""Alerts end to end: rules declared in the app, evaluated by three schedulers at once, delivered by
real workers running the built-in webhook and email handlers to a real HTTP receiver (Slack JSON and
the signed generic form) and a real SMTP server; each alert fires once, repeats while it lasts and
sends one recovery notice."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from conveyor import Conveyor, JobContext
from conveyor.alerts import AlertStore
from conveyor.handlers import install
from conveyor.handlers.endpoints import WebhookEndpoint
from conveyor.settings import Settings
from tests.alerts.conftest import SECRET
from tests.conftest import running, wait_for
from tests.handlers.servers import Receiver, SmtpServer

INTERVAL_S = 0.2


def handler_settings(smtp: SmtpServer) -> Settings:
    return Settings(
        webhook_allow_hosts="127.0.0.1",
        smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_username=SmtpServer.USER, smtp_password=SmtpServer.PASSWORD,
        smtp_ca_file=str(smtp.cert), smtp_timeout_s=10.0, email_from="Conveyor <alerts@ops.test>",
    )


def build(redis_url: str, prefix: str, receiver: Receiver, smtp: SmtpServer) -> Conveyor:
    """The app as every process of the fleet declares it."""
    app = Conveyor(redis_url, prefix=prefix)

    @app.task(queue="orders")
    async def ship(ctx: JobContext, payload: dict[str, Any]) -> str:
        return "shipped"

    hook = WebhookEndpoint.of("alerts-hook", f"{receiver.url}/hook", SECRET)
    install(app, webhooks=True, email=True, settings=handler_settings(smtp), webhook_endpoints=[hook])
    receiver.unsigned_paths.add("/slack")  # a Slack URL is itself the secret: sent as a bare URL
    app.alert(
        "queue_depth", id="orders-backlog", queue="orders", threshold=0, repeat_s=1, severity="critical",
        description="Orders are not being shipped.",
        channels=[
            {"type": "slack", "url": f"{receiver.url}/slack"},
            {"type": "webhook", "endpoint": "alerts-hook"},
            {"type": "email", "to": ["ops@example.com"]},
        ],
    )
    return app


def bodies(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.received if r.path == path]


def mails(smtp: SmtpServer) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(m.content, policy=email.policy.default)  # type: ignore[misc]
            for m in smtp.inbox.messages]


@asynccontextmanager
async def fleet(apps: list[Conveyor]) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for app in apps:
            scheduler = app.scheduler(alerts_interval_s=INTERVAL_S, maintenance_interval_s=None)
            await scheduler.start()
            stack.push_async_callback(scheduler.close)
        yield


async def test_alert_fires_once_repeats_and_recovers_across_a_fleet(
    redis_url: str, prefix: str, receiver: Receiver, smtp: SmtpServer
) -> None:
    apps = [build(redis_url, prefix, receiver, smtp) for _ in range(4)]
    delivery_app = apps[0]
    orders = delivery_app.queue("orders")
    try:
        await orders.pause()
        await orders.add("ship", {"order": 42})
        async with (
            running(delivery_app.worker("webhooks", lease_ms=5000, idle_block_s=0.5)),
            running(delivery_app.worker("email", lease_ms=5000, idle_block_s=0.5)),
            fleet(apps[1:]),  # three schedulers evaluate the same rules
        ):
            await wait_for(lambda: any(b["kind"] == "repeat" for b in bodies(receiver, "/hook")), timeout=30,
                           what="a repeat notice while the backlog lasts")
            await orders.resume()
            async with running(delivery_app.worker("orders", lease_ms=5000, idle_block_s=0.5)):
                await wait_for(lambda: any(b["kind"] == "resolved" for b in bodies(receiver, "/hook")), timeout=30,
                               what="the recovery notice")
                await wait_for(lambda: len(mails(smtp)) >= 3 and len(bodies(receiver, "/slack")) >= 3,
                               timeout=30, what="email and slack caught up")
                await wait_for(lambda: _settled(delivery_app), timeout=30, what="delivery queues drained")

        hooks = bodies(receiver, "/hook")
        kinds = [b["kind"] for b in hooks]
        seqs = [b["seq"] for b in hooks]
        assert kinds[0] == "fired" and kinds[-1] == "resolved" and set(kinds[1:-1]) == {"repeat"}
        assert sorted(seqs) == list(range(1, len(hooks) + 1)), "each notice exactly once, none missing"
        assert all(r.verified for r in receiver.received if r.path == "/hook"), "endpoint deliveries are signed"
        first = hooks[0]
        assert first["type"] == "alert.fired" and first["episode"] == 1
        assert first["rule"]["id"] == "orders-backlog" and "channels" not in first["rule"]
        assert first["value"] == 1 and "1 waiting jobs in orders" in first["summary"]
        hook_headers = [r.headers for r in receiver.received if r.path == "/hook"]
        assert [h["Conveyor-Event"] for h in hook_headers] == [f"alert.{k}" for k in kinds]

        slack = bodies(receiver, "/slack")
        assert len(slack) == len(hooks)  # the same notices on every channel
        assert slack[0]["text"].startswith("[FIRING] critical: orders-backlog")
        assert slack[0]["attachments"][0]["color"] == "#d0413a"
        assert slack[-1]["text"].startswith("[RESOLVED]") and slack[-1]["attachments"][0]["color"] == "#2e9d5b"

        inbox = mails(smtp)
        assert len(inbox) == len(hooks)
        subjects = [m["Subject"] for m in inbox]
        assert sum(s.startswith("[FIRING]") for s in subjects) == 1
        assert sum(s.startswith("[RESOLVED]") for s in subjects) == 1
        assert all(m["To"] == "ops@example.com" for m in inbox)
        assert "Orders are not being shipped." in inbox[0].get_content()

        store = AlertStore(delivery_app.client, prefix)
        (info,) = await store.all()
        assert info.source == "code" and info.state.status == "ok" and info.state.episode == 1
        history = await store.history()
        assert [h["kind"] for h in reversed(history)] == kinds
        assert await store.pending_notices() == []
    finally:
        for app in apps:
            for name in list(app.queue_configs):
                await app.queue(name).obliterate(force=True)
            await app.close()


async def _settled(app: Conveyor) -> bool:
    counts = [await app.queue(q).counts() for q in ("webhooks", "email")]
    return all(c["waiting"] == 0 and c["active"] == 0 and c["delayed"] == 0 and c["failed"] == 0 for c in counts)


async def test_racing_evaluators_decide_each_notice_once(redis_url: str, prefix: str) -> None:
    """Ten passes at the same instant over the same state: one wins the compare-and-set, so one
    `fired` notice and one delivery job per channel exist."""
    from conveyor.alerts.evaluator import AlertEvaluator

    app = Conveyor(redis_url, prefix=prefix)
    app.alert("queue_depth", id="busy", queue="busy", threshold=0,
              channels=[{"type": "webhook", "url": "https://alerts.example/hook"}, {"type": "email", "to": ["a@b.c"]}])
    try:
        await app.queue("busy").add("anything", {})
        evaluators = [AlertEvaluator(app.client, prefix, declared=app.alerts.values()) for _ in range(10)]
        await evaluators[0].sync()
        now = int((await app.client.time())[0]) * 1000
        reports = await asyncio.gather(*(e.run(now) for e in evaluators))
        # Passes that read the state before the first write lost the compare-and-set; any that read
        # it after saw the alert already firing. Either way no second notice.
        assert sum(r.lost for r in reports) >= 1
        webhooks, mail = app.queue("webhooks"), app.queue("email")
        assert (await webhooks.counts())["waiting"] == 1 and (await mail.counts())["waiting"] == 1
        job = await webhooks.get_job("alert:busy:1:1:0")
        assert job is not None and job.name == "webhooks.deliver" and job.data["event"] == "alert.fired"
        assert job.options["group"] == "alerts.example"
        history = await AlertStore(app.client, prefix).history()
        assert [h["kind"] for h in history] == ["fired"]
    finally:
        for name in ("busy", "webhooks", "email"):
            await app.queue(name).obliterate(force=True)
        await app.close()


async def test_a_notice_left_in_the_outbox_is_delivered_once_by_the_next_pass(redis_url: str, prefix: str) -> None:
    """A pass that stored its transition and died before enqueueing: the outbox keeps the notice, the
    next pass enqueues it, and enqueueing it again (a crash after enqueue, before clearing) adds nothing."""
    from conveyor.alerts import delivery
    from conveyor.alerts.evaluator import AlertEvaluator
    from conveyor.alerts.state import AlertState, step

    app = Conveyor(redis_url, prefix=prefix)
    rule = app.alert("no_worker", id="nobody", queue="ghost", channels=[{"type": "email", "to": ["a@b.c"]}])
    store = AlertStore(app.client, prefix)
    try:
        evaluator = AlertEvaluator(app.client, prefix, declared=[rule])
        await evaluator.sync()
        (info,) = await store.all()
        from conveyor.alerts.probe import Probe

        sec, usec = await app.client.time()
        now = int(sec) * 1000 + int(usec) // 1000
        reading = await rule.measure(Probe(app.client, prefix, now))
        state, notices = step(rule, AlertState(), reading, now)
        assert await store.transition(rule.id, info.version, state, notices)  # ... and the process dies here
        assert [n.id for n in await store.pending_notices()] == ["nobody:1:1"]
        report = await evaluator.run()
        assert report.notices == 1 and await store.pending_notices() == []
        assert await delivery.enqueue(app.client, prefix, notices[0]) == 0  # a repeat enqueue is a no-op
        assert (await app.queue("email").counts())["waiting"] == 1
    finally:
        await app.queue("email").obliterate(force=True)
        await app.close()
