"""OpenAPI 3.1 document built from the same `Endpoint` list that builds the routes.

Pydantic emits JSON Schema 2020-12, which is what OpenAPI 3.1 uses, so request and
response models go in as they are (their ``$defs`` hoisted into ``components``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel

from api.routing import Endpoint

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message", "details"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "details": {},
    },
}

_PATH_PARAM = re.compile(r"{([a-zA-Z_]+)(?::[a-z]+)?}")


def _hoist(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    defs = schema.pop("$defs", {})
    for name, sub in defs.items():
        components[name] = sub
    return schema


def _model_schema(model: type[BaseModel], components: dict[str, Any],
                  mode: Literal["validation", "serialization"]) -> dict:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    schema = _hoist(schema, components)
    name = model.__name__
    components[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def _sse_event(data: dict[str, Any]) -> dict[str, Any]:
    """One Server-Sent Event (the unit an SSE client and schemathesis read; OpenAPI 3.2
    calls it the stream's item): its fields, ``data`` a JSON text holding `data`."""
    return {
        "type": "object",
        "properties": {
            "event": {"type": "string", "description": "alert event type, or `reset` / "
                                                       "`credential_expired`"},
            "id": {"type": "string", "description": "stream position (Last-Event-ID)"},
            "retry": {"type": "integer", "minimum": 0},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": data},
        },
    }


def openapi_path(path: str) -> str:
    return _PATH_PARAM.sub(r"{\1}", path)


def build_openapi(endpoints: list[Endpoint], version: str = "0.1.0") -> dict[str, Any]:
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        op: dict[str, Any] = {
            "operationId": ep.operation_id,
            "summary": ep.summary,
            "tags": [ep.tag],
            "parameters": [],
            "responses": {},
        }
        for name in _PATH_PARAM.findall(ep.path):
            op["parameters"].append({
                "name": name, "in": "path", "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            })
        if ep.query is not None:
            qschema = ep.query.model_json_schema(
                ref_template="#/components/schemas/{model}", mode="validation"
            )
            qschema = _hoist(qschema, components)
            required = set(qschema.get("required", []))
            for name, prop in qschema.get("properties", {}).items():
                param: dict[str, Any] = {
                    "name": name, "in": "query", "required": name in required,
                    "schema": prop,
                }
                if prop.get("description"):
                    param["description"] = prop["description"]
                if prop.get("type") == "array":
                    param["style"] = "form"
                    param["explode"] = True
                op["parameters"].append(param)
        for name, description, schema in ep.headers:
            op["parameters"].append({"name": name, "in": "header", "required": False,
                                     "description": description, "schema": schema})
        if ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {
                    "schema": _model_schema(ep.body, components, "validation")
                }},
            }
        if ep.multipart:
            op["requestBody"] = {
                "required": True,
                "content": {"multipart/form-data": {"schema": {
                    "type": "object",
                    "properties": {"image": {"type": "string", "format": "binary"}},
                    "required": ["image"],
                }}},
            }
        for status, model in ep.responses.items():
            entry: dict[str, Any] = {"description": "success" if status < 400 else "error"}
            if model is not None and status < 400 and ep.media_type == "text/event-stream":
                entry["content"] = {ep.media_type: {
                    "schema": _sse_event(_model_schema(model, components, "serialization"))}}
            elif model is not None:
                entry["content"] = {ep.media_type if status < 400 else "application/json": {
                    "schema": _model_schema(model, components, "serialization")
                }}
            elif status < 400 and ep.media_type != "application/json":
                entry["content"] = {ep.media_type: {"schema": {"type": "string"}}}
            op["responses"][str(status)] = entry
        error_statuses = [400, 422, 429, 500] if ep.permission else [500]
        if ep.permission:
            error_statuses += [401, 403]
        if ep.body is not None or ep.multipart:
            error_statuses += [413, 415]
        if _PATH_PARAM.search(ep.path):
            error_statuses.append(404)
        error_statuses += list(ep.errors)
        for status in error_statuses:
            op["responses"].setdefault(str(status), {
                "description": "error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            })
        if ep.permission:
            op["security"] = [{"bearer": []}, {"apiKey": []}]
            op["x-vigil-permission"] = ep.permission
        paths.setdefault(openapi_path(ep.path), {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Vigil API",
            "version": version,
            "description": "Read models of the Vigil event log; commands go to Kafka.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
