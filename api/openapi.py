"""The OpenAPI document: every status each operation answers, and parameters as strict as the server.

FastAPI documents each operation's success answer, its parameters (their schemas come from
`api.schemas`, which states the domain's rules) and its Bearer scheme (`api.deps`: the operator
token, or a key and the scope it needs). This module adds, in one place, what FastAPI cannot know:
the error answers, all `application/problem+json` (`api.problems`), read off each operation's
scheme and input, plus a short table of refusals particular to a route; their headers; the scopes
of the running catalog; and the forward-auth headers, which `/v1/auth` requires (400 without them)
but reads itself.

Not documented: 405 (a path asked with a method it does not serve; `Allow` names those it does) and
500, which only a bug answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.deps import api_key, operator_token
from api.forwarded_path import FORWARDED_URI_PATTERN
from api.problems import PROBLEM_JSON
from api.schemas import SCOPE_MARKER, Problem
from domain.scopes import ScopeCatalog

OPERATOR = operator_token.scheme_name
KEY = api_key.scheme_name
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _header(description: str, schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


TEXT = {"type": "string"}
RATE_LIMIT = {
    "RateLimit-Policy": _header('the key\'s limits, e.g. `"minute";q=60;w=60, "day";q=10000;w=86400`', TEXT),
    "RateLimit": _header('what remains of each window and when it resets, e.g. `"minute";r=59;t=42`', TEXT),
}
RETRY_AFTER = {"Retry-After": _header("seconds to wait before trying again", {"type": "integer", "minimum": 0})}
# The headers every answer of a status carries.
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": _header('`Bearer error="invalid_token"`', TEXT)},
    403: {"WWW-Authenticate": _header('`Bearer error="insufficient_scope", scope="<the scope needed>"`', TEXT)},
    429: RETRY_AFTER,
    503: RETRY_AFTER,
}

BAD_KEY = "the presented key is missing, malformed, unknown, revoked, suspended or expired (`code` says which)"
UNAVAILABLE = "a dependency (the store, Redis) is unreachable, or the read models are not built yet: retry shortly"
INVALID = "the request is not valid (`errors` says where), or a rule of the domain refused it"

# Refusals particular to a route, beyond those read off its scheme and its input.
ROUTE_ERRORS: dict[tuple[str, str], dict[int, str]] = {
    ("PUT", "/v1/workspaces/{ws}/plan"): {409: "concurrent changes to the workspace"},
    ("POST", "/v1/workspaces/{ws}/keys"): {409: "the workspace holds 50 live keys already"},
    ("POST", "/v1/workspaces/{ws}/keys/import"): {
        409: "a key holds this secret already, or the workspace holds 50 live keys already"
    },
    ("POST", "/v1/workspaces/{ws}/keys/{key}/scopes"): {409: "the key is revoked"},
    ("PUT", "/v1/workspaces/{ws}/keys/{key}/scopes"): {
        409: "the key is revoked, or the set drops `admin` from the workspace's last active admin key"
    },
    ("DELETE", "/v1/workspaces/{ws}/keys/{key}/scopes/{scope}"): {
        409: "the key is revoked, or the scope is `admin` and this is the workspace's last active admin key"
    },
    ("POST", "/v1/workspaces/{ws}/keys/{key}/rotate"): {409: "the key is revoked"},
    ("POST", "/v1/workspaces/{ws}/keys/{key}/revoke"): {
        409: "the key is revoked already, or it is the workspace's last active admin key"
    },
    ("POST", "/v1/workspaces/{ws}/keys/{key}/suspend"): {
        409: "the key is revoked, or it is the workspace's last active admin key"
    },
    ("POST", "/v1/workspaces/{ws}/keys/{key}/resume"): {409: "the key is revoked"},
    ("GET", "/v1/audit/checkpoint"): {404: "no checkpoint has been made yet"},
    ("GET", "/v1/audit/proof/inclusion"): {
        404: "no checkpoint has been made yet, `tree_size` exceeds the latest checkpoint's size, or no event of "
        "that tree is at that position",
    },
    ("GET", "/v1/audit/proof/consistency"): {
        404: "no checkpoint has been made yet, `to` exceeds the latest checkpoint's size, or `from` exceeds `to`",
    },
    ("POST", "/v1/workspaces/{ws}/webhooks"): {
        409: "the workspace has 10 webhooks already, or concurrent changes to it",
        422: INVALID + "; or the URL is not https, carries credentials, or names or resolves to a private, "
        "loopback, link-local or reserved address",
    },
    ("GET", "/v1/workspaces/{ws}/webhooks/{webhook}"): {404: "the workspace is not the key's, or no such webhook"},
    ("DELETE", "/v1/workspaces/{ws}/webhooks/{webhook}"): {
        404: "the workspace is not the key's, or no such webhook",
        409: "concurrent changes to the workspace",
    },
    ("GET", "/v1/workspaces/{ws}/webhooks/{webhook}/deliveries"): {
        404: "the workspace is not the key's, or no such webhook"
    },
    ("POST", "/v1/workspaces/{ws}/webhooks/{webhook}/deliveries/{position}/retry"): {
        404: "the workspace is not the key's, or no such webhook, or no delivery at that position"
    },
    ("PATCH", "/v1/workspaces/{ws}/keys/{key}"): {409: "the key is revoked"},
    ("PUT", "/v1/workspaces/{ws}/keys/{key}/limits"): {409: "the key is revoked"},
    ("PUT", "/v1/workspaces/{ws}/keys/{key}/credits"): {409: "the key is revoked"},
    ("DELETE", "/v1/workspaces/{ws}/keys/{key}/limits"): {409: "the key is revoked"},
    ("GET", "/readyz"): {503: "starting: the store is being opened, or the read models are catching up"},
    ("POST", "/v1/verify"): {429: "too many unknown keys came from this address this minute"},
    ("GET", "/v1/auth"): {
        400: "a forward-auth header is missing, or the URI names no resource, or holds an encoded separator that "
        "would change it",
        401: BAD_KEY,
        403: "the key lacks the scope the forwarded request needs (401 where KEYLEDGER_INSUFFICIENT_SCOPE_STATUS=401)",
        429: "the key used its requests of the minute or of the day (`RATE_LIMITED`), or its credits "
        "(`USAGE_EXCEEDED`: `Retry-After` only when a refill is due), or too many unknown keys came from this address",
    },
}
# Routes whose Bearer scheme their handler reads itself (the hot path takes no dependency).
# The audit log's reads take the operator token or an admin key of any workspace (`api.deps.require_admin_or_operator`).
_ADMIN_OR_OPERATOR: list[dict[str, list[str]]] = [{OPERATOR: []}, {KEY: ["admin"]}]
ROUTE_SECURITY: dict[tuple[str, str], list[dict[str, list[str]]]] = {
    ("GET", "/v1/auth"): [{KEY: []}],
    ("GET", "/v1/audit/checkpoint"): _ADMIN_OR_OPERATOR,
    ("GET", "/v1/audit/proof/inclusion"): _ADMIN_OR_OPERATOR,
    ("GET", "/v1/audit/proof/consistency"): _ADMIN_OR_OPERATOR,
}
# Headers of answers that are not errors.
SUCCESS_HEADERS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/v1/auth"): {
        **RATE_LIMIT,
        "X-Keyledger-Key-Id": _header("the presented key's id", {"type": "string", "format": "uuid"}),
        "X-Keyledger-Workspace-Id": _header("its workspace's id", {"type": "string", "format": "uuid"}),
    },
}
# Extra headers of some error answers: a key over its limit also gets its limits (a guessing address does not).
ERROR_HEADERS: dict[tuple[str, str, int], dict[str, Any]] = {
    ("GET", "/v1/auth", 429): {
        name: {**header, "required": False} for name, header in (RATE_LIMIT | RETRY_AFTER).items()
    },
}
FORWARDED_HEADERS = {
    "x-forwarded-method": (
        "the method of the request the gateway asks about: GET and HEAD need `read:<resource>`, others `write:`",
        {"type": "string", "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},  # an RFC 9110 token
    ),
    "x-forwarded-uri": (
        "the request's URI as the gateway received it; the first segment of its path, normalised as the backend "
        "will serve it (escaped unreserved characters decoded, dot segments removed), names the resource. The "
        "pattern admits the URIs whose first segment no normalisation empties or changes.",
        {"type": "string", "pattern": FORWARDED_URI_PATTERN},
    ),
}


def operation_errors(method: str, path: str, operation: dict[str, Any]) -> dict[int, str]:
    """The error statuses an operation answers, each with what it means there."""
    errors: dict[int, str] = {}
    for requirement in operation.get("security", []):
        for scheme, scopes in requirement.items():
            if scheme == OPERATOR:
                errors[401] = "the operator token is missing or wrong"
            elif scheme == KEY:
                errors[401] = BAD_KEY
                for scope in scopes:  # a key of the path's workspace, holding `scope`
                    errors[403] = f"the key lacks `{scope}` (401 where KEYLEDGER_INSUFFICIENT_SCOPE_STATUS=401)"
    parameters = operation.get("parameters", [])
    named = {p["name"] for p in parameters if p["in"] == "path"}
    if "ws" in named:  # a key of another workspace learns only that the workspace was not found
        key = ", or it holds no such key" if "key" in named else ""
        errors[404] = f"the workspace is not the key's{key}" if 403 in errors else f"no such workspace{key}"
    if "requestBody" in operation:
        errors[400] = "the body is not JSON"
    if "requestBody" in operation or any(p["in"] in ("path", "query") for p in parameters):
        errors[422] = INVALID
    if path.startswith("/v1/"):
        errors[503] = UNAVAILABLE
    errors.update(ROUTE_ERRORS.get((method, path), {}))
    return dict(sorted(errors.items()))


def _link_scopes(node: Any) -> Any:
    """`node` with every schema marked as a scope replaced by a reference to the `Scope` component."""
    if isinstance(node, dict):
        if node.get(SCOPE_MARKER):
            return {"$ref": "#/components/schemas/Scope"}
        return {key: _link_scopes(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_link_scopes(value) for value in node]
    return node


def _document_operation(method: str, path: str, operation: dict[str, Any]) -> None:
    route = (method, path)
    if route in ROUTE_SECURITY:
        operation["security"] = ROUTE_SECURITY[route]
    for parameter in operation.get("parameters", []):
        forwarded = FORWARDED_HEADERS.get(parameter["name"].lower()) if parameter["in"] == "header" else None
        if forwarded is not None:
            parameter["required"] = True
            parameter["description"], parameter["schema"] = forwarded
    responses = operation["responses"]
    responses.pop("422", None)  # FastAPI's, in its own shape; documented below where it happens
    for status, response in responses.items():
        if status.startswith("2") and route in SUCCESS_HEADERS:
            response["headers"] = SUCCESS_HEADERS[route]
    for status, description in operation_errors(method, path, operation).items():
        response = {"description": description, "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}}}
        headers = HEADERS.get(status, {}) | ERROR_HEADERS.get((method, path, status), {})
        if headers:
            response["headers"] = headers
        responses[str(status)] = response


def document(app: FastAPI, catalog: ScopeCatalog) -> dict[str, Any]:
    """The OpenAPI document of `app`, its scopes those of `catalog`."""
    schema: dict[str, Any] = _link_scopes(
        get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    )
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    schemas["Scope"] = {
        "type": "string",
        "enum": sorted(catalog.all_scopes()),
        "description": "`admin`, or `read:` or `write:` and a resource of this deployment's catalog",
    }
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            _document_operation(method.upper(), path, operation)
    return schema


def install(app: FastAPI, catalog: Callable[[], ScopeCatalog]) -> None:
    """Serve `document(app, catalog())` as the app's OpenAPI document (built at its first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, catalog())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
