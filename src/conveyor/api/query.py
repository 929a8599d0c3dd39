"""Requests the OpenAPI document does not describe are refused instead of half-served.

- Unknown query parameters are a 422 instead of silently ignored: a typo such as `?timout=60` would
  otherwise wait the default time.
- Job ids may contain '/', so `DELETE /api/jobs/q/42/wait` also fits `DELETE /api/jobs/{q}/{id}`
  (a job "42/wait"). The resource at such a path is the most specific template that fits it
  (`/api/jobs/{q}/{id}/wait`); a method that resource does not serve is a 405 with its `Allow`.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from conveyor.api.errors import ApiError, allowed_methods

_KNOWN: dict[int, frozenset[str]] = {}


def _declared(route: APIRoute) -> frozenset[str]:
    known = _KNOWN.get(id(route))
    if known is None:
        known = frozenset(_query_names(route.dependant))
        _KNOWN[id(route)] = known
    return known


def _query_names(dependant: Any) -> set[str]:
    """Query parameter names of a route's dependant and of every dependency under it."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def described_requests_only(request: Request) -> None:
    """An app-wide dependency: the two checks of the module docstring."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    if ":path}" in route.path and request.method not in allowed_methods(request):
        raise HTTPException(405)
    if not request.scope.get("query_string"):
        return
    unknown = set(request.query_params) - _declared(route)
    if unknown:
        names = ", ".join(repr(n[:40]) for n in sorted(unknown)[:5])
        raise ApiError(422, f"unknown query parameters: {names}")
