"""Errors on the wire: what the API answers when it refuses (RFC 9457 problem documents,
as cloud.errors' domain errors are mapped in cloud.api.app) and how each route documents
the refusals it can give, so that the OpenAPI document names every status code.

A route lists its own with ``responses=problems(404, 409)``; a router whose every route
needs a token lists ``problems(401, 403)`` once. A 422 is documented by FastAPI for every
route that takes input (its list of fields); cloud.api.app adds the problem form, which
an :class:`~cloud.errors.Invalid` refusal takes.
"""

from __future__ import annotations

from typing import Any

PROBLEM = "application/problem+json"

#: The body of every refusal a domain error makes (and of a 422 that is one).
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["title", "status", "detail"],
    "properties": {
        "title": {"type": "string", "description": "the kind of refusal", "examples": ["Conflict"]},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "why, in words"},
    },
}

_WHY = {
    400: "refused: the service cannot do this here",
    401: "no bearer token, or its session has ended (logged out, password changed): log in",
    403: "the operator lacks the permission this needs",
    404: "not found, or outside the operator's scope",
    409: "refused by the current state of things (the detail says which)",
    413: "the request is too large",
    429: "too many failed logins: locked for a while (see Retry-After)",
    503: "a service outside this system (WeChat Pay) did not answer: try again",
}


def problems(*codes: int, why: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route or a router: each code as a problem document, described
    by ``why`` or by what the code means in this API."""
    said = why or {}
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        doc: dict[str, Any] = {
            "description": said.get(code, _WHY[code]),
            "content": {PROBLEM: {"schema": PROBLEM_SCHEMA}},
        }
        if code == 429:
            doc["headers"] = {
                "Retry-After": {"description": "seconds", "schema": {"type": "integer"}}
            }
        out[code] = doc
    return out


def with_problem_422(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (an OpenAPI document) with each 422 answerable as a problem as well as
    FastAPI's list of fields: a value well-formed but refused is :class:`Invalid`."""
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            invalid = operation.get("responses", {}).get("422")
            if invalid is not None:
                invalid.setdefault("content", {}).setdefault(PROBLEM, {"schema": PROBLEM_SCHEMA})
                if invalid.get("description") == "Validation Error":  # FastAPI's own
                    invalid["description"] = "invalid input: the fields named, or a value refused"
    return doc
