"""A small TCP proxy for fault tests: sits between a client and a real Redis server and can reset
every connection, refuse new ones, or let a command run on the server and then lose its reply (or
hold it back until released).

It runs its own event loop in a thread, so a test's loop (and any client in it) sees it as a remote
peer. Every method is safe to call from the test's thread or loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any

from conveyor.testing import free_port

_CHUNK = 65536


class _Pipe:
    """One client connection and its server connection."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.cut_next_reply = False
        self.hold_next_reply = False

    def reset(self) -> None:
        for writer in (self.client, self.server):
            sock = writer.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: close() sends RST, as a crashed peer or a middlebox would
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the target server; see the module docstring."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.pipes: set[_Pipe] = set()
        self.cuts = 0  # replies lost so far
        self.accepted = 0
        self._refusing = False
        self._cut_pattern: bytes | None = None
        self._cut_nth: set[int] = set()  # which commands containing the pattern lose their reply
        self._seen = 0
        self._hold_pattern: bytes | None = None
        self._released = threading.Event()
        self.held = 0  # replies held back so far
        self._serving: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        return self

    def close(self) -> None:
        self._released.set()  # a held reply ends with its connection

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for pipe in list(self.pipes):
                pipe.reset()
            # Let every connection's task see its reset and end, so none is destroyed pending.
            if self._serving:
                await asyncio.wait(self._serving, timeout=5)

        self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ faults

    def reset_all(self) -> int:
        """RST every open connection (both sides); returns how many were cut."""

        async def reset() -> int:
            pipes = list(self.pipes)
            for pipe in pipes:
                pipe.reset()
            self.pipes.clear()
            return len(pipes)

        return self._call(reset())

    def refuse(self, on: bool = True) -> None:
        """While on, new connections are reset at once and open ones are reset: Redis looks down."""
        self._refusing = on
        if on:
            self.reset_all()

    def lose_reply(self, pattern: bytes, nth: tuple[int, ...] = (1,)) -> None:
        """Commands containing `pattern` are counted from 1; those numbered in `nth` reach the server
        and run, then their reply is dropped and the connection reset (a reply lost on the way back)."""

        async def arm() -> None:
            self._cut_pattern, self._cut_nth, self._seen = pattern, set(nth), 0

        self._call(arm())

    def hold_reply(self, pattern: bytes) -> None:
        """The next command containing `pattern` reaches the server and runs; its reply is held back
        (the connection stays open) until `release()`: a reply that is merely late."""

        async def arm() -> None:
            self._hold_pattern = pattern
            self._released.clear()

        self._call(arm())

    def release(self) -> None:
        """Deliver the replies `hold_reply` held back."""
        self._released.set()

    # ------------------------------------------------------------------ plumbing

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
        if self._refusing:
            _Pipe(writer, writer).reset()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _Pipe(writer, writer).reset()
            return
        pipe = _Pipe(writer, up_writer)
        self.pipes.add(pipe)
        try:
            await asyncio.gather(self._upstream(pipe, reader), self._downstream(pipe, up_reader))
        finally:
            self.pipes.discard(pipe)
            for w in (writer, up_writer):
                w.transport.abort()

    async def _upstream(self, pipe: _Pipe, reader: asyncio.StreamReader) -> None:
        try:
            while chunk := await reader.read(_CHUNK):
                if self._cut_pattern is not None and self._cut_pattern in chunk:
                    self._seen += 1
                    if self._seen in self._cut_nth:
                        pipe.cut_next_reply = True
                if self._hold_pattern is not None and self._hold_pattern in chunk:
                    self._hold_pattern = None
                    pipe.hold_next_reply = True
                pipe.server.write(chunk)
                await pipe.server.drain()
        except (OSError, RuntimeError):
            pass
        pipe.reset()

    async def _downstream(self, pipe: _Pipe, reader: asyncio.StreamReader) -> None:
        try:
            while chunk := await reader.read(_CHUNK):
                if pipe.cut_next_reply:
                    self.cuts += 1
                    break
                if pipe.hold_next_reply:
                    pipe.hold_next_reply = False
                    self.held += 1
                    await asyncio.get_running_loop().run_in_executor(None, self._released.wait)
                pipe.client.write(chunk)
                await pipe.client.drain()
        except (OSError, RuntimeError):
            pass
        pipe.reset()
