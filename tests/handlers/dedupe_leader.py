"""A process that leads one shared AI call and is killed during it (the de-duplication crash test).

    python -m tests.handlers.dedupe_leader REDIS_URL PREFIX CHAT_BASE_URL
"""

from __future__ import annotations

import asyncio
import sys

from conveyor import Conveyor
from conveyor.handlers.ai import GenerateRequest, build_generator
from conveyor.handlers.ai.providers import Provider
from conveyor.settings import Settings


async def main(url: str, prefix: str, base_url: str) -> None:
    app = Conveyor(url, prefix=prefix)
    providers = [Provider("ok", base_url, "test-model", "test-key", 120)]
    gen = build_generator(app, Settings(ai_dedupe_lease_s=5.0), providers)
    await gen.run(GenerateRequest(prompt="shared"))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
