"""The OpenAPI document: every endpoint, and each task's payload schema in the enqueue body."""

from __future__ import annotations

from conveyor.partitions.queue import MAX_PARTITIONED_LIST_CURSOR
from conveyor.queue import MAX_LIST_CURSOR
from tests.api.conftest import Api


async def test_openapi_lists_endpoints_and_task_payload_schemas(api: Api) -> None:
    doc = (await api.http.get("/openapi.json")).json()
    paths = doc["paths"]
    expected = {
        ("post", "/api/queues/{queue}/jobs"),
        ("post", "/api/queues/{queue}/jobs:bulk"),
        ("post", "/api/flows"),
        ("get", "/api/limiters"),
        ("get", "/api/limiters/{name}"),
        ("get", "/api/costs"),
        ("get", "/api/costs/settings"),
        ("patch", "/api/costs/settings"),
        ("put", "/api/costs/prices/{model}"),
        ("delete", "/api/costs/prices/{model}"),
        ("get", "/api/costs/events"),
        ("get", "/api/budgets"),
        ("get", "/api/budgets/{group}"),
        ("put", "/api/budgets/{group}"),
        ("delete", "/api/budgets/{group}"),
        ("get", "/api/jobs/{queue}/{job_id}"),
        ("delete", "/api/jobs/{queue}/{job_id}"),
        ("get", "/api/jobs/{queue}/{job_id}/wait"),
        ("get", "/api/jobs/{queue}/{job_id}/events"),
        ("get", "/api/jobs/{queue}/{job_id}/output"),
        ("get", "/api/events"),
        ("get", "/api/limiters"),
        ("get", "/api/limiters/{name}"),
        ("post", "/api/jobs/{queue}/{job_id}/retry"),
        ("post", "/api/jobs/{queue}/{job_id}/promote"),
        ("get", "/api/queues"),
        ("get", "/api/queues/{queue}"),
        ("post", "/api/queues/{queue}/pause"),
        ("post", "/api/queues/{queue}/resume"),
        ("get", "/api/queues/{queue}/jobs"),
        ("post", "/api/queues/{queue}/failed:retry-all"),
        ("delete", "/api/queues/{queue}/failed"),
        ("get", "/api/workers"),
        ("get", "/api/schedules"),
        ("get", "/api/schedules/{schedule_id}"),
        ("put", "/api/schedules/{schedule_id}"),
        ("delete", "/api/schedules/{schedule_id}"),
        ("get", "/api/health"),
        ("post", "/api/schedules/{schedule_id}/pause"),
        ("post", "/api/schedules/{schedule_id}/resume"),
        ("post", "/api/schedules/{schedule_id}/run-now"),
        ("get", "/api/alerts"),
        ("put", "/api/alerts"),
        ("delete", "/api/alerts/{rule_id}"),
        ("get", "/api/autoscaling"),
        ("get", "/api/autoscaling/queues/{queue}"),
        ("get", "/api/autoscaling/metrics"),
    }
    assert {(m, p) for p, ops in paths.items() for m in ops} == expected
    schemas = doc["components"]["schemas"]
    echo = schemas[f"Enqueue_{api.queue.replace('.', '_')}__echo"]
    assert echo["properties"]["name"]["const"] == "echo"
    assert echo["properties"]["data"]["$ref"] == "#/components/schemas/Echo"
    assert schemas["Echo"]["required"] == ["text"] and schemas["Echo"]["properties"]["n"]["type"] == "integer"
    assert schemas["Steps"]["properties"]["steps"]["maximum"] == 20
    refs = {r["$ref"] for r in schemas["EnqueueRequest"]["anyOf"]}
    assert (
        "#/components/schemas/" + f"Enqueue_{api.queue}__boom" in refs
        and len(refs) == len(api.app.tasks) == 6
    )
    body = paths["/api/queues/{queue}/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/EnqueueRequest"}
    assert {"202", "200", "400", "404", "409", "413", "422", "429"} <= set(
        paths["/api/queues/{queue}/jobs"]["post"]["responses"]
    )
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


async def test_every_route_that_takes_a_body_documents_the_413_it_can_answer(api: Api) -> None:
    doc = (await api.http.get("/openapi.json")).json()
    with_body = [(method, path, op) for path, ops in doc["paths"].items() for method, op in ops.items()
                 if "requestBody" in op]
    assert ("put", "/api/alerts") in {(m, p) for m, p, _ in with_body}
    assert [(m, p) for m, p, op in with_body if "413" not in op["responses"]] == []
    too_big = b'{"rules": [' + b" " * (4 * 1024 * 1024) + b"]}"  # over the API's default 4 MiB body limit
    answer = await api.http.put("/api/alerts", content=too_big,
                                headers={**api.auth(), "content-type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"


async def test_the_list_cursor_documents_the_partitioned_cap(api: Api) -> None:
    """The list route's `cursor` schema keeps a plain queue's bound; its description states the
    partitioned queue's lower cap and the 422 past it, which the route documents. Before, the
    document said only le=10**9, so a client generated from it met an undocumented refusal."""
    doc = (await api.http.get("/openapi.json")).json()
    route = doc["paths"]["/api/queues/{queue}/jobs"]["get"]
    (cursor,) = [p for p in route["parameters"] if p["name"] == "cursor"]
    assert cursor["schema"]["maximum"] == MAX_LIST_CURSOR
    assert f"up to {MAX_PARTITIONED_LIST_CURSOR:,} on a partitioned queue" in cursor["description"]
    assert "422" in cursor["description"] and "422" in route["responses"]
