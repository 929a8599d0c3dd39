"""Children adopted and never written (docs/flows.md, "Retrying a failed or cancelled parent").

A running parent adopts its dynamic children (flow-adopt-2.lua) before writing them (flow-add-0.lua).
If it fails for good in between (stalled past max_stalls while adding them, say), a retry sends it to
waiting-children for children that do not exist, and nothing would ever release it. The retry script
cannot see them (they live in other slots), so after it the parent's children are looked up here, and
a parent that waits for a child with neither a record nor a hand-over record goes back to waiting:
its handler runs again and adds the children again (the same ids; only the missing ones are written).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigurationError
from conveyor.job import split_ref
from conveyor.redis import flow_scripts
from conveyor.redis.faults import guarded
from conveyor.redis.keys import QueueKeys

if TYPE_CHECKING:
    from conveyor.queue import Queue

_READ = 1000  # children read per round trip


async def rerun_if_children_unwritten(queue: Queue, job_id: str) -> bool:
    """Send the parent `job_id` (in waiting-children) back to waiting when some child it waits for was
    never written; returns whether it was. Reads the parent's results first and the children after,
    and the script checks the parent again, so a child that ended and was delivered meanwhile (its
    record gone: result_ttl=0) is not taken for a missing one."""
    client = queue.client
    jk = queue.keys.job(job_id)
    state, started, kids = await guarded(client.hmget(jk, ["state", "started", "kids"]), "reading a parent")
    if state != "waiting-children" or not started or not kids:
        return False
    refs = str(kids).split()
    pending: list[str] = []
    for start in range(0, len(refs), _READ):
        part = refs[start:start + _READ]
        fields = [f for ref in part for f in (f"r:{ref}", f"e:{ref}")]
        found: Any = await guarded(client.hmget(jk, fields), "reading a parent's children")
        pending += [ref for i, ref in enumerate(part) if found[2 * i] is None and found[2 * i + 1] is None]
    missing: list[str] = []
    for start in range(0, len(pending), _READ):
        part = pending[start:start + _READ]
        missing += await _missing(queue, part)
        if len(missing) >= flow_scripts.MAX_RERUN_REFS:
            break
    if not missing:
        return False
    return await flow_scripts.rerun(client, queue.keys, job_id, missing[:flow_scripts.MAX_RERUN_REFS],
                                    queue.events_maxlen)


async def _missing(queue: Queue, refs: list[str]) -> list[str]:
    """Those of `refs` with no job record and no hand-over record in their queue's outbox."""
    asked: list[str] = []
    pipe = queue.client.pipeline(transaction=False)
    for ref in refs:
        child_queue, child_id = split_ref(ref)
        try:
            keys = QueueKeys(child_queue, queue.prefix)
        except ConfigurationError:
            continue  # not a reference a flow writes: left alone
        pipe.exists(keys.job(child_id))
        pipe.hexists(keys.outbox, child_id)
        asked.append(ref)
    if not asked:
        return []
    found: Any = await guarded(pipe.execute(), "looking up a parent's children")
    return [ref for i, ref in enumerate(asked) if not found[2 * i] and not found[2 * i + 1]]
