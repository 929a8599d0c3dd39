"""A flow root's event stream also reports its descendants' state changes (docs/flows.md, "HTTP API").

The follower knows the tree (walked from the root's record, re-walked at each keep-alive so dynamic
children appear) and reads each descendant queue's events stream from where it last stopped,
without blocking; the root's own stream does the blocking wait. Child frames are `event: child` with
no SSE id, so Last-Event-ID keeps resuming the root's stream.
"""

from __future__ import annotations

from typing import Any

import orjson

from conveyor.api.serialize import event_out
from conveyor.api.state import ApiState
from conveyor.flows.model import MAX_NODES
from conveyor.job import JobRecord, split_ref
from conveyor.queue import Queue
from conveyor.redis.keys import QueueKeys

_BATCH = 500


def child_frame(data: Any) -> bytes:
    return b"event: child\ndata: %s\n\n" % orjson.dumps(data)


class FlowFollower:
    def __init__(self, state: ApiState, root: JobRecord, show_data: bool) -> None:
        self.state = state
        self.root = root
        self.show_data = show_data
        self.members: dict[str, set[str]] = {}  # queue -> descendant ids
        self.cursors: dict[str, str] = {}  # queue -> last stream id read

    async def start(self) -> bytes:
        """Walk the tree and return a `children` frame: every descendant with its state now."""
        found = await self._walk()
        for queue in self.members:
            self.cursors[queue] = await self.state.conveyor.queue(queue).last_event_id()
        return b"event: children\ndata: %s\n\n" % orjson.dumps({"children": found})

    async def refresh(self) -> None:
        """Pick up children added since (dynamic children); their new queues are read from now."""
        await self._walk()
        for queue in self.members:
            if queue not in self.cursors:
                self.cursors[queue] = await self.state.conveyor.queue(queue).last_event_id()

    async def _walk(self) -> list[dict[str, Any]]:
        client = self.state.conveyor.client
        prefix = self.state.conveyor.prefix
        found: list[dict[str, Any]] = []
        level = [(q, i, self.root.id) for q, i in self.root.children]
        while level and len(found) < MAX_NODES:
            async with client.pipeline(transaction=False) as pipe:
                for q, i, _ in level:
                    pipe.hmget(QueueKeys(q, prefix).job(i), ["name", "state", "kids"])
                replies = await Queue._call(pipe.execute())
            nxt = []
            for (q, i, parent), (name, state, kids) in zip(level, replies, strict=True):
                self.members.setdefault(q, set()).add(i)
                found.append({"queue": q, "id": i, "parent": parent, "name": name, "state": state})
                for ref in (kids or "").split():
                    cq, ci = split_ref(ref)
                    nxt.append((cq, ci, i))
            level = nxt[: MAX_NODES - len(found)]
        return found

    async def poll(self) -> list[bytes]:
        """Frames for descendants' events since the last poll (non-blocking reads)."""
        frames: list[bytes] = []
        for queue, cursor in list(self.cursors.items()):
            q = self.state.conveyor.queue(queue)
            ids = self.members.get(queue, set())
            while True:
                events = await q.read_events(cursor, count=_BATCH)
                for event in events:
                    cursor = event.id
                    if event.job_id in ids:
                        frames.append(child_frame({"queue": queue, **event_out(event, show_data=self.show_data)}))
                if len(events) < _BATCH:
                    break
            self.cursors[queue] = cursor
        return frames
