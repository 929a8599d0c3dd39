"""Requests the OpenAPI document does not describe are refused instead of half-served.

- Unknown query parameters are a 422 instead of silently ignored: a typo such as `?timout=60` would
  otherwise wait the default time. So is a parameter of one value given several times
  (`?state=waiting&state=failed` would otherwise list only failed jobs, as if it were the filter asked for),
  and a header of one value sent several times (two `Idempotency-Key`s: only the first one counted,
  so a retry that sent them in the other order enqueued the job again).
- Job ids may contain '/', so `DELETE /api/jobs/q/42/wait` also fits `DELETE /api/jobs/{q}/{id}`
  (a job "42/wait"). The resource at such a path is the most specific template that fits it
  (`/api/jobs/{q}/{id}/wait`); a method that resource does not serve is a 405 with its `Allow`.
- A JSON body whose object repeats a key is a 422 naming it (api/body.py), as the routes that parse
  their body themselves answer.
"""

from __future__ import annotations

import types
from collections import Counter
from collections.abc import Sequence
from typing import Any, Union, get_args, get_origin

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from conveyor.api.body import refuse_repeated_keys
from conveyor.api.errors import ApiError, allowed_methods

_KNOWN: dict[int, tuple[frozenset[str], frozenset[str]]] = {}
_HEADERS: dict[int, frozenset[bytes]] = {}


def _declared(route: APIRoute) -> tuple[frozenset[str], frozenset[str]]:
    """(every query parameter name of the route, those that take one value)."""
    known = _KNOWN.get(id(route))
    if known is None:
        params = _query_params(route.dependant)
        known = (frozenset(p.alias for p in params),
                 frozenset(p.alias for p in params if not _is_list(p.field_info.annotation)))
        _KNOWN[id(route)] = known
    return known


def _one_value_headers(route: APIRoute) -> frozenset[bytes]:
    """The route's header parameters that take one value (`Idempotency-Key`, `Last-Event-ID`), as
    the server gives header names: lower-case bytes."""
    known = _HEADERS.get(id(route))
    if known is None:
        params = _header_params(route.dependant)
        known = frozenset(p.alias.lower().encode("latin-1") for p in params if not _is_list(p.field_info.annotation))
        _HEADERS[id(route)] = known
    return known


def _header_params(dependant: Any) -> list[Any]:
    params = list(dependant.header_params)
    for sub in dependant.dependencies:
        params += _header_params(sub)
    return params


def _query_params(dependant: Any) -> list[Any]:
    """Query parameters of a route's dependant and of every dependency under it."""
    params = list(dependant.query_params)
    for sub in dependant.dependencies:
        params += _query_params(sub)
    return params


def _is_list(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_is_list(arg) for arg in get_args(annotation))
    return isinstance(origin, type) and issubclass(origin, Sequence | set | frozenset) and origin is not str


async def described_requests_only(request: Request) -> None:
    """An app-wide dependency: the two checks of the module docstring."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    if ":path}" in route.path and request.method not in allowed_methods(request):
        raise HTTPException(405)
    headers = _one_value_headers(route)
    if headers:
        sent = Counter(name for name, _ in request.scope["headers"] if name in headers)
        repeated = sorted(name.decode("latin-1") for name, n in sent.items() if n > 1)
        if repeated:
            names = ", ".join(repr(n) for n in repeated)
            raise ApiError(422, f"headers given more than once, which take one value: {names}")
    await refuse_repeated_keys(request)
    if not request.scope.get("query_string"):
        return
    declared, single = _declared(route)
    unknown = set(request.query_params) - declared
    if unknown:
        names = ", ".join(repr(n[:40]) for n in sorted(unknown)[:5])
        raise ApiError(422, f"unknown query parameters: {names}")
    given = Counter(key for key, _ in request.query_params.multi_items())
    repeated = sorted(name for name in single if given[name] > 1)
    if repeated:
        names = ", ".join(repr(n) for n in repeated[:5])
        raise ApiError(422, f"query parameters given more than once, which take one value: {names}")
