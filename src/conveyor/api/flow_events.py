"""A flow root's event stream also reports its descendants' state changes (docs/flows.md, "HTTP API").

The follower knows the tree (walked from the root's record, walked again at each keep-alive so
dynamic children appear) and follows each descendant queue through the process's event hub
(api/hub.py), keeping only the descendants' events. Child frames are `event: child` with no SSE id, so
Last-Event-ID keeps resuming the root's own stream.
"""

from __future__ import annotations

from typing import Any

from conveyor.api.hub import EventHub, Subscription
from conveyor.api.responses import json_bytes
from conveyor.api.serialize import event_out
from conveyor.app import Conveyor
from conveyor.events import Event
from conveyor.flows.model import MAX_NODES
from conveyor.job import JobRecord, split_ref
from conveyor.redis.faults import redis_call
from conveyor.redis.keys import QueueKeys

POLL_S = 0.25  # a flow root's stream relays its children's events at least this often


def child_frame(data: Any) -> bytes:
    return b"event: child\ndata: %s\n\n" % json_bytes(data)


class FlowFollower:
    def __init__(self, app: Conveyor, hub: EventHub, show_data: bool) -> None:
        self.app = app
        self.hub = hub
        self.show_data = show_data
        self.members: dict[str, set[str]] = {}  # queue -> descendant ids
        self.subs: dict[str, Subscription] = {}
        self._known = 0

    @property
    def active(self) -> bool:
        return bool(self.subs)

    def may_have_grown(self, event: Event) -> bool:
        """Whether the root's `event` may mean descendants this follower does not know yet, so the tree
        is walked again: the root waits for children (dynamic ones added), or a child it never saw ended.
        The end of a known child changes nothing in the tree: walking then cost a walk per child."""
        if event.type == "waiting-children":
            return True
        if event.type != "child":
            return False
        queue, job_id = split_ref(event.fields.get("child", ""))
        return job_id not in self.members.get(queue, ())

    async def update(self, root: JobRecord) -> bytes | None:
        """Follow the descendants of `root` (as its record is now); a `children` frame listing every
        descendant and its state when there are new ones (the first time, and after dynamic children)."""
        if not root.children:
            return None
        found = await self._walk(root)
        await self._subscribe()
        if len(found) == self._known:
            return None
        self._known = len(found)
        return b"event: children\ndata: %s\n\n" % json_bytes({"children": found})

    async def close(self) -> None:
        for sub in self.subs.values():
            await sub.aclose()
        self.subs.clear()

    async def _subscribe(self) -> None:
        for queue in self.members:
            if queue not in self.subs:
                # From the stream's position now, so nothing is missed while the reader starts.
                sub = self.hub.subscribe(queue, after=await self.app.queue(queue).last_event_id())
                await sub.start()
                self.subs[queue] = sub

    async def _walk(self, root: JobRecord) -> list[dict[str, Any]]:
        client, prefix = self.app.client, self.app.prefix
        found: list[dict[str, Any]] = []
        level = [(q, i, root.id) for q, i in root.children]
        while level and len(found) < MAX_NODES:
            async with client.pipeline(transaction=False) as pipe:
                for q, i, _ in level:
                    pipe.hmget(QueueKeys(q, prefix).job(i), ["name", "state", "kids"])
                replies = await redis_call(pipe.execute())
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
        """Frames for the descendants' events received since the last poll (never waits)."""
        frames: list[bytes] = []
        for queue, sub in self.subs.items():
            ids = self.members.get(queue, set())
            while (event := await sub.next(timeout=0)) is not None:
                if event.job_id in ids:
                    frames.append(child_frame({"queue": queue, **event_out(event, show_data=self.show_data)}))
        return frames
