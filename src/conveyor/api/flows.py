"""POST /api/flows: start a flow tree over HTTP (docs/flows.md, "HTTP API").

The body is one root node {"queue","name","data","options","children":[...same shape...]} (a node with
children may carry "on_child_failure"). Every node is checked first (its task declared on its queue,
payload, options); a bad node is a 422 naming its path in the tree ("root.children[1]"), and nothing
is written. Trees only: a node is reached from exactly one parent, so cycles cannot be expressed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request

from conveyor.api.auth import EnqueueKey
from conveyor.api.body import MAX_DEPTH as MAX_NESTING
from conveyor.api.body import read_json, too_deep
from conveyor.api.enqueue import _check_backoff
from conveyor.api.errors import ApiError
from conveyor.api.jobs import IdempotencyKey
from conveyor.api.responses import JSONBody
from conveyor.api.schemas import FlowStartedOut, error_responses
from conveyor.api.serialize import job_path
from conveyor.api.state import get_state
from conveyor.app import Conveyor
from conveyor.errors import (
    FlowBusyError,
    IdempotencyConflictError,
    InvalidFlowError,
    InvalidJobError,
    PayloadValidationError,
)
from conveyor.flows.model import MAX_DEPTH, FlowNode, node_tree
from conveyor.options import JobOptions

router = APIRouter(prefix="/api", tags=["flows"])
# A node at tree depth d nests 2d + 1 levels deep in the body (an object in a children list in an
# object...); its data and options may nest MAX_NESTING more, as a single enqueue's. A little over
# MAX_DEPTH levels is still read, so a tree too deep is refused naming its deepest node.
BODY_NESTING = 2 * (MAX_DEPTH + 2) + 1 + MAX_NESTING


def _bad(path: str, message: str, errors: list[dict[str, Any]] | None = None) -> ApiError:
    detail: dict[str, Any] = {"path": path, "message": message}
    if errors is not None:
        detail["errors"] = errors
    return ApiError(422, f"{path}: {message}; nothing was written", code="invalid_flow", details=[detail])


def build_node(app: Conveyor, body: Any, path: str = "root") -> FlowNode:
    """The tree, each node checked as a single enqueue is (task declared, payload, options); the
    tree's shape and bounds are checked by the one walk the flows room has (flows.model.node_tree)."""

    def make(node: Mapping[str, Any], where: str, queue: str, name: str) -> FlowNode:
        task = app.get_task(queue, name)
        if task is None:
            raise _bad(where, f"queue {queue[:100]!r} has no task named {name[:200]!r}")
        options = node.get("options") or {}
        if not isinstance(options, Mapping):
            raise _bad(where, "'options' must be a JSON object")
        for field in ("data", "options"):
            value = node.get(field)
            if isinstance(value, dict | list) and too_deep(value, MAX_NESTING):
                raise _bad(where, f"'{field}' nests arrays/objects more than {MAX_NESTING} levels deep")
        if "idempotency_key" in options:
            raise _bad(where, "flow jobs take options.job_id, not an idempotency key")
        policy = node.get("on_child_failure")
        if policy is not None and (not node.get("children") or policy not in ("fail", "ignore", "continue")):
            raise _bad(where, 'on_child_failure is "fail", "ignore" or "continue", on a node with children')
        try:
            _check_backoff(app, options.get("backoff"))
            data = task.validate(node.get("data"))
            opts = JobOptions.from_mapping(options).merged_over(task.defaults)
        except ApiError as exc:
            raise _bad(where, exc.message) from None
        except PayloadValidationError as exc:
            raise _bad(where, "data is invalid", exc.errors) from None
        except InvalidJobError as exc:
            raise _bad(where, str(exc)) from None
        return FlowNode(queue, name, data, opts, (), policy)

    try:
        return node_tree(body, make, path)
    except InvalidFlowError as exc:
        raise _bad(exc.path, exc.message) from None


def _keyed_root(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The root node with the job id Idempotency-Key `key` stands for (`fl<16 hex>`, as generated ids)."""
    options = body.get("options") or {}
    if not isinstance(options, Mapping):
        raise _bad("root", "'options' must be a JSON object")
    if "job_id" in options:
        raise _bad("root", "give the root either options.job_id or an Idempotency-Key, not both")
    job_id = "fl" + hashlib.sha256(b"flow-idempotency-key:" + key.encode()).hexdigest()[:16]
    return {**body, "options": {**options, "job_id": job_id}}


@router.post(
    "/flows",
    status_code=202,
    response_model=FlowStartedOut,
    responses=error_responses(400, 401, 403, 409, 413, 422, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FlowRequest"}}},
        }
    },
    summary="Start a flow: a tree of jobs on any queues, all written or none",
)
async def start_flow(request: Request, principal: EnqueueKey, idempotency_key: IdempotencyKey = None) -> JSONBody:
    """With Idempotency-Key K (and no root `options.job_id`), the root's id is derived from K, so
    repeating the call writes only the nodes that do not exist yet and answers with the same root."""
    state = get_state(request)
    body = await read_json(request, state.settings.api_max_body_bytes, BODY_NESTING)
    if not isinstance(body, Mapping):
        raise _bad("root", "the body must be one root node object (a flow is a tree)")
    if idempotency_key is not None:
        body = _keyed_root(body, idempotency_key)
    root = build_node(state.conveyor, body)
    try:
        job = await state.conveyor.flow(root)
    except InvalidFlowError as exc:
        raise _bad(exc.path, exc.message) from None
    except FlowBusyError as exc:
        raise ApiError(409, str(exc)) from None
    except IdempotencyConflictError as exc:
        raise ApiError(409, f"job id {exc} is taken by another job; nothing was written") from None
    url = job_path(request.scope.get("root_path", ""), root.queue, job.id)
    out = {"id": job.id, "queue": root.queue, "status_url": url, "events_url": url + "/events"}
    return JSONBody(out, status_code=202, headers={"Location": url})
