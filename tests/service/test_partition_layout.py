"""A rolling deploy of `conveyor worker` processes across a re-partition: an old process started
after the new ones leaves the queue's current layout as the new processes recorded it."""

from __future__ import annotations

from collections.abc import Callable

from conveyor import JobState
from conveyor.partitions import PartitionedQueue, open_queue
from conveyor.redis.connection import RedisClient
from tests.cli.run import as_json
from tests.conftest import wait_for
from tests.service.process import ServiceProcess


async def test_an_old_worker_process_started_during_a_rolling_deploy_keeps_the_new_layout_current(
    services: Callable[..., ServiceProcess], redis_url: str, prefix: str, plain_client: RedisClient
) -> None:
    """Workers of 2 partitions, then workers of 4 serving the 2 as previous, then one more process
    of the old release (2 partitions) starting: `conveyor enqueue` still adds to the 4-partition
    layout and the job runs. Before, the old process's start made 2 current again, so the CLI
    added to the old layout."""
    old = services(redis_url, prefix, TEST_FAST_PARTITIONS="2")
    await wait_for(old.healthy, timeout=60, what="the first old worker healthy")
    new = services(redis_url, prefix, TEST_FAST_PARTITIONS="4", TEST_FAST_PREVIOUS="2")
    await wait_for(new.healthy, timeout=60, what="the new worker healthy")
    late = services(redis_url, prefix, TEST_FAST_PARTITIONS="2")
    await wait_for(late.healthy, timeout=60, what="the late old worker healthy")
    opened = await open_queue("fast", redis=plain_client, prefix=prefix)
    assert isinstance(opened, PartitionedQueue)
    assert (opened.partition_count, opened.previous_counts) == (4, (2,)), late.output()
    assert any("re-partitioned since" in line for line in late.lines), late.output()
    added = as_json("enqueue", "fast", "track", "--data", "{}", "--prefix", prefix, redis_url=redis_url)
    home = await opened.locate(added["id"])
    assert home is not None and home in opened.parts, "enqueued to the superseded layout"

    async def finished() -> bool:
        return await opened.get_state(added["id"]) is JobState.COMPLETED

    await wait_for(finished, timeout=60, what="the job run by the new worker")
    await opened.obliterate(force=True)
