"""One chat completion, streamed from the provider (OpenAI-compatible `stream: true`) into the job's
output as it arrives, or asked for whole when the provider does not stream (and then published to
the output in one piece when it arrives).

Tokens are published in batches (at least `FLUSH_CHARS` characters or `FLUSH_S` seconds apart, and
at the end) so a fast model does not cost one Redis round trip per token; text waiting in the batch
is published after `FLUSH_S` even while the provider pauses. The usage comes from the
last chunk (`stream_options.include_usage`); a provider that sends none reports no usage. A stream
that fails part-way brings no usage chunk: `Received` keeps what it brought for an estimate.

The provider's `timeout_s` bounds every wait, whatever the peer sends meanwhile: a whole answer must
arrive within it, a stream must start within it and bring a chunk at least that often (keep-alive
comments, empty chunks or a line that never ends are no progress). A streamed answer is at most
`MAX_ANSWER_CHARS` characters and must end with a finish reason; otherwise the provider failed
(`TimeoutError`, `BrokenAnswer`) and the chain moves on. What a failed provider streamed stays in
the output whole, the batch's waiting text included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI

from conveyor.errors import ConveyorError
from conveyor.worker.context import JobContext

FLUSH_CHARS = 64
FLUSH_S = 0.1
MAX_ANSWER_CHARS = 4 * 1024 * 1024
# ctx.state key: characters this run has published to the job's output so far.
STREAMED = "ai.streamed"


class BrokenAnswer(Exception):
    """The provider's stream was no valid answer: too long, or ended before it finished."""


@dataclass(slots=True)
class Completion:
    """What the generator needs of an answer, streamed or not."""

    text: str
    model: str | None
    finish_reason: str | None
    usage: Any = None
    streamed: int = field(default=0)  # characters published to the job's output


@dataclass(slots=True)
class Received:
    """What an answer brought while it was read, kept when the provider then fails: the characters
    of text received, and the usage if its chunk came (tokens billed for a partial answer)."""

    chars: int = 0
    usage: Any = None


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


async def complete(
    client: AsyncOpenAI,
    kwargs: dict[str, Any],
    ctx: JobContext | None,
    *,
    stream: bool,
    timeout_s: float,
    received: Received | None = None,
) -> Completion:
    """Run one completion; with `stream` (and a job to publish to) the answer is streamed. Raises
    TimeoutError when a wait passes `timeout_s` (see the module's docstring). `received` is kept up
    to date with what a stream brought, so a caller can charge a stream that fails part-way."""
    received = Received() if received is None else received
    if not stream or ctx is None:
        async with asyncio.timeout(timeout_s):
            response = await _whole(client, kwargs)
        with _malformed("answer"):
            choice = response.choices[0] if response.choices else None
            text = _text(choice.message.content) if choice is not None else ""
            if len(text) > MAX_ANSWER_CHARS:
                raise BrokenAnswer(f"the answer passed {MAX_ANSWER_CHARS} characters")
            completion = Completion(
                text=text,
                model=_text(response.model) or None,
                finish_reason=_text(choice.finish_reason) or None if choice is not None else None,
                usage=response.usage,
            )
        # Someone following the job's output sees the whole answer as one piece when it arrives.
        sink = _Sink(ctx)
        await sink.add(completion.text)
        await sink.flush()
        completion.streamed = sink.sent
        return completion
    sink = _Sink(ctx)
    parts: list[str] = []
    size = 0
    model: str | None = None
    finish: str | None = None
    usage: Any = None
    async with asyncio.timeout(timeout_s):
        chunks = await client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    try:
        async for chunk in _flushing(chunks, sink, timeout_s):
            with _malformed("chunk"):
                model = _text(chunk.model) or model
                if chunk.usage is not None:
                    usage = received.usage = chunk.usage
                choice = chunk.choices[0] if chunk.choices else None
                finish = (_text(choice.finish_reason) or finish) if choice is not None else finish
                piece = _text(choice.delta.content) if choice is not None and choice.delta is not None else ""
            if piece:
                size += len(piece)
                received.chars = size
                if size > MAX_ANSWER_CHARS:
                    raise BrokenAnswer(f"the answer passed {MAX_ANSWER_CHARS} characters")
                parts.append(piece)
                await sink.add(piece)
        await sink.flush()
    except ConveyorError:  # the job's own writes failed (lease lost, Redis unusable): nothing to keep
        raise
    except Exception:
        # The provider failed mid-answer: the output keeps its partial answer whole (the text still
        # waiting in the batch too), before the chain's marker line and the next provider's answer.
        with suppress(ConveyorError):
            await sink.flush()
        raise
    finally:
        await chunks.close()
    if finish is None:
        raise BrokenAnswer(f"the stream ended without finishing the answer (after {size} characters)")
    return Completion(text="".join(parts), model=model, finish_reason=finish, usage=usage, streamed=sink.sent)


async def _whole(client: AsyncOpenAI, kwargs: dict[str, Any]) -> Any:
    """A whole (not streamed) answer. A body the transport refused as too large comes out as the
    BrokenAnswer it is, whether the SDK wrapped it as a connection error or not."""
    try:
        return await client.chat.completions.create(**kwargs)
    except openai.APIConnectionError as exc:
        if isinstance(exc.__cause__, BrokenAnswer):
            raise exc.__cause__ from None
        raise


def _text(value: Any) -> str:
    """A text field of the answer ('' for none); anything but a string is a malformed answer."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


@contextmanager
def _malformed(what: str) -> Iterator[None]:
    """Reading an answer's fields: a shape that is not the API's is a broken answer."""
    try:
        yield
    except (AttributeError, TypeError, IndexError, KeyError) as exc:
        raise BrokenAnswer(f"malformed {what}: {exc}"[:300]) from None


def _progress(chunk: Any) -> bool:
    """Whether a chunk moves the answer on (a choice's delta or finish, or the usage)."""
    return bool(getattr(chunk, "choices", None)) or getattr(chunk, "usage", None) is not None


async def _flushing(chunks: AsyncIterator[Any], sink: _Sink, idle_s: float) -> AsyncIterator[Any]:
    """The chunks, publishing the sink's waiting text when the next chunk is late; TimeoutError when
    no chunk moves the answer on for `idle_s`."""
    iterator = aiter(chunks)
    deadline = time.monotonic() + idle_s
    while True:
        nxt: asyncio.Future[Any] = asyncio.ensure_future(anext(iterator))
        try:
            while not nxt.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no progress in the stream for {idle_s}s")
                due = sink.due_in()
                done, _ = await asyncio.wait({nxt}, timeout=left if due is None else min(due, left))
                if not done and sink.due_in() == 0:
                    await sink.flush()
        except BaseException:
            nxt.cancel()
            raise
        try:
            chunk = nxt.result()
        except StopAsyncIteration:
            return
        if _progress(chunk):
            deadline = time.monotonic() + idle_s
        yield chunk
