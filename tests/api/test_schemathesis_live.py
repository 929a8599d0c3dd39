"""schemathesis with every check (`--checks all`) over the live schema of a real `conveyor api`
process: no 5xx, no response that violates the document, no invalid input accepted, no valid input
refused. Examples per operation are bounded so the run stays in `make test`'s budget."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from conveyor.api import create_app
from conveyor.api.keys import KeyStore
from conveyor.redis.connection import connect
from conveyor.settings import Settings
from conveyor.testing import free_port
from tests.api.sample_app import build_app

ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = 10
QUEUE = f"st-live-{uuid.uuid4().hex[:8]}"
PREFIX = f"stl{uuid.uuid4().hex[:8]}"  # keys and schedules it creates stay out of other tests' way


class Live:
    url = ""
    token = ""


async def _admin_key(redis_url: str) -> tuple[str, str]:
    client = connect(redis_url)
    try:
        token, info = await KeyStore(client, PREFIX).create("schemathesis-live", ["admin"])
        return token, info.id
    finally:
        await client.aclose()


async def _cleanup(redis_url: str, key_id: str) -> None:
    app = build_app(redis_url, QUEUE, PREFIX)
    try:
        await app.queue(QUEUE).obliterate(force=True)
        await KeyStore(app.client, PREFIX).revoke(key_id)
        for name in await app.client.keys(f"{PREFIX}:*"):  # schedules the run created (own prefix)
            await app.client.delete(name)
    finally:
        await app.close()


@pytest.fixture(scope="module")
def live_url(redis_server: Any) -> Iterator[str]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
        "REDIS_URL": redis_server.url, "API_TEST_QUEUE": QUEUE, "API_TEST_PREFIX": PREFIX,
        "CONVEYOR_API_SSE_KEEPALIVE_S": "0.05", "CONVEYOR_API_MAX_BODY_BYTES": "65536",
        "CONVEYOR_API_SSE_MAX_S": "0.3",  # event streams end, so their responses can be read whole
    }
    conveyor = str(Path(sys.executable).with_name("conveyor"))
    proc = subprocess.Popen([conveyor, "api", "tests.api.sample_app:app", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    Live.url = f"http://127.0.0.1:{port}"
    Live.token, key_id = asyncio.run(_admin_key(redis_server.url))
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{Live.url}/api/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "conveyor api did not start"
        time.sleep(0.1)
    try:
        assert httpx.get(f"{Live.url}/openapi.json", timeout=30).json() == DOCUMENT
        yield Live.url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        output = proc.stdout.read().decode() if proc.stdout else ""
        asyncio.run(_cleanup(redis_server.url, key_id))
        assert "Traceback" not in output and "unhandled error" not in output, output


# The document the live process serves is built by the same code; the fixture checks it is equal.
DOCUMENT = create_app(build_app(None, QUEUE, PREFIX), Settings()).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)


@schema.parametrize()
@pytest.mark.timeout(600)  # a hang guard only: POST /api/flows's many generated trees take minutes on a busy machine
@settings(
    max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_live_api_passes_every_schemathesis_check(case: Any, live_url: str) -> None:
    if "queue" in (case.path_parameters or {}):
        case.path_parameters["queue"] = QUEUE  # reach the routes behind the queue check
    method, path = case.operation.method.upper(), case.operation.path
    excluded = []
    semantic = _has_run_at(case.body) or _keyed(case.body) or _two_keys(case) or _off_pattern_header(case)
    if (method, path) in SEMANTIC_BODIES or semantic:
        excluded.append(positive_data_acceptance)
    if (method, path) in TASK_PAYLOADS:
        excluded.append(negative_data_rejection)
    case.call_and_validate(
        base_url=live_url, headers={"Authorization": f"Bearer {Live.token}"}, timeout=30, excluded_checks=excluded
    )


def _off_pattern_header(case: Any) -> bool:
    """A header value that does not match its documented pattern: not a schema-valid request, though
    schemathesis's coverage phase sends some as if it were (`Last-Event-ID: 0`). Still checked for
    server errors and response conformance."""
    for param in DOCUMENT["paths"][case.operation.path][case.operation.method.lower()].get("parameters", []):
        pattern = param.get("schema", {}).get("pattern")
        value = (case.headers or {}).get(param["name"])
        if param["in"] == "header" and pattern and isinstance(value, str) and not re.search(pattern, value):
            return True
    return False


def _keyed(body: Any) -> bool:
    """Keyed options (`key`, `key_mode`, `key_window`) go together by rules the schema describes in
    words: key and key_mode both or neither, key_window for debounce and throttle only, and one keyed
    job per call. Such bodies are still checked for server errors and response conformance."""
    jobs = body.get("jobs", [body]) if isinstance(body, dict) else []
    return any(
        isinstance(job, dict) and isinstance(job.get("options"), dict)
        and any(job["options"].get(k) is not None for k in ("key", "key_mode", "key_window"))
        for job in (jobs if isinstance(jobs, list) else [])
    )


def _has_run_at(body: Any) -> bool:
    """`run_at` must also be within 100 years of now (the bound of every delay), which a schema
    cannot state for a moving clock."""
    jobs = body.get("jobs", [body]) if isinstance(body, dict) else []
    return any(
        isinstance(job, dict) and isinstance(job.get("options"), dict) and job["options"].get("run_at") is not None
        for job in (jobs if isinstance(jobs, list) else [])
    )


def _two_keys(case: Any) -> bool:
    """An Idempotency-Key header and an options.idempotency_key that differ are a 422 (in a bulk
    call job i's key is `<header>:i`): the two must agree, which a schema cannot state across a
    header and a body."""
    header = (case.headers or {}).get("Idempotency-Key")
    body = case.body
    bulk = isinstance(body, dict) and "jobs" in body
    jobs = body.get("jobs", [body]) if isinstance(body, dict) else []
    return header is not None and any(
        isinstance(job, dict) and isinstance(job.get("options"), dict)
        and job["options"].get("idempotency_key") not in (None, f"{header}:{i}" if bulk else header)
        for i, job in enumerate(jobs if isinstance(jobs, list) else [])
    )


# Schedules and alert rules have rules the schema cannot state (a cron expression's syntax, a time
# zone's name, exactly one channel target of two): a schema-valid body may still be a 422 there.
# A flow tree has rules across its nodes that a schema cannot state: job ids unique in the tree, at
# most 10,000 nodes, on_child_failure on a node that has children.
SEMANTIC_BODIES = frozenset({
    ("PUT", "/api/schedules/{schedule_id}"), ("PUT", "/api/alerts"), ("POST", "/api/flows"),
    # Rules across fields that a schema cannot state (each documented on the operation): a budget
    # has a soft or a hard limit and soft <= hard; a cost query's `since` <= `until`, 400 days at most.
    ("PUT", "/api/budgets/{group}"), ("GET", "/api/costs"),
})
# A job's `data` is validated by the application's own pydantic model in its default (lax) mode, so
# `false` for a float field is accepted as 0.0: input strictness there is the application's choice.
# Every other part of an enqueue body (name, options, bounds) is still checked for rejection.
TASK_PAYLOADS = frozenset({
    ("POST", "/api/queues/{queue}/jobs"), ("POST", "/api/queues/{queue}/jobs:bulk"), ("POST", "/api/flows"),
})
