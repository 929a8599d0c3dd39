"""API keys: scopes, creation, listing and revocation. Only a SHA-256 of each secret is stored.

A key reads `cvk_<id>_<secret>`: the id finds the record, the 256-bit secret proves possession.
Records live in `{prefix}:{auth}:key:<id>` (hash: name, hash, scopes, rate, created_ms) and the
ids in the set `{prefix}:{auth}:keys`; the `{auth}` hash tag keeps them in one Cluster slot.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from conveyor.errors import ConfigurationError
from conveyor.redis.connection import RedisClient
from conveyor.redis.keys import validate_prefix

_KEY = re.compile(r"^cvk_([0-9a-f]{16})_([0-9a-f]{64})$")
_NAME_MAX = 100


class Scope(StrEnum):
    ENQUEUE = "enqueue"
    READ = "read"
    READ_DATA = "read-data"
    ADMIN = "admin"


def expand_scopes(scopes: Iterable[str]) -> frozenset[Scope]:
    """Granted scopes with their implications: admin grants all, read-data grants read."""
    granted = {Scope(s) for s in scopes if s in Scope._value2member_map_}
    if Scope.ADMIN in granted:
        return frozenset(Scope)
    if Scope.READ_DATA in granted:
        granted.add(Scope.READ)
    return frozenset(granted)


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    out: list[Scope] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if part not in Scope._value2member_map_:
                raise ConfigurationError(f"unknown scope {part!r}; use {', '.join(s.value for s in Scope)}")
            if Scope(part) not in out:
                out.append(Scope(part))
    if not out:
        raise ConfigurationError("a key needs at least one scope")
    return out


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(token: str) -> tuple[str, str] | None:
    """(key id, secret hash) of a well-formed key, else None."""
    m = _KEY.match(token)
    return None if m is None else (m.group(1), hash_secret(m.group(2)))


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: str
    name: str
    scopes: list[str]
    rate_limit: int | None
    created_ms: int


class KeyStore:
    """Create, list and revoke keys under one prefix."""

    def __init__(self, client: RedisClient, prefix: str = "cv") -> None:
        self.client = client
        self.prefix = validate_prefix(prefix)

    def record_key(self, key_id: str) -> str:
        return f"{self.prefix}:{{auth}}:key:{key_id}"

    def limit_key(self, key_id: str) -> str:
        return f"{self.prefix}:{{auth}}:rl:{key_id}"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:{{auth}}:keys"

    async def create(
        self, name: str, scopes: Iterable[str], *, rate_limit: int | None = None
    ) -> tuple[str, ApiKeyInfo]:
        """A new key; the returned token is shown once and cannot be recovered."""
        if not name or len(name) > _NAME_MAX or not name.isprintable():
            raise ConfigurationError(f"key name must be 1-{_NAME_MAX} printable characters")
        if rate_limit is not None and rate_limit < 0:
            raise ConfigurationError("rate limit must be >= 0 requests per second (0 = unlimited)")
        scope_list = [s.value for s in parse_scopes(scopes)]
        key_id, secret = secrets.token_hex(8), secrets.token_hex(32)
        info = ApiKeyInfo(key_id, name, scope_list, rate_limit, int(time.time() * 1000))
        mapping: dict[str, Any] = {
            "name": name,
            "hash": hash_secret(secret),
            "scopes": ",".join(scope_list),
            "created_ms": str(info.created_ms),
        }
        if rate_limit is not None:
            mapping["rate"] = str(rate_limit)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.record_key(key_id), mapping=cast(Any, mapping))
            pipe.sadd(self.index_key, key_id)
            await pipe.execute()
        return f"cvk_{key_id}_{secret}", info

    async def list(self) -> list[ApiKeyInfo]:
        ids = sorted(str(i) for i in await self.client.smembers(self.index_key))
        out = []
        for key_id in ids:
            h = cast(dict[str, str], await self.client.hgetall(self.record_key(key_id)))
            if h:
                rate = h.get("rate")
                out.append(
                    ApiKeyInfo(
                        key_id,
                        h.get("name", ""),
                        [s for s in h.get("scopes", "").split(",") if s],
                        None if rate is None else int(rate),
                        int(h.get("created_ms", 0)),
                    )
                )
        return sorted(out, key=lambda k: k.created_ms)

    async def revoke(self, key_id: str) -> bool:
        """Delete a key; every API process refuses it within `CONVEYOR_API_KEY_CACHE_S` seconds (an
        unlimited key's check is cached that long, api/keycache.py). False if unknown."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.record_key(key_id), self.limit_key(key_id))
            pipe.srem(self.index_key, key_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)
