"""Property-based run of schemathesis against the app's own OpenAPI document (in-process ASGI):
no 500s, and every response matches the documented status codes, content types, headers and
schemas. Examples per operation are bounded so the run stays well under the per-test timeout on a busy
machine: event streams end after a fraction of a second (`api_sse_max_s`, so a stream is checked
whole instead of until the client's timeout), and the coverage phase of the flow route, whose nested
body yields over ten thousand boundary cases, sends the invalid ones only (each must be refused with
a documented 4xx; valid flows come from the fuzzing phase). The flow route alone still sends ~6,600
cases, so the test's hang guard is wider than the suite's default."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from conveyor.api import create_app
from conveyor.api.keys import KeyStore
from conveyor.redis.connection import connect
from conveyor.settings import Settings
from tests.api.sample_app import build_app

MAX_EXAMPLES = 20
QUEUE = f"schemathesis-{uuid.uuid4().hex[:8]}"
PREFIX = f"st{uuid.uuid4().hex[:8]}"  # schedules and keys it creates stay out of other tests' way


class Target:
    queue: str = ""
    token: str = ""


async def _admin_key(redis_url: str) -> tuple[str, str]:
    client = connect(redis_url)
    try:
        token, info = await KeyStore(client, PREFIX).create("schemathesis", ["admin"])
        return token, info.id
    finally:
        await client.aclose()


async def _cleanup(redis_url: str, queue: str, key_id: str) -> None:
    app = build_app(redis_url, queue, PREFIX)
    try:
        await app.queue(queue).obliterate(force=True)
        await KeyStore(app.client, PREFIX).revoke(key_id)
    finally:
        await app.close()


CONVEYOR = build_app(None, QUEUE, PREFIX)  # pointed at the test server by the fixture, before first use
ASGI = create_app(
    CONVEYOR, Settings(api_sse_keepalive_s=0.05, api_sse_max_s=0.3, api_rate_limit=0, api_max_body_bytes=65536)
)
CONFIG = SchemathesisConfig.from_dict(
    {
        "operations": [
            {
                "include-path": "/api/flows",
                "include-method": "POST",
                "phases": {"coverage": {"generation": {"mode": "negative"}}},
            }
        ]
    }
)
schema = schemathesis.openapi.from_asgi("/openapi.json", ASGI, config=CONFIG)


@pytest.fixture(scope="module", autouse=True)
def target(redis_server: Any) -> Iterator[None]:
    url = redis_server.url
    CONVEYOR.use_redis(url)
    Target.queue = QUEUE
    Target.token, key_id = asyncio.run(_admin_key(url))
    yield
    asyncio.run(_cleanup(url, QUEUE, key_id))


@pytest.mark.timeout(480)
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_openapi_document(case: Any) -> None:
    if "queue" in (case.path_parameters or {}):
        case.path_parameters["queue"] = Target.queue  # reach the routes behind the queue check
    # Every default check except the two that judge input strictness (FastAPI ignores unknown query
    # parameters, pydantic coerces in lax mode); those are not about responses violating the spec.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {Target.token}"},
        excluded_checks=[negative_data_rejection, positive_data_acceptance],
    )
