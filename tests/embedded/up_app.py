"""The app `conveyor up` runs in the graceful-stop tests: a `hold` task that runs until the test sets
its release key, so the test decides when an active job may finish. Keys under CONVEYOR_PREFIX."""

from __future__ import annotations

import os
from typing import Any

from conveyor import Conveyor, JobContext

app = Conveyor(name="up-tests", prefix=os.environ.get("CONVEYOR_PREFIX", "cv"))


def release_key(prefix: str, job_id: str) -> str:
    return f"{prefix}:test:release:{job_id}"


@app.task(name="hold")
async def hold(ctx: JobContext, data: Any) -> str:
    while not await app.client.blpop([release_key(app.prefix, ctx.job_id)], timeout=1):
        pass  # blocks up to 1 s per call; the test pushes to the key to release the job
    return "released"
