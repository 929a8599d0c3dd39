"""A request's headers are bounded in size with either server protocol `conveyor api` uses
(httptools and h11): a client cannot make the server buffer megabytes of headers (within the header
deadline) and still be served."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.api.test_server_limits import served

HEADER_BYTES = 4 * 1024 * 1024


async def _send_huge_headers(port: int) -> bytes:
    """Sends a GET with HEADER_BYTES of headers; returns what the server answered (b"" if it closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: api.test\r\n")
        line = b"X-Filler: " + b"a" * 8000 + b"\r\n"
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < HEADER_BYTES:
                writer.write(line)
                await writer.drain()
                sent += len(line)
            writer.write(b"\r\n")
            await writer.drain()
        with contextlib.suppress(ConnectionError):
            return await asyncio.wait_for(reader.read(200), timeout=30)
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_megabytes_of_headers_are_not_served(redis_url: str, qname: str, http: str) -> None:
    async with served(redis_url, qname, http) as (api, port):
        answer = await _send_huge_headers(port)
        assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), answer[:100]
        # An ordinary request is still served.
        r = await api.http.get("/api/health")
        assert r.status_code == 200
