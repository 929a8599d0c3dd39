"""A job's choice of providers is bounded: a list naming a provider again does not buy more calls to
it (one job, one call per configured provider at most), and an overlong list is refused as invalid."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conveyor import Conveyor, Retry
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
