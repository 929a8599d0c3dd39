"""A handler's progress and log writes ride out a Redis fault (a reply lost on the way back, the
connection reset): they are sent again and the run goes on. Before, one lost reply raised
ConnectionFailedError in the handler, and a job with one attempt failed for a blip of the network."""

from __future__ import annotations

from typing import Any

from conveyor import JobContext, JobState, Queue, Worker
from tests.conftest import running
from tests.proxy import TcpProxy


async def test_progress_and_log_ride_out_lost_replies(direct: Queue, proxied: Queue, proxy: TcpProxy) -> None:
    async def handler(ctx: JobContext, data: Any) -> str:
        await ctx.progress("warm")  # the scripts are loaded: the next calls are single EVALSHAs
        await ctx.log("warm")
        proxy.lose_reply(b"MARKER", nth=(1, 3))  # progress's first send, log's first send
        await ctx.progress({"at": "MARKER-P"})
        await ctx.log("MARKER-L")
        return "done"

    async with running(Worker(proxied, {"j": handler}, concurrency=1)):
        job = await direct.add("j")  # one attempt: a fault raised in the handler would fail the job
        assert await job.result(timeout=60) == "done"
    rec = await job.record()
    assert rec.state is JobState.COMPLETED and rec.progress == {"at": "MARKER-P"}
    assert proxy.cuts == 2
    lines = await direct.client.lrange(direct.keys.log(job.id), 0, -1)
    assert lines[0] == "warm" and set(lines[1:]) == {"MARKER-L"}  # sent again: there, maybe twice


async def test_a_durable_step_whose_store_reply_is_lost_runs_once_and_the_job_goes_on(
    direct: Queue, proxied: Queue, proxy: TcpProxy
) -> None:
    charged: list[int] = []

    def charge() -> str:
        charged.append(1)
        return "MARKER-S"

    async def handler(ctx: JobContext, data: Any) -> str:
        await ctx.step("warm", lambda: "w")  # the step script is loaded: the next store is one EVALSHA
        proxy.lose_reply(b"MARKER", nth=(1,))
        return str(await ctx.step("charge", charge))

    async with running(Worker(proxied, {"j": handler}, concurrency=1)):
        job = await direct.add("j")
        assert await job.result(timeout=60) == "MARKER-S"
    assert charged == [1] and proxy.cuts == 1


async def test_a_streamed_chunk_whose_reply_is_lost_is_kept_once(
    direct: Queue, proxied: Queue, proxy: TcpProxy
) -> None:
    """ctx.stream numbers its calls; the script answers the same call sent again with its first reply
    and writes nothing, so the output holds each chunk once. Before, the handler got
    ConnectionFailedError (sending the chunk again could have repeated it)."""
    async def handler(ctx: JobContext, data: Any) -> list[bool]:
        kept = [await ctx.stream("warm|")]
        proxy.lose_reply(b"MARKER", nth=(1, 3))  # the first send of each chunk runs, its reply is lost
        kept.append(await ctx.stream("MARKER-1|"))
        kept.append(await ctx.stream("MARKER-2|"))
        kept.append(await ctx.stream("end"))
        return kept

    async with running(Worker(proxied, {"j": handler}, concurrency=1)):
        job = await direct.add("j")
        assert await job.result(timeout=60) == [True, True, True, True]
    assert proxy.cuts == 2
    out = await direct.get_output(job.id, 0)
    assert out is not None and out.text == "warm|MARKER-1|MARKER-2|end"
    chunks = [e.fields.get("chunk") for e in await direct.read_events("0-0") if e.type == "output"]
    assert chunks == ["warm|", "MARKER-1|", "MARKER-2|", "end"]  # one event each


async def test_reading_children_rides_out_a_lost_reply(direct: Queue, proxied: Queue, proxy: TcpProxy) -> None:
    """ctx.children() (and ctx.previous(), which a chain step's payload comes from before its handler
    runs) is a read: sent again across a fault. Before, one lost reply failed the attempt."""
    async def handler(ctx: JobContext, data: Any) -> int:
        proxy.lose_reply(b"HGETALL", nth=(1,))
        return len((await ctx.children()).results)

    async with running(Worker(proxied, {"j": handler}, concurrency=1)):
        job = await direct.add("j")
        assert await job.result(timeout=60) == 0
    assert proxy.cuts == 1
