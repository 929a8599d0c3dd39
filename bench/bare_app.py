"""The framework's floor for the API benchmark: FastAPI on uvicorn, one Redis SET per request."""

from __future__ import annotations

import os

from fastapi import FastAPI, Request, Response

from conveyor.redis.connection import connect

app = FastAPI()
client = connect(os.environ["REDIS_URL"])


@app.post("/api/queues/{queue}/jobs", status_code=202)
async def enqueue(queue: str, request: Request) -> Response:
    body = await request.body()
    await client.set(f"bare:{queue}", body)
    return Response(b'{"ok":true}', status_code=202, media_type="application/json")


@app.get("/api/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
