"""The AI handler against providers that misbehave on the wire (a raw TCP peer): headers sent a
byte at a time, keep-alives and no answer, a body that never ends, an endless stream, a stream cut
short, malformed chunks. Each costs that provider one bounded wait (its `timeout_s`) or one bounded
read, and the next provider in the chain answers; before, most held the job until its own timeout."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from conveyor import Conveyor, JobState
from conveyor.handlers import install
from conveyor.handlers.ai import Provider
from conveyor.handlers.ai.streaming import MAX_ANSWER_CHARS
from conveyor.handlers.ai.wire import MAX_BODY_BYTES, MAX_EVENT_LINES, AnswerTooLarge, CappedTransport
from conveyor.settings import Settings
from tests.conftest import running, wait_for
from tests.handlers.conftest import provider
from tests.handlers.rawpeer import RawPeer
from tests.handlers.servers import ChatServer

SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
PACE_S = 0.05  # how often a trickling peer sends its next byte or keep-alive


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(content: Any = None, finish: str | None = None, **fields: Any) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}], **fields}
    return chunked(b"data: " + json.dumps(body).encode() + b"\n\n")


async def headers_byte_by_byte(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    for b in SSE_HEAD:
        await peer.write(w, bytes([b]))
        await asyncio.sleep(PACE_S)


async def keepalives_forever(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, SSE_HEAD)
    while True:
        await peer.write(w, chunked(b": keep-alive\n\n") + event(finish=None, choices=[]))
        await asyncio.sleep(PACE_S)


async def body_never_ends(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
    while True:
        await peer.write(w, b" ")
        await asyncio.sleep(PACE_S)


async def endless_answer(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, SSE_HEAD)
    while True:
        await peer.write(w, event("x" * 4000))


async def cut_short(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, SSE_HEAD + event("half an ans") + b"0\r\n\r\n")  # no finish, no [DONE]


async def reset_mid_stream(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, SSE_HEAD + event("half an ans"))
    w.transport.abort()


async def not_json(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, SSE_HEAD + event("fine") + chunked(b"data: {not json\n\n"))


async def error_event(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, SSE_HEAD + chunked(b'data: {"error": {"message": "model overloaded"}}\n\n'))


async def wrong_shapes(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, SSE_HEAD + event(content=5) + event("x", finish="stop"))


async def choices_not_a_list(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, SSE_HEAD + event(choices="abc") + event("x", finish="stop"))


CASES = [
    (headers_byte_by_byte, True, "timeout", "no answer in 1.0s"),
    (headers_byte_by_byte, False, "timeout", "no answer in 1.0s"),
    (keepalives_forever, True, "timeout", "no answer in 1.0s"),
    (body_never_ends, False, "timeout", "no answer in 1.0s"),
    (endless_answer, True, "error", f"the answer passed {MAX_ANSWER_CHARS} characters"),
    (cut_short, True, "error", "the stream ended without finishing the answer (after 11 characters)"),
    (reset_mid_stream, True, "error", "connection"),
    (not_json, True, "error", "broken answer"),
    (error_event, True, "error", "model overloaded"),
    (wrong_shapes, True, "error", "malformed chunk: expected text, got int"),
    (choices_not_a_list, True, "error", "malformed chunk"),
]


def _name(value: Any) -> str | None:
    return getattr(value, "__name__", None)


@pytest.mark.parametrize(("behaviour", "stream", "outcome", "detail"), CASES, ids=_name)
async def test_a_misbehaving_provider_costs_one_bounded_wait_then_the_next_answers(
    app: Conveyor, chat: ChatServer, behaviour: Any, stream: bool, outcome: str, detail: str
) -> None:
    peer = await RawPeer(behaviour).start()
    try:
        odd = Provider("odd", f"{peer.url}/v1", "m", "k", 1.0, stream=stream)
        handlers = install(app, ai=True, settings=Settings(), ai_providers=[odd, provider(chat, "ok")])
        assert handlers.ai is not None
        job = await handlers.ai.generate.enqueue({"prompt": "hello"}, attempts=1)
        async with running(app.worker("ai", lease_ms=5000)):
            result = await job.result(timeout=60)
        assert result.provider == "ok" and result.text == "echo: hello"
        assert [(a.provider, a.outcome) for a in result.attempts] == [("odd", outcome), ("ok", "ok")]
        assert detail in result.attempts[0].detail
        assert peer.connections == 1
        await wait_for(lambda: peer.closed == 1, timeout=30, what="the odd provider's connection closed")
        assert peer.sent < 4 * MAX_ANSWER_CHARS, f"{peer.sent} bytes read from one provider"
    finally:
        await peer.close()


async def never_answers(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.read()  # until the client closes the connection


async def test_cancelling_a_job_whose_provider_never_answers_ends_it_and_the_call(app: Conveyor) -> None:
    peer = await RawPeer(never_answers).start()
    try:
        mute = Provider("mute", f"{peer.url}/v1", "m", "k", 3600.0)
        handlers = install(app, ai=True, settings=Settings(), ai_providers=[mute])
        assert handlers.ai is not None
        job = await handlers.ai.generate.enqueue({"prompt": "hello"})
        queue = app.queue("ai")
        async with running(app.worker("ai", lease_ms=1000)):
            await wait_for(lambda: len(peer.requests) == 1, timeout=30, what="the request reached the provider")
            await job.cancel()
            await wait_for(lambda: _state_is(queue, job.id, JobState.CANCELLED), timeout=30, what="job cancelled")
            await wait_for(lambda: peer.closed == 1, timeout=30, what="the call to the provider closed")
        assert peer.connections == 1
    finally:
        await peer.close()


async def _state_is(queue: Any, job_id: str, state: JobState) -> bool:
    return await queue.get_state(job_id) == state


BODY_STEP = 1024 * 1024


async def _hold(r: asyncio.StreamReader) -> None:
    await r.read()  # until the client closes the connection


def _sends_body(status: bytes, headers: bytes, body: Any) -> Any:
    """A peer that answers `status` with `headers`, then the chunks of `body` as fast as it can, then
    holds the connection open."""

    async def behaviour(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        media = b"" if b"content-type" in headers.lower() else b"Content-Type: application/json\r\n"
        await peer.write(w, b"HTTP/1.1 " + status + b"\r\n" + media + headers + b"\r\n")
        for chunk in body():
            await peer.write(w, chunk)
        await _hold(r)

    return behaviour


def _endless_answer() -> Any:
    yield b'{"id": "c", "object": "chat.completion", "model": "m", "choices": [{"message": {"content": "'
    for _ in range(3 * MAX_BODY_BYTES // BODY_STEP):
        yield b"x" * BODY_STEP


def _lines() -> Any:
    for _ in range(3 * MAX_BODY_BYTES // BODY_STEP):
        yield b"x" * (BODY_STEP - 1) + b"\n"


def _gzip_bomb() -> Any:
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    yield packer.compress(b'{"choices": [{"message": {"content": "')
    for _ in range(3 * MAX_BODY_BYTES // BODY_STEP):
        yield packer.compress(b"x" * BODY_STEP)


WHOLE_BODIES = {
    "endless-answer": _sends_body(b"200 OK", b"", _endless_answer),
    "endless-error": _sends_body(b"500 Internal Server Error", b"", _endless_answer),
    "announced": _sends_body(b"200 OK", b"Content-Length: 1000000000000\r\n", _endless_answer),
    "gzip-bomb": _sends_body(b"200 OK", b"Content-Encoding: gzip\r\n", _gzip_bomb),
    # a whole answer that says it is an event stream is still read whole by the SDK: the whole limit
    "claims-a-stream": _sends_body(b"200 OK", b"Content-Type: text/event-stream\r\n", _lines),
}


@pytest.mark.parametrize("case", list(WHOLE_BODIES))
async def test_a_whole_answer_is_bounded_while_it_is_read(app: Conveyor, chat: ChatServer, case: str) -> None:
    """A provider asked for a whole answer (stream: false) that sends a body over MAX_BODY_BYTES (an
    answer, an error, a gzip bomb; announced or not) costs one bounded read: that provider failed and
    the next answers. Before, the SDK read the body until the provider's timeout, all of it in memory."""
    peer = await RawPeer(WHOLE_BODIES[case]).start()
    try:
        huge = Provider("huge", f"{peer.url}/v1", "m", "k", 60.0, stream=False)
        handlers = install(app, ai=True, settings=Settings(), ai_providers=[huge, provider(chat, "ok")])
        assert handlers.ai is not None
        job = await handlers.ai.generate.enqueue({"prompt": "hello"}, attempts=1)
        async with running(app.worker("ai", lease_ms=5000)):
            result = await job.result(timeout=90)
        assert result.provider == "ok" and result.text == "echo: hello"
        assert [(a.provider, a.outcome) for a in result.attempts] == [("huge", "error"), ("ok", "ok")]
        assert f"the answer body passed {MAX_BODY_BYTES} bytes" in result.attempts[0].detail
        await wait_for(lambda: peer.closed == 1, timeout=30, what="the huge provider's connection closed")
        assert peer.sent < 2 * MAX_BODY_BYTES, f"{peer.sent} bytes sent by one provider"
    finally:
        await peer.close()


async def line_never_ends(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, SSE_HEAD + chunked(b'data: {"choices": [{"delta": {"content": "'))
    for _ in range(3 * MAX_BODY_BYTES // BODY_STEP):
        await peer.write(w, chunked(b"x" * BODY_STEP))
    await _hold(r)


async def test_a_stream_line_that_never_ends_is_bounded_while_it_is_read(app: Conveyor, chat: ChatServer) -> None:
    """The SDK holds an event's line until it ends: a provider sending one endless line fast costs one
    bounded read (no line over MAX_BODY_BYTES); before, the line grew in memory until timeout_s."""
    peer = await RawPeer(line_never_ends).start()
    try:
        odd = Provider("odd", f"{peer.url}/v1", "m", "k", 60.0)
        handlers = install(app, ai=True, settings=Settings(), ai_providers=[odd, provider(chat, "ok")])
        assert handlers.ai is not None
        job = await handlers.ai.generate.enqueue({"prompt": "hello"}, attempts=1)
        async with running(app.worker("ai", lease_ms=5000)):
            result = await job.result(timeout=90)
        assert [(a.provider, a.outcome) for a in result.attempts] == [("odd", "error"), ("ok", "ok")]
        assert f"a line of the event stream passed {MAX_BODY_BYTES} bytes" in result.attempts[0].detail
        await wait_for(lambda: peer.closed == 1, timeout=30, what="the odd provider's connection closed")
        assert peer.sent < 2 * MAX_BODY_BYTES, f"{peer.sent} bytes sent by one provider"
    finally:
        await peer.close()


async def empty_events_forever(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, SSE_HEAD)
    while True:
        await peer.write(w, event(None, x_pad="y" * 60_000))


@pytest.mark.parametrize("encoding", [b"", b"Content-Encoding: gzip\r\n"], ids=["plain", "gzip"])
async def test_an_event_stream_is_bounded_in_all(encoding: bytes) -> None:
    """Events that move the answer on but carry no text (or a gzip bomb of them) end at the stream
    limit; before, only the job's timeout ended them."""

    async def plain(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await empty_events_forever(peer, r, w)

    async def bomb(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        import zlib

        head = SSE_HEAD.replace(b"\r\n\r\n", b"\r\n" + encoding + b"\r\n", 1)
        packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        await peer.write(w, head)
        one = b'data: {"choices": [{"index": 0, "delta": {}}], "x": "' + b"y" * 1_000_000 + b'"}\n\n'
        while True:
            await peer.write(w, chunked(packer.compress(one) + packer.flush(zlib.Z_SYNC_FLUSH)))

    limit = 4 * 1024 * 1024
    peer = await RawPeer(bomb if encoding else plain).start()
    try:
        read = 0
        async with (
            httpx.AsyncClient(transport=CappedTransport(stream_limit=limit)) as client,
            client.stream("POST", f"{peer.url}/v1/chat/completions", json={"stream": True}) as response,
        ):
            with pytest.raises(AnswerTooLarge, match=f"the answer body passed {limit} bytes"):
                async for data in response.aiter_bytes():
                    read += len(data)
        assert read <= limit
        await wait_for(lambda: peer.closed == 1, timeout=30, what="the connection closed")
        assert peer.sent < 4 * limit
    finally:
        await peer.close()


def _answers(body: bytes) -> Any:
    async def behaviour(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        await peer.write(w, head + body)
        await _hold(r)

    return behaviour


async def deep_chunk(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, SSE_HEAD + chunked(b"data: " + b"[" * 100_000 + b"\n\n"))
    await _hold(r)


def _whole(content: str) -> bytes:
    return json.dumps({"choices": [{"message": {"content": content}, "finish_reason": "stop"}], "model": "m"}).encode()


DEEP = {
    "body": (_answers(b'{"choices": ' + b"[" * 100_000), False, "error", "broken answer: maximum recursion depth"),
    "chunk": (deep_chunk, True, "error", "broken answer: maximum recursion depth"),
    "output": (_answers(_whole("[" * 65 + "]" * 65)), False, "invalid_output", "not JSON: nested over 64 levels"),
    "output-unparsable": (
        _answers(_whole("[" * 100_000)), False, "invalid_output", "not JSON: nested over 64 levels"
    ),
}


@pytest.mark.parametrize("case", list(DEEP))
async def test_json_nested_too_deep_is_that_providers_failure(app: Conveyor, chat: ChatServer, case: str) -> None:
    """A body, chunk or structured output nested too deep costs that provider its attempt and the next
    answers; before, the parser's RecursionError left the chain (no other provider was tried), and an
    output nested 254 levels could be validated but not stored as the job's result."""
    behaviour, stream, outcome, detail = DEEP[case]
    peer = await RawPeer(behaviour).start()
    try:
        odd = Provider("odd", f"{peer.url}/v1", "m", "k", 30.0, stream=stream)
        handlers = install(app, ai=True, settings=Settings(), ai_providers=[odd, provider(chat, "ok")])
        assert handlers.ai is not None
        chat.replies["output"] = [[1]]
        job = await handlers.ai.generate.enqueue({"prompt": "hello", "json_schema": {"type": "array"}}, attempts=1)
        async with running(app.worker("ai", lease_ms=5000)):
            result = await job.result(timeout=60)
        assert result.provider == "ok" and result.data == [[1]]
        assert [(a.provider, a.outcome) for a in result.attempts] == [("odd", outcome), ("ok", "ok")]
        assert detail in result.attempts[0].detail
    finally:
        await peer.close()


LINE_STEP = 64 * 1024


async def event_never_ends(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    line = b"data: " + b"x" * (LINE_STEP - 7) + b"\n"
    await peer.write(w, SSE_HEAD)
    for _ in range(3 * MAX_BODY_BYTES // LINE_STEP):
        await peer.write(w, chunked(line * 16))
    await _hold(r)


async def event_of_endless_short_lines(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, SSE_HEAD)
    for _ in range(3 * MAX_BODY_BYTES // LINE_STEP):
        await peer.write(w, chunked(b"data: a\r\n" * (LINE_STEP // 9)))
    await _hold(r)


@pytest.mark.parametrize(("behaviour", "detail"), [
    (event_never_ends, f"an event of the event stream passed {MAX_BODY_BYTES} bytes"),
    (event_of_endless_short_lines, f"an event of the event stream passed {MAX_EVENT_LINES} lines"),
], ids=_name)
async def test_an_event_that_never_ends_is_bounded_while_it_is_read(
    app: Conveyor, chat: ChatServer, behaviour: Any, detail: str
) -> None:
    """The SDK holds an event until the blank line that ends it, every data line of it as a string of
    its own: a provider sending data lines with no blank line costs one bounded read (no event over
    MAX_BODY_BYTES or MAX_EVENT_LINES lines). Before, only each line was bounded, so such an event
    grew in memory to the stream's limit (256 MiB on the wire; several times that held as millions of
    short strings)."""
    peer = await RawPeer(behaviour).start()
    try:
        odd = Provider("odd", f"{peer.url}/v1", "m", "k", 60.0)
        handlers = install(app, ai=True, settings=Settings(), ai_providers=[odd, provider(chat, "ok")])
        assert handlers.ai is not None
        job = await handlers.ai.generate.enqueue({"prompt": "hello"}, attempts=1)
        async with running(app.worker("ai", lease_ms=5000)):
            result = await job.result(timeout=120)
        assert [(a.provider, a.outcome) for a in result.attempts] == [("odd", "error"), ("ok", "ok")]
        assert detail in result.attempts[0].detail
        await wait_for(lambda: peer.closed == 1, timeout=30, what="the odd provider's connection closed")
        assert peer.sent < 2 * MAX_BODY_BYTES, f"{peer.sent} bytes sent by one provider"
    finally:
        await peer.close()


async def cut_after_a_long_partial(peer: RawPeer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await peer.write(w, SSE_HEAD + event("x" * 100) + event("the tail of it"))
    await asyncio.sleep(0.01)
    w.transport.abort()


async def test_a_failed_providers_partial_answer_is_kept_whole_before_the_marker(
    app: Conveyor, chat: ChatServer
) -> None:
    """The output keeps a failed provider's partial answer, then the marker line, then the next
    provider's answer. Before, text the batcher still held when the stream broke (under 64
    characters and 0.1 s) was dropped, so the partial answer lost its end."""
    peer = await RawPeer(cut_after_a_long_partial).start()
    try:
        odd = Provider("odd", f"{peer.url}/v1", "m", "k", 30.0)
        handlers = install(app, ai=True, settings=Settings(), ai_providers=[odd, provider(chat, "ok")])
        assert handlers.ai is not None
        job = await handlers.ai.generate.enqueue({"prompt": "hello"}, attempts=1)
        async with running(app.worker("ai", lease_ms=5000)):
            result = await job.result(timeout=60)
        assert [(a.provider, a.outcome) for a in result.attempts] == [("odd", "error"), ("ok", "ok")]
        out = await app.queue("ai").get_output(job.id)
        assert out is not None
        assert out.text == "x" * 100 + "the tail of it" + "\n\n[odd: error; trying ok]\n\n" + "echo: hello"
    finally:
        await peer.close()
