"""The system under test for the streaming browser test: the local OpenAI-compatible server (holding
each stream after `HOLD` chunks until POST /release), the built-in AI handlers pointed at it, a real
worker and the API with the dashboard, in one process against the given Redis.

Prints one JSON line ({"port", "chat_url", "keys"}) once it listens, then serves until SIGTERM.
Usage: python stream_server.py REDIS_URL PREFIX
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests.* imports

from conveyor import Conveyor
from conveyor.api import create_app
from conveyor.handlers import install
from conveyor.handlers.ai.providers import Provider
from conveyor.settings import Settings
from tests.dashboard.server import make_keys, serve
from tests.handlers.servers import ChatServer

CARDS = {"cards": [{"front": f"What is fact {i}?", "back": f"Fact {i} explained"} for i in range(6)]}
HOLD = 12  # chunks of 8 characters: the first card is complete, the second is not


async def main(redis_url: str, prefix: str) -> None:
    chat = await ChatServer().start()
    chat.replies["flashcards"] = CARDS
    chat.hold_after = HOLD
    app = Conveyor(redis_url, prefix=prefix)
    provider = Provider("local", chat.base_url("ok"), "test-model", "test-key", 120.0)
    install(app, ai=True, settings=Settings(), ai_providers=[provider])
    keys = await make_keys(app)
    api = create_app(app, Settings.from_env({}, redis_url=redis_url, prefix=prefix, api_rate_limit=0))
    worker = app.worker("ai", lease_ms=5000, idle_block_s=1.0, shutdown_grace_s=1.0)
    await worker.start()
    try:
        await serve(api, {**keys, "__chat__": chat.url})  # the chat server's URL rides with the keys
    finally:
        await worker.close(1.0)
        await chat.close()
        await app.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
