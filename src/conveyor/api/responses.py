"""A JSON response encoded with orjson (the project's one codec), for hand-built bodies, and the
encoder every hand-built body and event frame of the API uses."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import Response


def json_bytes(value: Any) -> bytes:
    """`value` as compact JSON. orjson refuses integers past 64 bits, which a job record can hold (a
    count Lua wrote as `1e+23`, a field edited by hand: conveyor.job reads them as the numbers they
    are); those bodies are written by the standard library instead of failing the response."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: an integer past 64 bits, or a value no encoder takes
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json_bytes(content)
