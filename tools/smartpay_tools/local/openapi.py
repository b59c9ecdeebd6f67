"""One OpenAPI document for the whole API, generated from the functions' own resolvers.

Routes and their auth come from template.yaml; request/response schemas from each function's
Powertools resolver (pydantic models). Every operation also documents the problem replies the
platform can give (401/403 from the authorizer, 413/415 prechecks, 422 validation, 503 when a
dependency is down), so a schema-based fuzzer can hold the API to the whole contract.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from smartpay_tools import PROJECT_ROOT
from smartpay_tools.local.function_code import on_path
from smartpay_tools.local.template import Template

DOCUMENT = PROJECT_ROOT / "openapi.json"
TITLE = "Ketchup SmartPay API"
VERSION = "1.0.0"

PROBLEM_SCHEMA = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer", "minimum": 100, "maximum": 599},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "location": {"type": "string"}, "message": {"type": "string"}, "type": {"type": "string"}}}},
    },
    "required": ["title", "status", "detail"],
}
GATEWAY_MESSAGE = {"type": "object", "properties": {"message": {"type": ["string", "null"]},
                                                   "Message": {"type": "string"}}}

COMMON = {
    "400": "Malformed request (e.g. the body is not JSON, a required header is missing)",
    "404": "Not found",
    "409": "Conflict (e.g. a request with this idempotency key is in progress)",
    "413": "Body too large",
    "415": "Body is not application/json",
    "422": "Validation failed",
    "500": "Unexpected error (logged with the request id)",
    "503": "A dependency (database, idempotency store, Buffr) is unavailable; retry after Retry-After",
}
AUTH = {"401": "No API key, or an unknown one", "403": "The API key lacks the scope for this route"}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _gateway(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GatewayMessage"}}}}


def _load_handler(code_uri: Path, handler: str) -> Any:
    on_path(code_uri, *Template().layer_dirs())
    return importlib.import_module(handler.rsplit(".", 1)[0])


def build(template: Template | None = None) -> dict[str, Any]:
    template = template or Template()
    document: dict[str, Any] | None = None
    open_routes: set[tuple[str, str]] = set()
    for spec in sorted(template.functions().values(), key=lambda s: s.logical_id):
        if not spec.routes:
            continue
        open_routes |= {(r.method.lower(), r.path) for r in spec.routes if r.authorizer is None}
        module = _load_handler(spec.code_uri, spec.handler)
        part = json.loads(module.app.get_openapi_json_schema(title=TITLE, version=VERSION))
        # What a handler reads by hand (the webhook's signed body) it describes in openapi_operations().
        extras = getattr(module, "openapi_operations", dict)()
        for (method, path), extra in extras.items():
            operation = part["paths"][path][method]
            operation["parameters"] = [*operation.get("parameters", []), *extra.get("parameters", [])]
            operation.update({k: v for k, v in extra.items() if k != "parameters"})
        if document is None:
            document = part
            document.setdefault("paths", {})
            document.setdefault("components", {}).setdefault("schemas", {})
            continue
        for path, ops in part.get("paths", {}).items():
            document["paths"].setdefault(path, {}).update(ops)
        document["components"]["schemas"].update(part.get("components", {}).get("schemas", {}))
    assert document is not None, "no routes in template.yaml"
    document["info"] = {
        "title": TITLE, "version": VERSION,
        "description": "G2P voucher disbursement with the Buffr wallet. Send `x-api-key`; bodies are JSON. "
                       "Errors are RFC 9457 problem documents. A method a path does not list is answered "
                       "by API Gateway itself, as for a path that does not exist: 403 "
                       '{"message": "Missing Authentication Token"} (REST APIs never answer 405).',
    }
    document["servers"] = [{"url": "http://127.0.0.1:3000", "description": "local stack"}]
    for unused in ("HTTPValidationError", "ValidationError"):  # Powertools' default 422 body: replaced
        document["components"]["schemas"].pop(unused, None)
    document["components"]["schemas"]["Problem"] = PROBLEM_SCHEMA
    document["components"]["schemas"]["GatewayMessage"] = GATEWAY_MESSAGE
    document["components"]["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                   "description": "Partner/operator key; scopes decide the routes (buffr: beneficiaries:read)"},
    }
    document["security"] = [{"ApiKey": []}]
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            for code, text in COMMON.items():
                responses[code] = _problem(text)
            if (method, path) in open_routes:
                op["security"] = []
            else:
                for code, text in AUTH.items():
                    responses[code] = _gateway(text) if code == "401" else {
                        "description": text,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GatewayMessage"}},
                                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    return document


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def export(path: Path = DOCUMENT) -> Path:
    path.write_text(render(build()))
    return path


SWAGGER_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Ketchup SmartPay API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
"""
