"""Prompt-level de-duplication: identical AI requests in flight at the same time share one provider
call, fleet-wide; optionally a completed request's result is reused for a while.

Within a process, identical requests await one task. Across processes, a Redis lease elects the
leader: `SET <fp>:lease <token> NX PX lease`, renewed while the call runs. Followers read the lease's
token T and wait for `res:T` (woken through the list `ntf:T`, each waking follower wakes the next;
they re-check at least every `wait_s` in case a wake-up was missed). When the leader finishes it
stores `res:T` (and `done` when reuse is on), drops its lease and wakes the followers, in one script.
A leader that fails drops its lease without a result: one follower becomes the next leader. A leader
that dies stops renewing; its lease expires after `lease_s` and a follower takes over, so a crash
costs followers at most one lease time. All times are the Redis clock's (PX).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from conveyor.errors import ConfigurationError
from conveyor.redis.connection import RedisClient
from conveyor.redis.keys import ai_dedupe_base

logger = logging.getLogger(__name__)

# KEYS: 1 lease, 2 res:<token>, 3 ntf:<token>, 4 done. ARGV: token, result ('' = none: the call failed),
# result ttl ms, reuse ttl ms (0 = off). Stores the result, drops the lease if still ours, wakes followers.
_FINISH = """
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  if tonumber(ARGV[4]) > 0 then redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[4]) end
end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('LPUSH', KEYS[3], '1')
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return 1
"""

# KEYS: 1 lease. ARGV: token, lease ms. Extends the lease while it is still ours (1), else 0.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: 1 a stored result (done or res:<token>). ARGV: the value that could not be read. Deletes it
# while it still holds that value (a fresh result stored meanwhile stays).
_DROP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

MAX_LEASE_S = 3600.0
MAX_REUSE_S = 30 * 86400.0
_FOLLOWER_RESULT_MS = 120_000  # how long a shared result waits for the followers of its call


def fingerprint(request: Any) -> str:
    """sha256 of the canonical JSON of everything that shapes the answer (model, prompt, parameters)."""
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Dedupe:
    """Shares identical calls; `client` is called lazily (the app connects on use)."""

    def __init__(
        self, client: Callable[[], RedisClient], *, prefix: str = "cv", lease_s: float = 30.0, reuse_s: float = 0.0
    ) -> None:
        if not 0.1 <= lease_s <= MAX_LEASE_S:
            raise ConfigurationError(f"AI de-duplication lease must be in [0.1, {MAX_LEASE_S:.0f}] s, got {lease_s}")
        if not 0 <= reuse_s <= MAX_REUSE_S:
            raise ConfigurationError(f"AI result reuse TTL must be in [0, {MAX_REUSE_S:.0f}] s, got {reuse_s}")
        self._client = client
        self.prefix = prefix
        self.lease_ms = int(lease_s * 1000)
        self.reuse_ms = int(reuse_s * 1000)
        self.wait_s = min(2.0, max(0.05, lease_s / 3))
        self._local: dict[str, asyncio.Future[str]] = {}
        self.calls = 0  # provider calls this process led (for tests and metrics)

    async def run(
        self, fp: str, call: Callable[[], Awaitable[str]], readable: Callable[[str], bool] = lambda raw: True
    ) -> tuple[str, bool]:
        """The result of `call` for fingerprint `fp`: (result, shared). `shared` is True when another
        request's call (in flight, or completed within the reuse TTL) answered this one. A stored
        result that is not `readable` (edited by hand, or stored by a release whose results had other
        fields) is dropped and counts as none: this request calls, and stores its own result."""
        while True:
            local = self._local.get(fp)
            if local is not None:
                try:
                    return await asyncio.shield(local), True
                except Exception:
                    await asyncio.sleep(0)  # its leader failed: contend again
                    continue
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._local[fp] = future
            try:
                result, shared = await self._fleet(fp, call, readable)
            except BaseException as exc:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                    future.exception()  # retrieved: no "never retrieved" warning when nobody waits
                raise
            else:
                future.set_result(result)
                return result, shared
            finally:
                if self._local.get(fp) is future:
                    del self._local[fp]

    async def _fleet(
        self, fp: str, call: Callable[[], Awaitable[str]], readable: Callable[[str], bool]
    ) -> tuple[str, bool]:
        client = self._client()
        base = ai_dedupe_base(self.prefix, fp)
        while True:
            if self.reuse_ms:
                done = await self._stored(client, base + "done", readable)
                if done is not None:
                    return done, True
            token = secrets.token_hex(8)
            if await client.set(base + "lease", token, nx=True, px=self.lease_ms):
                return await self._lead(client, base, token, call), False
            leader = await client.get(base + "lease")
            if leader is None:
                continue  # it just ended: contend again
            result = await self._follow(client, base, str(leader), readable)
            if result is not None:
                return result, True

    async def _stored(self, client: RedisClient, key: str, readable: Callable[[str], bool]) -> str | None:
        """The result stored under `key`, or None: none there, or one that cannot be read (dropped)."""
        raw = await client.get(key)
        if raw is None:
            return None
        if readable(str(raw)):
            return str(raw)
        logger.warning("AI de-duplication: a stored result could not be read; it is dropped and the provider asked")
        await client.eval(_DROP, 1, key, raw)
        return None

    async def _lead(self, client: RedisClient, base: str, token: str, call: Callable[[], Awaitable[str]]) -> str:
        self.calls += 1
        renew = asyncio.create_task(self._renew(client, base, token))
        result = ""
        try:
            result = await call()
            return result
        finally:
            renew.cancel()
            keys = (base + "lease", base + "res:" + token, base + "ntf:" + token, base + "done")
            args = (token, result, _FOLLOWER_RESULT_MS, self.reuse_ms)
            try:
                await asyncio.shield(client.eval(_FINISH, len(keys), *keys, *args))
            except Exception:  # the lease expires by itself; followers take over then
                logger.warning("AI de-duplication: could not publish a shared result", exc_info=True)

    async def _renew(self, client: RedisClient, base: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                if not await client.eval(_RENEW, 1, base + "lease", token, self.lease_ms):
                    return  # lost (it expired while we stalled): a follower may lead now
            except Exception:
                logger.warning("AI de-duplication: lease renewal failed", exc_info=True)

    async def _follow(
        self, client: RedisClient, base: str, leader: str, readable: Callable[[str], bool]
    ) -> str | None:
        """The leader's result, or None when its lease ended without one (failed or died)."""
        result_key, notify_key = base + "res:" + leader, base + "ntf:" + leader
        while True:
            result = await self._stored(client, result_key, readable)
            if result is not None:
                return result
            if await client.get(base + "lease") != leader:
                return await self._stored(client, result_key, readable)
            if await client.blpop([notify_key], timeout=self.wait_s):
                await client.lpush(notify_key, "1")  # wake the next follower too
