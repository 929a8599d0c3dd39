"""Resolver failures through the real system resolver: `conveyor worker` runs in a mount namespace
whose /etc/resolv.conf names the test's DNS server. A SERVFAIL makes getaddrinfo fail with EAI_AGAIN:
webhook and document jobs are retried and succeed once the name resolves. NXDOMAIN (EAI_NONAME) fails
the job at once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, Fixed, JobFailedError, JobState
from conveyor.handlers import install
from tests.conftest import wait_for
from tests.handlers.conftest import SECRET
from tests.handlers.dns import NXDOMAIN, SERVFAIL, DnsServer
from tests.handlers.servers import Receiver

ROOT = Path(__file__).resolve().parents[2]
FLAKY_HOOKS, FLAKY_DOCS, MISSING = "hooks.flaky.test", "docs.flaky.test", "gone.nowhere.test"


def _can_use_mount_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _can_use_mount_namespaces(), reason="needs `unshare --mount` (root) to give the worker its own resolv.conf"
)


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    server = await DnsServer().start()
    yield server
    server.close()


@pytest.fixture
def prefix() -> str:
    return f"dns{uuid.uuid4().hex[:10]}"


@pytest.fixture
def worker_process(
    dns: DnsServer, receiver: Receiver, redis_url: str, prefix: str, tmp_path: Path
) -> Iterator[subprocess.Popen[str]]:
    """`conveyor worker` for the webhooks and documents queues, resolving names through `dns` only."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {dns.address}\noptions timeout:1 attempts:1\n")
    endpoints = {
        name: {"url": f"http://{host}:{receiver.port}/hook", "secret_env": "TEST_WEBHOOK_SECRET"}
        for name, host in (("flaky", FLAKY_HOOKS), ("gone", MISSING))
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "WORKER_"))}
    env.update(
        {
            "REDIS_URL": redis_url,
            "CONVEYOR_PREFIX": prefix,
            "CONVEYOR_QUEUES": "webhooks,documents",
            "CONVEYOR_SCHEDULER": "false",
            "CONVEYOR_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
            "CONVEYOR_WEBHOOK_ENDPOINTS": json.dumps(endpoints),
            "TEST_WEBHOOK_SECRET": SECRET,
            "WORKER_HEALTH_PORT": "0",
        }
    )
    script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
    command = [sys.executable, "-m", "conveyor", "worker", "tests.handlers.resolver_app:app"]
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(resolv), *command],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
async def producer(redis_url: str, prefix: str) -> AsyncIterator[Conveyor]:
    app = Conveyor(redis_url, prefix=prefix)
    yield app
    for name in list(app.queue_configs):
        await app.queue(name).obliterate(force=True)
    await app.close()


async def _record_error(app: Conveyor, queue: str, job_id: str) -> dict[str, Any]:
    rec = await app.queue(queue).get_job(job_id)
    assert rec is not None
    return rec.error or {}


async def test_temporary_dns_failures_are_retried_and_missing_names_are_not(
    dns: DnsServer, receiver: Receiver, worker_process: subprocess.Popen[str], producer: Conveyor
) -> None:
    dns.answers.update({FLAKY_HOOKS: SERVFAIL, FLAKY_DOCS: SERVFAIL, MISSING: NXDOMAIN})
    receiver.files["/notes.txt"] = (b"Photosynthesis makes sugar from light.", "text/plain")
    handlers = install(producer, webhooks=True, documents=True)
    assert handlers.webhooks is not None and handlers.documents is not None
    retry = {"attempts": 20, "backoff": Fixed(0.2)}
    hook = await handlers.webhooks.send({"order": 7}, endpoint="flaky", **retry)
    gone = await handlers.webhooks.send({"order": 8}, endpoint="gone", **retry)
    doc = await handlers.documents.task.enqueue({"url": f"http://{FLAKY_DOCS}:{receiver.port}/notes.txt"}, **retry)

    async def retried_for_dns(queue: str, job_id: str) -> bool:
        error = await _record_error(producer, queue, job_id)
        return "temporary DNS failure" in str(error.get("message", ""))

    await wait_for(lambda: retried_for_dns("webhooks", hook.id), timeout=60, what="webhook retried after SERVFAIL")
    await wait_for(lambda: retried_for_dns("documents", doc.id), timeout=60, what="document retried after SERVFAIL")
    with pytest.raises(JobFailedError, match=r"cannot resolve host 'gone\.nowhere\.test'"):
        await gone.result(timeout=60)
    gone_record = await gone.record()
    assert gone_record.attempts_made == 1 and gone_record.state is JobState.FAILED, "a missing name is final"
    assert dns.queries[MISSING] >= 1 and dns.queries[FLAKY_HOOKS] >= 1, "the worker asked the real DNS server"

    dns.answers.update({FLAKY_HOOKS: "127.0.0.1", FLAKY_DOCS: "127.0.0.1"})  # the resolver recovers
    delivered = await hook.result(timeout=60)
    text = await doc.result(timeout=60)
    assert delivered.status == 200 and delivered.signed
    assert text.text == "Photosynthesis makes sugar from light."
    assert (await hook.record()).attempts_made >= 2 and (await doc.record()).attempts_made >= 2
    [got] = receiver.received
    assert got.verified and got.headers["Host"] == f"{FLAKY_HOOKS}:{receiver.port}"
    assert worker_process.poll() is None, "the worker kept running"
