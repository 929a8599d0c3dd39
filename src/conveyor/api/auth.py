"""The FastAPI dependency that checks `Authorization: Bearer <key>`, its scope and its rate limit."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from conveyor.api.errors import ApiError
from conveyor.api.keys import Scope, expand_scopes, split_key
from conveyor.api.ratelimit import AUTHORIZE, decide
from conveyor.api.state import ApiState, get_state

bearer = HTTPBearer(
    auto_error=False,
    description="An API key made with `conveyor keys create`; scopes: enqueue, read, read-data, admin.",
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling and what they may do."""

    key_id: str | None
    scopes: frozenset[Scope]
    # The checked secret's hash, so what a request holds open can check the key again (api/sse.py).
    secret_hash: str | None = field(default=None, repr=False)

    def can(self, scope: Scope) -> bool:
        return scope in self.scopes


OPEN = Principal(None, frozenset(Scope))


async def _check(state: ApiState, key_id: str, secret_hash: str, scope: Scope) -> frozenset[Scope]:
    """The key check and rate decision in Redis (one round trip); an unlimited key is then cached."""
    store, cache = state.keys, state.key_cache
    sent_at = cache.now()
    leading = cache.checking(key_id, secret_hash)
    cacheable: frozenset[Scope] | None = None
    try:
        reply = await AUTHORIZE(
            state.client,
            (store.record_key(key_id), store.limit_key(key_id)),
            (secret_hash, state.settings.api_rate_limit),
        )
        decision = decide(reply)
        if not decision.known:
            cache.forget(key_id)
            raise ApiError(401, "the API key is unknown or revoked", headers=_CHALLENGE)
        scopes = expand_scopes(decision.scopes)
        if decision.unlimited:
            cache.remember(key_id, secret_hash, scopes, sent_at)
            cacheable = scopes
        else:
            cache.forget(key_id)
    finally:
        if leading is not None:
            cache.checked(key_id, secret_hash, cacheable)
    if scope not in scopes:
        raise ApiError(403, f"this key lacks the {scope.value!r} scope")
    if not decision.allowed:
        raise ApiError(
            429, "rate limit exceeded for this key", headers={"Retry-After": str(decision.retry_after_s)}
        )
    return scopes


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting keys that hold `scope` (admin holds every scope)."""

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
    ) -> Principal:
        state = get_state(request)
        if not state.settings.api_auth:
            return OPEN
        if credentials is None:
            raise ApiError(401, "an API key is required (Authorization: Bearer <key>)", headers=_CHALLENGE)
        return await _principal(state, credentials.credentials, scope)

    dependency.__name__ = f"require_{scope.name.lower()}"
    return dependency


async def bearer_principal(request: Request, authorization: str | None, scope: Scope) -> Principal | None:
    """The `require(scope)` check for a plain `Bearer <key>` header (the fast path, api/fastpath.py);
    None, having checked nothing, when the header is not that or keys are off."""
    state = get_state(request)
    if authorization is None or not state.settings.api_auth:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return await _principal(state, token, scope)


async def _principal(state: ApiState, token: str, scope: Scope) -> Principal:
    parts = split_key(token)
    if parts is None:
        raise ApiError(401, "the API key is malformed", headers=_CHALLENGE)
    key_id, secret_hash = parts
    scopes = state.key_cache.scopes(key_id, secret_hash)
    if scopes is None:
        scopes = await state.key_cache.follow(key_id, secret_hash)
    if scopes is None:
        scopes = await _check(state, key_id, secret_hash, scope)
    if scope not in scopes:
        raise ApiError(403, f"this key lacks the {scope.value!r} scope")
    return Principal(key_id, scopes, secret_hash)


async def current_scopes(state: ApiState, principal: Principal) -> frozenset[Scope] | None:
    """The scopes `principal`'s key holds now, for a request that stays open (an event stream, a
    long-poll) after its key was checked: None once the key is revoked. Read from the key cache while
    its entry is fresh, else from the key's record in Redis; no rate decision is spent (the request
    was admitted once). Without keys (`CONVEYOR_API_AUTH=0`): the principal's own scopes."""
    key_id, secret_hash = principal.key_id, principal.secret_hash
    if key_id is None or secret_hash is None:
        return principal.scopes
    cache = state.key_cache
    cached = cache.scopes(key_id, secret_hash)
    if cached is not None:
        return cached
    read_at = cache.now()
    stored, scopes, rate = await state.client.hmget(state.keys.record_key(key_id), ["hash", "scopes", "rate"])
    if stored is None or not hmac.compare_digest(str(stored), secret_hash):
        cache.forget(key_id)
        return None
    granted = expand_scopes(s for s in str(scopes or "").split(",") if s)
    if _rate(rate, state.settings.api_rate_limit) <= 0:  # unlimited: cacheable, as a request's check is
        cache.remember(key_id, secret_hash, granted, read_at)
    return granted


def _rate(stored: object, default: float) -> float:
    """A key's rate as the key check reads it (its own, when a number; else the default). Anything
    odd reads as limited, so it is never cached."""
    try:
        return float(str(stored)) if stored is not None else float(default)
    except ValueError:
        return 1.0


def shows_data(read: Callable[..., Awaitable[Principal]]) -> Callable[..., Awaitable[bool]]:
    """A dependency: whether the caller, checked by the `read` dependency, may see payloads."""

    async def dependency(principal: Principal = Depends(read)) -> bool:  # noqa: B008 - `read` is local
        return principal.can(Scope.READ_DATA)

    return dependency


EnqueueKey = Annotated[Principal, Depends(require(Scope.ENQUEUE))]
ReadKey = Annotated[Principal, Depends(require(Scope.READ))]
AdminKey = Annotated[Principal, Depends(require(Scope.ADMIN))]
