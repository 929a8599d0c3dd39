"""The Conveyor app the API tests serve (also imported by `conveyor api` in the subprocess test)."""

from __future__ import annotations

import asyncio
import os

from pydantic import BaseModel, Field

from conveyor import Conveyor, JobContext


class Echo(BaseModel):
    text: str = Field(max_length=1000)
    n: int = 1


class Steps(BaseModel):
    steps: int = Field(ge=1, le=20)
    pause_s: float = Field(0.0, ge=0, le=2)


def build_app(redis_url: str | None, queue: str, prefix: str = "cv") -> Conveyor:
    app = Conveyor(redis_url, prefix=prefix)

    @app.task(queue=queue)
    async def echo(ctx: JobContext, payload: Echo) -> dict[str, object]:
        return {"text": payload.text * payload.n}

    @app.task(queue=queue)
    async def stepper(ctx: JobContext, payload: Steps) -> int:
        for i in range(1, payload.steps + 1):
            await ctx.log(f"step {i}")
            await ctx.progress({"done": i, "total": payload.steps})
            if payload.pause_s:
                await asyncio.sleep(payload.pause_s)
        return payload.steps

    @app.task(queue=queue)
    async def boom(ctx: JobContext) -> None:
        raise ValueError("boom goes the handler")

    @app.task(queue=queue)
    async def flaky(ctx: JobContext) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "second time lucky"

    @app.task(queue=queue)
    async def sleepy(ctx: JobContext) -> None:
        await asyncio.sleep(60)

    @app.task(queue=queue)
    async def anything(ctx: JobContext, payload: object) -> object:
        return payload

    return app


app = build_app(
    os.environ.get("REDIS_URL"), os.environ.get("API_TEST_QUEUE", "api-sample"), os.environ.get("API_TEST_PREFIX", "cv")
)
