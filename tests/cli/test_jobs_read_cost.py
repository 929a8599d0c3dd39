"""`conveyor jobs` reads what it shows, within the API's listing bound, never whole records.

It read every listed job's whole record: a page of 24 jobs with 300 KiB payloads moved 7 MiB out of
Redis to print a table that shows no payload. Now the table reads none, and `--json` (which shows
them) reads at most LISTING_MAX_BYTES of records per page, its `next_cursor` continuing. Counted in
the bytes Redis sends, on a server of its own."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from conveyor import Queue
from conveyor.listing import LISTING_MAX_BYTES
from conveyor.redis.connection import connect
from conveyor.testing import RedisServer
from tests.cli.run import conveyor

JOBS = 24
PAYLOAD_CHARS = 300 * 1024  # 24 jobs: about 7 MiB of payloads, past the 4 MiB bound
SLACK = 256 * 1024  # summaries, the CLI's own look-ups


async def _sent_bytes(url: str) -> int:
    client = connect(url)
    try:
        stats: dict[str, Any] = await client.info("stats")
    finally:
        await client.aclose()
    return int(stats["total_net_output_bytes"])


async def _run(url: str, *args: str) -> tuple[str, str, int]:
    """stdout and stderr of one `conveyor` run and the bytes Redis sent meanwhile."""
    before = await _sent_bytes(url)
    done = await asyncio.to_thread(conveyor, *args, redis_url=url)
    sent = await _sent_bytes(url) - before
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr, sent


async def test_jobs_reads_only_what_it_shows_within_a_bound() -> None:
    prefix = f"cli{uuid.uuid4().hex[:10]}"
    with RedisServer() as server:
        client = connect(server.url)
        try:
            q = Queue("bulky", redis=client, prefix=prefix)
            ids = [(await q.add("echo", {"text": f"{i}:" + "x" * PAYLOAD_CHARS})).id for i in range(JOBS)]
            common = ("--limit", "1000", "--prefix", prefix)
            # The table shows no payload: none is read.
            out, _, sent = await _run(server.url, "jobs", "bulky", *common)
            assert all(i in out for i in ids) and "--cursor" not in out
            assert sent < SLACK, sent
            # --json: pages within the bound that together list every job once, each saying how to go on.
            seen: list[str] = []
            cursor: int | None = 0
            while cursor is not None:
                out, err, sent = await _run(server.url, "jobs", "bulky", *common, "--cursor", str(cursor), "--json")
                page = json.loads(out)
                assert 0 < len(page["jobs"]) < JOBS, len(page["jobs"])
                assert all(j["data"]["text"].endswith("x" * 100) for j in page["jobs"])
                assert sent <= LISTING_MAX_BYTES + SLACK, sent
                seen += [j["id"] for j in page["jobs"]]
                cursor = page["next_cursor"]
                if cursor is not None:
                    assert f"--cursor {cursor}" in err
            assert seen == ids
            assert JOBS * PAYLOAD_CHARS > LISTING_MAX_BYTES + SLACK  # the bound did cut pages
        finally:
            await client.aclose()
