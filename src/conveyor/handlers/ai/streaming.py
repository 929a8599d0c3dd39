"""One chat completion, streamed from the provider (OpenAI-compatible `stream: true`) into the job's
output as it arrives, or asked for whole when the provider does not stream.

Tokens are published in batches (at least `FLUSH_CHARS` characters or `FLUSH_S` seconds apart, and
at the end) so a fast model does not cost one Redis round trip per token; text waiting in the batch
is published after `FLUSH_S` even while the provider pauses. The usage comes from the
last chunk (`stream_options.include_usage`); a provider that sends none reports no usage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from openai import AsyncOpenAI

from conveyor.worker.context import JobContext

FLUSH_CHARS = 64
FLUSH_S = 0.1
# ctx.state key: characters this run has published to the job's output so far.
STREAMED = "ai.streamed"


@dataclass(slots=True)
class Completion:
    """What the generator needs of an answer, streamed or not."""

    text: str
    model: str | None
    finish_reason: str | None
    usage: Any = None
    streamed: int = field(default=0)  # characters published to the job's output


class _Sink:
    """Batches text into `ctx.stream` calls."""

    def __init__(self, ctx: JobContext | None) -> None:
        self.ctx = ctx
        self.pending: list[str] = []
        self.size = 0
        self.sent = 0
        self.last = time.monotonic()

    async def add(self, text: str) -> None:
        if self.ctx is None or not text:
            return
        self.pending.append(text)
        self.size += len(text)
        if self.size >= FLUSH_CHARS or time.monotonic() - self.last >= FLUSH_S:
            await self.flush()

    def due_in(self) -> float | None:
        """Seconds until the waiting text is due (None: nothing waits)."""
        return max(0.0, self.last + FLUSH_S - time.monotonic()) if self.pending else None

    async def flush(self) -> None:
        if self.ctx is None or not self.pending:
            return
        chunk = "".join(self.pending)
        self.pending.clear()
        self.size = 0
        self.last = time.monotonic()
        await self.ctx.stream(chunk)
        self.sent += len(chunk)
        self.ctx.state[STREAMED] = self.ctx.state.get(STREAMED, 0) + len(chunk)


async def complete(client: AsyncOpenAI, kwargs: dict[str, Any], ctx: JobContext | None, *, stream: bool) -> Completion:
    """Run one completion; with `stream` (and a job to publish to) the answer is streamed."""
    if not stream or ctx is None:
        response = await client.chat.completions.create(**kwargs)
        choice = response.choices[0] if response.choices else None
        return Completion(
            text=(choice.message.content or "") if choice is not None else "",
            model=response.model,
            finish_reason=choice.finish_reason if choice is not None else None,
            usage=response.usage,
        )
    sink = _Sink(ctx)
    parts: list[str] = []
    model: str | None = None
    finish: str | None = None
    usage: Any = None
    chunks = await client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    try:
        async for chunk in _flushing(chunks, sink):
            model = chunk.model or model
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices[:1]:
                if choice.finish_reason:
                    finish = choice.finish_reason
                piece = choice.delta.content if choice.delta is not None else None
                if piece:
                    parts.append(piece)
                    await sink.add(piece)
        await sink.flush()
    finally:
        await chunks.close()
    return Completion(text="".join(parts), model=model, finish_reason=finish, usage=usage, streamed=sink.sent)


async def _flushing(chunks: AsyncIterator[Any], sink: _Sink) -> AsyncIterator[Any]:
    """The chunks, publishing the sink's waiting text when the next chunk is late."""
    iterator = aiter(chunks)
    while True:
        nxt: asyncio.Future[Any] = asyncio.ensure_future(anext(iterator))
        try:
            while not nxt.done():
                done, _ = await asyncio.wait({nxt}, timeout=sink.due_in())
                if not done:
                    await sink.flush()
        except BaseException:
            nxt.cancel()
            raise
        try:
            yield nxt.result()
        except StopAsyncIteration:
            return
