"""GET /openapi.json as the contract: a request the document allows is one the server takes.

FastAPI derives the document from the route signatures and models.py. RunCreate is one flat
model there (what the server parses), but whether a field is allowed depends on the agent:
the adapter registry decides which agentIds exist, and each adapter which of `model`,
`sessionRef` and `command` it takes. refine() turns the flat body into one schema per
kind of agent (a oneOf told apart by agentId), so generated clients and schema-driven
fuzzers see exactly the bodies the server accepts, and nothing else.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, NamedTuple

from .agents import ADAPTERS, Adapter
from .models import UUID_PATTERN
from .security import MAX_BODY_BYTES

# The agent a body without agentId gets (RunCreate.agentId's default).
DEFAULT_AGENT = "demo"

_SCHEMAS = "#/components/schemas/"
_UUID_SESSION_REF = "SessionRef.uuid"

Schema = dict[str, Any]


def _non_null(schema: Schema) -> Schema:
    """The one branch of an `X | None` field schema that is not null."""
    branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
    assert len(branches) == 1, schema
    return dict(branches[0])


class _Shape(NamedTuple):
    """What sets one agent's body apart; agents of one shape share a schema."""

    default: bool
    takes_model: bool
    has_sessions: bool
    uuid_threads: bool
    needs_command: bool


def _shape(agent_id: str, adapter: type[Adapter]) -> _Shape:
    return _Shape(
        default=agent_id == DEFAULT_AGENT,
        takes_model=adapter.takes_model,
        has_sessions=adapter.has_sessions,
        uuid_threads=adapter.uuid_threads,
        needs_command=adapter.needs_command,
    )


def _variant(base: Schema, agents: Mapping[str, type[Adapter]]) -> Schema:
    """The flat RunCreate schema narrowed to what agents of one shape accept."""
    ids = sorted(agents)
    shape = _shape(ids[0], agents[ids[0]])
    schema = copy.deepcopy(base)
    props: dict[str, Schema] = schema["properties"]
    required = set(schema.get("required", []))
    names = ", ".join(ids)
    agent: Schema = {"type": "string", "title": "Agentid", "description": "Which agent runs"}
    agent |= {"const": ids[0]} if len(ids) == 1 else {"enum": ids}
    if shape.default:
        agent["default"] = DEFAULT_AGENT  # the body may leave it out
    else:
        required.add("agentId")
    props["agentId"] = agent
    if not shape.takes_model:
        props["model"] = {"type": "null", "description": f"{names} takes no model"}
    if not shape.has_sessions:
        props["sessionRef"] = {"type": "null", "description": f"{names} has no sessions"}
    elif shape.uuid_threads:
        props["sessionRef"] = {
            "anyOf": [{"$ref": _SCHEMAS + _UUID_SESSION_REF}, {"type": "null"}],
            "description": props["sessionRef"].get("description", ""),
        }
    if shape.needs_command:
        props["command"] = {**_non_null(props["command"]), "description": "the argv to run"}
        required.add("command")
    schema["required"] = sorted(required)
    schema["title"] = f"RunCreate ({names})"
    schema["description"] = "; ".join(
        f"{agent_id}: {agents[agent_id].description or 'an agent'}" for agent_id in ids
    )
    return schema


def _uuid_session_ref(base: Schema) -> Schema:
    """SessionRef whose threadId, when set, is a UUID."""
    schema = copy.deepcopy(base)
    thread = schema["properties"]["threadId"]
    thread["anyOf"] = [
        {"type": "string", "pattern": UUID_PATTERN, "maxLength": 128},
        {"type": "null"},
    ]
    thread["description"] = "the agent's thread or session id, a UUID"
    schema["title"] = "SessionRef (UUID thread)"
    return schema


def split_run_create(
    components: dict[str, Schema], adapters: Mapping[str, type[Adapter]] = ADAPTERS
) -> None:
    """Replace the flat RunCreate component by a oneOf of per-agent bodies, in place.

    Agents that take the same fields share one body schema (RunCreate.a_b_c), so the
    document stays short and a schema-driven fuzzer does not walk the same body twice.
    agentId (a const or an enum in each) tells the branches apart. There is no OpenAPI
    `discriminator`: it maps each value to one schema, and schemathesis then pins a shared
    schema to one of its agents and never generates the others.
    """
    base = components["RunCreate"]
    components[_UUID_SESSION_REF] = _uuid_session_ref(components["SessionRef"])
    groups: dict[_Shape, dict[str, type[Adapter]]] = {}
    for agent_id in sorted(adapters):
        groups.setdefault(_shape(agent_id, adapters[agent_id]), {})[agent_id] = adapters[agent_id]
    refs: list[Schema] = []
    for agents in groups.values():
        name = "RunCreate." + "_".join(sorted(agents))
        components[name] = _variant(base, agents)
        refs.append({"$ref": _SCHEMAS + name})
    components["RunCreate"] = {
        "title": "RunCreate",
        "description": f"{base.get('description', '')} One schema per kind of agent, "
        f"agentId naming the agent; without agentId the run is {DEFAULT_AGENT!r}.",
        "oneOf": refs,
    }


def add_bearer_auth(document: Schema) -> None:
    """Say that every operation needs the daemon's bearer token (a daemon started with one)."""
    schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearerToken"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "The daemon's token (--token or OD_RUNS_TOKEN); an EventSource, "
        "which cannot send headers, may pass it as ?token= instead",
    }
    document["security"] = [{"bearerToken": []}]
    for operation in _operations(document):
        operation.setdefault("responses", {})["401"] = {
            "description": "No valid bearer token",
            "content": {"application/json": {"schema": {"$ref": _SCHEMAS + "ApiErrorBody"}}},
        }


def _operations(document: Schema) -> list[Schema]:
    return [op for item in document.get("paths", {}).values() for op in item.values()]


def plain_parameters(document: Schema) -> None:
    """An optional query or header parameter as the string (or enum) it is, never null.

    FastAPI writes `str | None = None` as anyOf [string, null], with constraints given by
    json_schema_extra beside the anyOf; on the wire an absent parameter is absent, so the
    null branch only misleads clients and fuzzers.
    """
    for operation in _operations(document):
        for parameter in operation.get("parameters", []):
            schema = parameter.get("schema", {})
            branches = schema.get("anyOf")
            if not isinstance(branches, list):
                continue
            kept = [b for b in branches if b.get("type") != "null"]
            if len(kept) == 1 and len(kept) < len(branches):
                rest = {k: v for k, v in schema.items() if k != "anyOf"}
                parameter["schema"] = {**kept[0], **rest}


def error_bodies(document: Schema) -> None:
    """Every 422 is an ApiErrorBody like every other error (FastAPI's default says otherwise).

    FastAPI documents a 422 for every route with parameters, with its own body; ours map
    validation errors to {"error": {...}}, and a route whose parameters cannot fail (a bare
    path id) never answers 422 at all.
    """
    for operation in _operations(document):
        responses = operation.get("responses", {})
        content = responses.get("422", {}).get("content", {}).get("application/json", {})
        if content.get("schema", {}).get("$ref") == _SCHEMAS + "HTTPValidationError":
            del responses["422"]
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def body_limit(document: Schema) -> None:
    """Say how large a request body may be: a limit in bytes, which JSON Schema cannot state."""
    for operation in _operations(document):
        body = operation.get("requestBody")
        if body is not None:
            body["description"] = (
                f"At most {MAX_BODY_BYTES} bytes of JSON; a larger "
                "body is a 413 whatever the schema says of its fields."
            )


def refine(document: Schema, *, token: bool) -> Schema:
    """The document FastAPI made, turned into the contract (in place; returned)."""
    plain_parameters(document)
    error_bodies(document)
    body_limit(document)
    split_run_create(document["components"]["schemas"])
    if token:
        add_bearer_auth(document)
    return document
