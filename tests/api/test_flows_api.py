"""POST /api/flows, the parent/children fields of GET /api/jobs, and a flow root's event stream."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor import JobContext, JobState
from tests.api.conftest import Api
from tests.api.sse_parse import parse_sse
from tests.conftest import wait_for


def _declare(api: Api) -> str:
    other = api.queue + "-kids"

    @api.app.task(queue=api.queue, name="collect")
    async def collect(ctx: JobContext) -> dict[str, Any]:
        return {"children": (await ctx.children()).ordered()}

    @api.app.task(queue=other, name="shout")
    async def shout(ctx: JobContext, text: str) -> str:
        await asyncio.sleep(0.05)
        return text.upper()

    return other


async def test_start_flow_then_read_parent_and_children(api: Api) -> None:
    other = _declare(api)
    body = {"queue": api.queue, "name": "collect", "data": None, "options": {"priority": 5},
            "on_child_failure": "ignore",
            "children": [{"queue": other, "name": "shout", "data": "a"},
                         {"queue": other, "name": "shout", "data": "b", "options": {"attempts": 2}}]}
    r = await api.http.post("/api/flows", json=body, headers=api.auth("enqueue"))
    assert r.status_code == 202, r.text
    out = r.json()
    assert set(out) == {"id", "queue", "status_url", "events_url"} and out["queue"] == api.queue
    assert out["events_url"] == out["status_url"] + "/events"
    root = await api.job(out["id"])
    assert root["state"] == "waiting-children" and root["parent"] is None
    assert [(c["queue"], c["name"], c["state"]) for c in root["children"]] == [
        (other, "shout", "waiting"), (other, "shout", "waiting")]
    child_id = root["children"][0]["id"]
    r = await api.http.get(f"/api/jobs/{other}/{child_id}", headers=api.auth("read"))
    assert r.status_code == 200 and r.json()["parent"] == {"queue": api.queue, "id": out["id"]}
    assert r.json()["children"] == []
    await api.start_worker()
    kids = api.app.worker(other, lease_ms=3000)
    await kids.start()
    try:
        r = await api.http.get(f"{out['status_url']}/wait?timeout=60", headers=api.auth("reader"))
        assert r.json()["result"] == {"children": ["A", "B"]}
        root = await api.job(out["id"])
        assert [c["state"] for c in root["children"]] == ["completed", "completed"]
    finally:
        await kids.close(2.0)
        await api.app.queue(other).obliterate(force=True)


async def test_bad_node_is_a_422_naming_its_path_and_nothing_is_written(api: Api) -> None:
    other = _declare(api)
    good = {"queue": other, "name": "shout", "data": "x"}
    cases = [
        ({"queue": api.queue, "name": "collect", "children": [good, {"queue": other, "name": "shout", "data": 5}]},
         "root.children[1]"),
        ({"queue": api.queue, "name": "collect", "children": [good, {"queue": other, "name": "nope"}]},
         "root.children[1]"),
        ({"queue": api.queue, "name": "collect", "children": [
            {"queue": other, "name": "shout", "data": "x", "children": [{"queue": "missing", "name": "x"}]}]},
         "root.children[0].children[0]"),
        ({"queue": api.queue, "name": "collect", "children": [{**good, "options": {"attempts": 0}}]},
         "root.children[0]"),
        ({"queue": api.queue, "name": "collect", "children": [{**good, "parents": ["root"]}]}, "root.children[0]"),
        ({"queue": api.queue, "name": "collect", "on_child_failure": "explode", "children": [good]}, "root"),
        ({"queue": api.queue, "name": "collect", "children": [
            {**good, "options": {"job_id": "same"}}, {**good, "options": {"job_id": "same"}}]}, "root"),
        ([good], "root"),
    ]
    for body, path in cases:
        r = await api.http.post("/api/flows", json=body, headers=api.auth("enqueue"))
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["details"][0]["path"] == path, r.text
        assert path in r.json()["error"]["message"]
    for q in (api.queue, other):
        assert sum((await api.app.queue(q).counts()).values()) == 0
    r = await api.http.post("/api/flows", json=cases[0][0], headers=api.auth("read"))
    assert r.status_code == 403


async def test_root_events_report_children_until_the_root_ends(api: Api) -> None:
    other = _declare(api)
    body = {"queue": api.queue, "name": "collect",
            "children": [{"queue": other, "name": "shout", "data": t} for t in "xyz"]}
    r = await api.http.post("/api/flows", json=body, headers=api.auth("enqueue"))
    out = r.json()
    request = asyncio.create_task(api.http.get(out["events_url"], headers=api.auth("reader")))
    state = api.asgi.state.conveyor_api
    await wait_for(lambda: other in state.hub.followed(), what="stream following the children's queue")
    await api.start_worker()
    kids = api.app.worker(other, lease_ms=3000)
    await kids.start()
    try:
        r = await request
    finally:
        await kids.close(2.0)
        await api.app.queue(other).obliterate(force=True)
    events, _ = parse_sse(r.text)
    kinds = [e.event for e in events]
    assert kinds[0] == "state" and kinds[1] == "children" and kinds[-1] == "completed"
    assert len(events[1].data["children"]) == 3
    child_events = [e.data for e in events if e.event == "child"]
    for job in events[1].data["children"]:
        mine = [e["type"] for e in child_events if e["job_id"] == job["id"]]
        assert "active" in mine and "completed" in mine, (job, mine, [e.event for e in events])
    assert kinds.index("completed") > max(i for i, k in enumerate(kinds) if k == "child")


async def test_one_request_creates_a_parent_and_1000_children(api: Api) -> None:
    other = _declare(api)
    body = {"queue": api.queue, "name": "collect",
            "children": [{"queue": other, "name": "shout", "data": str(i)} for i in range(1000)]}
    r = await api.http.post("/api/flows", json=body, headers=api.auth("enqueue"))
    assert r.status_code == 202, r.text
    root = await api.job(r.json()["id"])
    try:
        assert len(root["children"]) == 1000 and {c["state"] for c in root["children"]} == {"waiting"}
        assert (await api.app.queue(other).counts())[JobState.WAITING] == 1000
    finally:
        await api.app.queue(other).obliterate(force=True)


async def test_a_node_on_a_partitioned_queue_is_a_422(api: Api) -> None:
    """The parent's reference names the plain queue, and the children's results went there: a
    parent on a partitioned queue waited for ever. Flows run on plain queues only."""
    other = _declare(api)
    parted = api.queue + "-parted"
    api.app.declare_queue(parted, partitions=2)

    @api.app.task(queue=parted, name="gather")
    async def gather(ctx: JobContext) -> list[Any]:
        return (await ctx.children()).ordered()

    @api.app.task(queue=parted, name="shout")
    async def shout(ctx: JobContext, text: str) -> str:
        return text.upper()

    cases = [
        ({"queue": parted, "name": "gather", "children": [{"queue": other, "name": "shout", "data": "a"}]}, "root"),
        ({"queue": api.queue, "name": "collect", "children": [
            {"queue": other, "name": "shout", "data": "a"}, {"queue": parted, "name": "shout", "data": "b"}]},
         "root.children[1]"),
    ]
    try:
        for body, path in cases:
            r = await api.http.post("/api/flows", json=body, headers=api.auth("enqueue"))
            assert r.status_code == 422, r.text
            assert r.json()["error"]["details"][0]["path"] == path
            assert "partitioned" in r.json()["error"]["message"]
        for q in (api.queue, other, parted):
            assert sum((await api.app.queue(q).counts()).values()) == 0
    finally:
        await api.app.queue(parted).obliterate(force=True)


async def test_a_tree_of_100_levels_is_accepted_and_one_deeper_is_a_422_naming_it(api: Api) -> None:
    """Flows are documented to 100 levels, but the API's general bound on body nesting (64 levels)
    refused any tree deeper than some 30 levels, with a message that named no node. Each node's data
    keeps that bound."""
    other = _declare(api)

    def chain(levels: int, data: Any = "x") -> dict[str, Any]:
        node: dict[str, Any] = {"queue": other, "name": "shout", "data": data}
        for _ in range(levels - 1):
            node = {"queue": other, "name": "shout", "data": "x", "children": [node]}
        return {"queue": api.queue, "name": "collect", "children": [node]}

    r = await api.http.post("/api/flows", json=chain(101), headers=api.auth("enqueue"))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["path"].startswith("root.children[0].children[0]")  # clipped
    assert "deeper than 100 levels" in r.json()["error"]["details"][0]["message"]
    nested: Any = "x"
    for _ in range(70):
        nested = [nested]
    r = await api.http.post("/api/flows", json=chain(3, nested), headers=api.auth("enqueue"))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["path"] == "root" + ".children[0]" * 3
    for q in (api.queue, other):
        assert sum((await api.app.queue(q).counts()).values()) == 0
    try:
        r = await api.http.post("/api/flows", json=chain(100), headers=api.auth("enqueue"))
        assert r.status_code == 202, r.text
        assert (await api.app.queue(other).counts())[JobState.WAITING_CHILDREN] == 99
    finally:
        await api.app.queue(other).obliterate(force=True)


async def test_a_flow_sent_again_while_its_removal_is_cancelling_is_a_409(api: Api) -> None:
    """The same tree sent again right after its root was removed, before any worker cancelled the
    removed root's children, is refused with a 409 that says so; nothing is written."""
    other = _declare(api)
    body = {"queue": api.queue, "name": "collect", "data": None, "options": {"job_id": "busy-1"},
            "children": [{"queue": other, "name": "shout", "data": "a"}]}
    try:
        r = await api.http.post("/api/flows", json=body, headers=api.auth("enqueue"))
        assert r.status_code == 202, r.text
        await api.app.queue(api.queue).remove("busy-1")
        r = await api.http.post("/api/flows", json=body, headers=api.auth("enqueue"))
        assert r.status_code == 409, r.text
        assert "still being cancelled" in r.json()["error"]["message"]
        assert await api.app.queue(api.queue).get_job("busy-1") is None
    finally:
        await api.app.queue(other).obliterate(force=True)


async def test_retrying_a_cancelled_parent_answers_the_state_it_went_to(api: Api) -> None:
    """POST .../retry answered `waiting` for a flow parent that went back to `waiting-children` (its
    children had not ended), so a client following the answer saw a state the job was not in."""
    other = _declare(api)
    body = {"queue": api.queue, "name": "collect", "children": [{"queue": other, "name": "shout", "data": "a"}]}
    try:
        r = await api.http.post("/api/flows", json=body, headers=api.auth("enqueue"))
        assert r.status_code == 202, r.text
        root_id = r.json()["id"]
        r = await api.http.delete(f"/api/jobs/{api.queue}/{root_id}", headers=api.auth("admin"))
        assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
        r = await api.http.post(f"/api/jobs/{api.queue}/{root_id}/retry", headers=api.auth("admin"))
        assert r.status_code == 200, r.text
        assert (await api.job(root_id))["state"] == "waiting-children"
        assert r.json()["state"] == "waiting-children"
    finally:
        await api.app.queue(other).obliterate(force=True)
