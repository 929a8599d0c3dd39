"""Rate-limit defaults that fit a web service: a key made without a limit is unlimited unless the
operator sets CONVEYOR_API_RATE_LIMIT; a key's own limit wins; the admin key `conveyor up` prints is
never limited, whatever the operator's default."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.api.keys import split_key
from conveyor.settings import Settings
from conveyor.up.adminkey import ensure_admin_key
from tests.api.conftest import Api

BURST = 250  # well past any one-second budget a default could allow by accident


async def _statuses(api: Api, token: str, n: int = BURST) -> list[int]:
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/queues/{api.queue}"
    return [(await api.http.get(url, headers=headers)).status_code for _ in range(n)]


def test_the_default_is_unlimited() -> None:
    assert Settings.from_env({}).api_rate_limit == 0
    assert Settings.from_env({"CONVEYOR_API_RATE_LIMIT": "50"}).api_rate_limit == 50


async def test_a_key_without_a_limit_is_unlimited_by_default(api_factory: Callable[..., Any]) -> None:
    async with api_factory(api_rate_limit=Settings().api_rate_limit) as api:
        token, info = await api.keys.create("web-service", ["read"])
        try:
            assert set(await _statuses(api, token)) == {200}
        finally:
            await api.keys.revoke(info.id)


async def test_the_operator_default_and_a_keys_own_limit(api_factory: Callable[..., Any]) -> None:
    async with api_factory(api_rate_limit=2) as api:
        defaulted, one = await api.keys.create("defaulted", ["read"])
        own, two = await api.keys.create("own-unlimited", ["read"], rate_limit=0)
        try:
            assert 429 in await _statuses(api, defaulted, 20)  # the operator's default applies
            assert set(await _statuses(api, own)) == {200}  # its own limit (none) wins
        finally:
            await api.keys.revoke(one.id)
            await api.keys.revoke(two.id)


async def test_the_conveyor_up_admin_key_is_never_limited(api_factory: Callable[..., Any], tmp_path: Path) -> None:
    async with api_factory(api_rate_limit=2) as api:
        url = api.app.redis_url
        token = await asyncio.to_thread(ensure_admin_key, url, api.app.prefix, tmp_path / f"{uuid.uuid4().hex}.key")
        assert token is not None
        parts = split_key(token)
        assert parts is not None
        try:
            assert set(await _statuses(api, token)) == {200}
        finally:
            await api.keys.revoke(parts[0])
