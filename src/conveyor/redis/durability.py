"""Durable acknowledgement: a write is acknowledged only once N replicas have it (WAIT) and/or the
server's AOF is fsynced (WAITAOF), checked on the connection that made the write (a pipeline; on a
Cluster, on the node that owns the queue's slot). See docs/reliability.md, "Durable acknowledgement".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import PipelineCommand, RedisCluster
from redis.exceptions import AskError, MovedError, NoScriptError

from conveyor.errors import ConfigurationError, DurabilityError
from conveyor.redis.faults import as_fault, is_fault

MAX_REPLICAS = 32
MAX_TIMEOUT_MS = 60_000
_REDIRECTS = 3


@dataclass(frozen=True, slots=True)
class Durability:
    """How durable an enqueue or an outcome must be before it is acknowledged.

    `replicas`: replicas that must have received the write (WAIT); `aof`: the primary's AOF must be
    fsynced (WAITAOF; needs appendonly yes, Redis/Valkey >= 7.2); `timeout_ms`: how long to wait
    before the call fails with DurabilityError (the write itself stays applied on the primary).
    """

    replicas: int = 0
    aof: bool = False
    timeout_ms: int = 1000

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or not (
            0 <= self.replicas <= MAX_REPLICAS
        ):
            raise ConfigurationError(f"durability replicas must be an integer in [0, {MAX_REPLICAS}]")
        if not isinstance(self.aof, bool):
            raise ConfigurationError("durability aof must be True or False")
        if isinstance(self.timeout_ms, bool) or not isinstance(self.timeout_ms, int) or not (
            1 <= self.timeout_ms <= MAX_TIMEOUT_MS
        ):
            raise ConfigurationError(f"durability timeout_ms must be an integer in [1, {MAX_TIMEOUT_MS}]")

    @property
    def enabled(self) -> bool:
        return self.replicas > 0 or self.aof

    def commands(self, touch_key: str) -> list[tuple[Any, ...]]:
        """What follows the write on its connection. The touch (a write that changes nothing) makes
        WAIT cover everything written before it on the server, also when the script itself had
        nothing new to write (a resent trip, an idempotent add of an existing job)."""
        out: list[tuple[Any, ...]] = [("HINCRBY", touch_key, "durable", 0)]
        if self.replicas:
            out.append(("WAIT", self.replicas, self.timeout_ms))
        if self.aof:
            out.append(("WAITAOF", 1, 0, self.timeout_ms))
        return out

    def check(self, replies: Sequence[Any], what: str) -> None:
        """Raise DurabilityError unless the WAIT/WAITAOF replies show the promise was kept (`replies`:
        the write's, the touch's, then those of `commands()`)."""
        i = 2
        if self.replicas:
            got = int(replies[i])
            i += 1
            if got < self.replicas:
                raise DurabilityError(
                    f"{what}: applied on the primary but acknowledged by {got} of {self.replicas} replica(s) "
                    f"within {self.timeout_ms} ms"
                )
        if self.aof:
            local = int(replies[i][0])
            if local < 1:
                raise DurabilityError(f"{what}: applied but the AOF was not fsynced within {self.timeout_ms} ms")


async def durable_eval(
    client: Any, sha: str, source: str, keys: Sequence[str], args: Sequence[Any], durability: Durability,
    what: str,
) -> Any:
    """EVALSHA (EVAL when the script is not cached) followed by the durability commands on the same
    connection; returns the script's reply once `durability` is satisfied."""
    cmds = durability.commands(keys[0])
    for use_source in (False, True):
        script = ("EVAL", source) if use_source else ("EVALSHA", sha)
        first = (*script, len(keys), *keys, *args)
        if isinstance(client, RedisCluster):
            replies = await _cluster_pipeline(client, keys[0], [first, *cmds])
        else:
            async with client.pipeline(transaction=False) as pipe:
                for cmd in (first, *cmds):
                    pipe.execute_command(*cmd)
                replies = await pipe.execute(raise_on_error=False)
        if isinstance(replies[0], NoScriptError) and not use_source:
            continue
        for reply in replies:
            if isinstance(reply, BaseException):
                if is_fault(reply):
                    raise as_fault(reply, what) from reply
                if "appendonly" in str(reply):
                    raise ConfigurationError(
                        f"{what}: durability aof=True needs the server's appendonly yes ({reply})") from reply
                raise reply
        durability.check(replies, what)
        return replies[0]
    raise AssertionError("unreachable")


async def _cluster_pipeline(client: RedisCluster, key: str, commands: list[tuple[Any, ...]]) -> list[Any]:
    """The commands pipelined on the node that owns `key`'s slot, following MOVED/ASK (a redirected
    command did not run, so sending it on is safe)."""
    await client.initialize()
    node: Any = client.get_node_from_key(key)
    asking = False
    for _ in range(_REDIRECTS):
        batch: list[tuple[Any, ...]] = []
        for cmd in commands:
            if asking and cmd[0] != "WAIT" and cmd[0] != "WAITAOF":
                batch.append(("ASKING",))
            batch.append(cmd)
        pipeline = [PipelineCommand(i, *cmd) for i, cmd in enumerate(batch)]
        await node.execute_pipeline(pipeline)
        results = [c.result for c, cmd in zip(pipeline, batch, strict=True) if cmd[0] != "ASKING"]
        redirect = next((r for r in results if isinstance(r, AskError)), None)
        if redirect is None:
            return results
        if isinstance(redirect, MovedError):
            await client.nodes_manager.initialize()
            node = client.get_node_from_key(key)
            asking = False
        else:
            found = client.get_node(host=redirect.host, port=redirect.port)
            if found is None:
                break
            node, asking = found, True
    raise as_fault(ClusterRedirectError(), "following a slot redirection")


class ClusterRedirectError(Exception):
    """The queue's slot kept moving while a durable write was sent."""
