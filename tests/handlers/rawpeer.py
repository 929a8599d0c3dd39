"""A raw TCP peer for misbehaving-HTTP tests: reads one request, then runs the test's behaviour on
the connection (answer partly, trickle, stream forever, hang). Counts connections and bytes sent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Self

Behaviour = Callable[["RawPeer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawPeer:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self.requests: list[bytes] = []
        self.sent = 0
        self.closed = 0  # connections that ended (the client went away or the behaviour finished)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Self:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent += len(data)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            self.requests.append(head + await reader.readexactly(length))
            await self.behaviour(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.closed += 1
            writer.close()
            self._tasks.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        if self.server is not None:
            await self.server.wait_closed()
