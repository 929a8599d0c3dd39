"""A job's choice of providers is bounded: a list naming a provider again does not buy more calls to
it (one job, one call per configured provider at most), and an overlong list is refused as invalid.
A job's JSON Schema is bounded too: its patterns match in linear time and its `$ref`s never fetch."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conveyor import Conveyor, Retry, Unrecoverable
from conveyor.handlers.ai import GenerateRequest, build_generator
from conveyor.settings import Settings
from tests.handlers.conftest import provider
from tests.handlers.servers import ChatServer


async def test_repeating_a_provider_name_does_not_repeat_its_call(app: Conveyor, chat: ChatServer) -> None:
    gen = build_generator(app, Settings(ai_breaker_failures=1000), [provider(chat, "garbage")])
    schema = {"type": "object", "required": ["answer"]}
    request = GenerateRequest(prompt="hi", json_schema=schema, providers=["garbage"] * 20, dedupe=False)
    with pytest.raises(Retry):
        await gen.run(request)
    assert chat.count("garbage") == 1


def test_an_overlong_provider_list_is_invalid() -> None:
    with pytest.raises(ValidationError):
        GenerateRequest(prompt="hi", providers=[f"p{i}" for i in range(1000)])


# Nested quantifiers: a backtracking engine takes ~2^64 steps to refuse this answer.
CATASTROPHIC = {"type": "object", "properties": {"w": {"type": "string", "pattern": "^(a+)+$"}}, "required": ["w"]}


async def test_a_catastrophic_pattern_is_matched_in_linear_time(app: Conveyor, chat: ChatServer) -> None:
    gen = build_generator(app, Settings(ai_breaker_failures=1000), [provider(chat, "ok")])
    chat.replies["word"] = {"w": "a" * 64 + "!"}
    request = GenerateRequest(prompt="hi", json_schema=CATASTROPHIC, schema_name="word", dedupe=False)
    with pytest.raises(Retry, match="invalid_output"):
        await gen.run(request)  # before: the worker's loop spun in the regex engine, here until the timeout
    chat.replies["word"] = {"w": "aaaa"}
    assert (await gen.run(request)).data == {"w": "aaaa"}
    properties = {"type": "object", "patternProperties": {"^(a+)+$": {"type": "integer"}},
                  "additionalProperties": False}
    chat.replies["keys"] = {"a" * 64 + "!": 1}
    with pytest.raises(Retry, match="invalid_output"):
        await gen.run(GenerateRequest(prompt="hi", json_schema=properties, schema_name="keys", dedupe=False))


async def test_a_pattern_only_a_backtracking_engine_runs_fails_the_job_before_any_call(
    app: Conveyor, chat: ChatServer
) -> None:
    gen = build_generator(app, Settings(), [provider(chat, "ok")])
    schema = {"type": "string", "pattern": "^(?=.*x)(\\w)\\1$"}  # lookahead and a backreference
    with pytest.raises(Unrecoverable, match="not a valid JSON Schema"):
        await gen.run(GenerateRequest(prompt="hi", json_schema=schema, dedupe=False))
    assert chat.calls == []


async def test_a_remote_ref_is_never_fetched(app: Conveyor, chat: ChatServer) -> None:
    gen = build_generator(app, Settings(), [provider(chat, "ok")])
    schema = {"$ref": f"{chat.url}/schemas/person.json"}
    with pytest.raises(Unrecoverable, match="not a valid JSON Schema"):
        await gen.run(GenerateRequest(prompt="hi", json_schema=schema, dedupe=False))
    assert chat.hits == [] and chat.calls == []
    local = {"$defs": {"w": {"type": "string"}}, "type": "object", "properties": {"w": {"$ref": "#/$defs/w"}}}
    chat.replies["output"] = {"w": "x"}
    assert (await gen.run(GenerateRequest(prompt="hi", json_schema=local, dedupe=False))).data == {"w": "x"}
