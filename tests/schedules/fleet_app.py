"""The app three scheduler processes run in test_fleet (queue name from the environment)."""

from __future__ import annotations

import os

from conveyor import Conveyor

app = Conveyor(prefix=os.environ.get("FLEET_PREFIX", "cv"))


@app.every(seconds=0.1, id="fleet", queue=os.environ.get("FLEET_QUEUE", "fleet"))
async def fleet_tick(ctx: object) -> None:
    return None
