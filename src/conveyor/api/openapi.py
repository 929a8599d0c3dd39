"""The OpenAPI document with each task's payload schema.

Every declared task gets a request model `Enqueue_<queue>__<task>` ({name: const, data: the task's
payload type, options}); `EnqueueRequest` is any of them and `BulkEnqueueRequest` a list of them,
so /docs shows exactly what each task accepts.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Union

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import ConfigDict, TypeAdapter, create_model

from conveyor.api.schemas import MAX_BULK, EnqueueIn, JobOptionsIn
from conveyor.app import Conveyor

REF = "#/components/schemas/{model}"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _task_model(queue: str, name: str, payload_type: Any) -> Any:
    required = payload_type is not type(None)
    model_name = "Enqueue_" + _UNSAFE.sub("_", f"{queue}__{name}")
    fields: dict[str, Any] = {
        "name": (Literal[name], ...),
        "data": (payload_type, ... if required else None),
        "options": (JobOptionsIn | None, None),
    }
    return create_model(
        model_name,
        __doc__=f"Enqueue task {name!r} on queue {queue!r}.",
        __config__=ConfigDict(extra="forbid"),  # a job has name, data and options only
        **fields,
    )


def request_schemas(conveyor: Conveyor) -> dict[str, Any]:
    """Component schemas for enqueue bodies, `$defs` lifted into components."""
    models = [_task_model(q, n, t.payload_type) for (q, n), t in sorted(conveyor.tasks.items())]
    one: Any = Union[tuple(models)] if models else EnqueueIn  # noqa: UP007 - built at run time
    schema = TypeAdapter(one).json_schema(ref_template=REF, mode="validation")
    components: dict[str, Any] = dict(schema.pop("$defs", {}))
    components["EnqueueRequest"] = schema
    components["BulkEnqueueRequest"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["jobs"],
        "properties": {
            "jobs": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BULK,
                "items": {"$ref": REF.format(model="EnqueueRequest")},
            }
        },
    }
    components.update(_flow_schemas(components, sorted(conveyor.tasks)))
    return components


FLOW_POLICIES = ["fail", "ignore", "continue"]


def _flow_schemas(components: dict[str, Any], tasks: list[tuple[str, str]]) -> dict[str, Any]:
    """`FlowRequest`, the body of POST /api/flows: one node per declared task (its enqueue body plus
    `queue`, `children` and `on_child_failure`), nested through `children`. Flow jobs take no
    idempotency key (`options.job_id` makes a flow safe to repeat)."""
    options = {k: v for k, v in components.get("JobOptionsIn", {}).items()}
    options["properties"] = {k: v for k, v in options.get("properties", {}).items() if k != "idempotency_key"}
    out: dict[str, Any] = {"FlowJobOptionsIn": options}
    nodes = []
    for queue, name in tasks:
        # With one task, EnqueueRequest is that task's model itself rather than a reference to it.
        enqueue = components.get("Enqueue_" + _UNSAFE.sub("_", f"{queue}__{name}")) or components["EnqueueRequest"]
        properties = dict(enqueue["properties"])
        properties["queue"] = {"type": "string", "const": queue, "title": "Queue"}
        properties["options"] = {"anyOf": [{"$ref": REF.format(model="FlowJobOptionsIn")}, {"type": "null"}]}
        properties["children"] = {
            "anyOf": [
                {"type": "array", "maxItems": 20, "items": {"$ref": REF.format(model="FlowRequest")}},
                {"type": "null"},
            ],
            "description": "Child jobs; the node runs when they have finished.",
        }
        properties["on_child_failure"] = {
            "anyOf": [{"type": "string", "enum": FLOW_POLICIES}, {"type": "null"}],
            "description": "What a failed child does (a node with children).",
        }
        model = "FlowNode_" + _UNSAFE.sub("_", f"{queue}__{name}")
        out[model] = {
            "type": "object", "additionalProperties": False, "title": model,
            "description": f"A flow job of task {name!r} on queue {queue!r}.",
            "required": ["queue", *enqueue.get("required", [])], "properties": properties,
        }
        nodes.append({"$ref": REF.format(model=model)})
    out["FlowRequest"] = {"anyOf": nodes} if nodes else {"type": "object"}
    return out


def _headers_not_nullable(doc: dict[str, Any]) -> None:
    """An optional header is absent or a string, never JSON null (FastAPI documents `str | None`
    parameters as "string or null", and a client would then send the text "null")."""
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            for param in operation.get("parameters", []):
                schema = param.get("schema", {})
                if param.get("in") == "header" and "anyOf" in schema:
                    kept = [s for s in schema["anyOf"] if s.get("type") != "null"]
                    if len(kept) == 1:
                        rest = {k: v for k, v in schema.items() if k != "anyOf"}
                        param["schema"] = {**kept[0], **rest}


def _named_backoffs(doc: dict[str, Any], names: list[str]) -> None:
    """A named backoff must be one the application registers: list them (or drop the form)."""
    schemas = doc.get("components", {}).get("schemas", {})
    named = schemas.get("NamedBackoffIn")
    if named is None:
        return
    if names:
        named["properties"]["name"] = {"type": "string", "enum": names, "description": "A registered policy."}
        return
    ref = REF.format(model="NamedBackoffIn")
    backoff = schemas.get("JobOptionsIn", {}).get("properties", {}).get("backoff", {})
    if "anyOf" in backoff:
        backoff["anyOf"] = [s for s in backoff["anyOf"] if s.get("$ref") != ref]
    del schemas["NamedBackoffIn"]


def _body_limit_documented(doc: dict[str, Any]) -> None:
    """Every route that takes a body can answer 413: the body limit is checked below every route
    (api/body.py), so routes whose own list of errors leaves it out still document it."""
    too_large = {"description": "Body too large",
                 "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorOut")}}}}
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                operation.setdefault("responses", {}).setdefault("413", too_large)


def install_openapi(app: FastAPI, conveyor: Conveyor) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            doc.setdefault("components", {}).setdefault("schemas", {}).update(request_schemas(conveyor))
            _headers_not_nullable(doc)
            _named_backoffs(doc, sorted(conveyor.backoffs))
            _body_limit_documented(doc)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
