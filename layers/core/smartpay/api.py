"""The edges every API function shares: its resolver, its Lambda entry, its replies.

* :func:`make_resolver` — Powertools' REST resolver with one mapping of errors to problem replies.
* :func:`api_handler` — the one Lambda entry: logger (correlation id = API Gateway request id),
  metrics, tracer, the body limit, then the resolver (and, for a function that takes them, direct
  invocations that did not come through API Gateway).
* :func:`json_reply` — a JSON reply that says when it is an idempotent replay.
* :func:`header` — a header by any of its names, case-insensitively (Powertools' event headers).

Replies to errors are RFC 9457 problem documents (``application/problem+json``) that say what
was wrong and where. Validation errors (pydantic) become 422 in the one format of
:mod:`smartpay.validation`, except a body that is not JSON at all, which is 400. Unexpected
exceptions become a 500 that carries the request id and nothing else; the traceback goes to the
(masked) log only.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.data_classes.common import CaseInsensitiveDict

from smartpay import validation
from smartpay.errors import ProblemError
from smartpay.observability import logger, metrics, tracer

PROBLEM_JSON = "application/problem+json"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    # Extension members first: they can never overwrite the standard members (RFC 9457 §3.1).
    body: dict[str, Any] = {
        **(extra or {}),
        "type": f"https://smartpay.ketchup.na/problems/{HTTPStatus(status).phrase.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return Response(
        status_code=status,
        content_type=PROBLEM_JSON,
        body=json.dumps(body),
        headers=headers or {},
    )


def json_reply(status: int, body: Any, *, replayed: bool = False) -> Response[Any]:
    """A JSON reply; an idempotent replay of an earlier one says so (``Idempotent-Replayed: true``)."""
    return Response(status_code=status, content_type="application/json", body=body,
                    headers={"Idempotent-Replayed": "true"} if replayed else {})


def header(headers: Mapping[str, str] | None, *names: str) -> str | None:
    """The first of ``names`` present and not blank, whatever its casing (Powertools' event headers
    are a case-insensitive dict already; any other mapping is wrapped in one)."""
    found = headers if isinstance(headers, CaseInsensitiveDict) else CaseInsensitiveDict(headers or {})
    for name in names:
        value = found.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


def validation_problem(exc: RequestValidationError) -> Response:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem(400, "Malformed request", "The request body is not valid JSON.",
                       errors=[{"location": "body", "message": "invalid JSON"}])
    missing_headers = [e for e in errors if e.get("type") == "missing" and tuple(e.get("loc", ()))[:1] == ("header",)]
    if missing_headers and len(missing_headers) == len(errors):
        names = ", ".join("-".join(part.capitalize() for part in str(e["loc"][-1]).split("-"))
                          for e in missing_headers)
        return problem(400, "Malformed request", f"A required header is missing: {names}.",
                       errors=[{"location": ".".join(str(x) for x in e["loc"]), "message": "required", "type": "missing"}
                               for e in missing_headers])
    details = validation.details(errors)
    where = ", ".join(d["location"] for d in details)
    return problem(422, "Validation failed", f"The request is invalid at: {where}.", errors=details)


def problem_response(description: str) -> dict[str, Any]:
    """An OpenAPI response entry for a problem reply (routes that declare more than the common ones)."""
    return {"description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def make_resolver() -> APIGatewayRestResolver:
    """A resolver with validation (OpenAPI) and the shared problem mapping."""
    app = APIGatewayRestResolver(enable_validation=True)

    @app.exception_handler(RequestValidationError)
    def _validation(exc: RequestValidationError) -> Response:
        return validation_problem(exc)

    @app.exception_handler(ProblemError)
    def _problem(exc: ProblemError) -> Response:
        if exc.status >= 500:
            logger.warning("dependency problem", extra={"status": exc.status, "detail": exc.detail})
        return problem(exc.status, exc.title, exc.detail, errors=exc.errors, headers=exc.headers,
                       extra=exc.extra)

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error")
        request_id = app.current_event.request_context.request_id if app.current_event else None
        return problem(500, "Internal error", "An unexpected error occurred; it has been logged.",
                       extra={"request_id": request_id})

    @app.not_found
    def _not_found(exc: Exception) -> Response:
        return problem(404, "Not found", "No such route.")

    return app


def precheck(event: dict[str, Any], max_body_bytes: int) -> Response | None:
    """Refuse, before any parsing, a body over the limit (413) or one that is not JSON (415)."""
    request = APIGatewayProxyEvent(event)
    body = request.body or ""
    size = len(body.encode() if isinstance(body, str) else body)
    if request.is_base64_encoded:
        size = size * 3 // 4
    if size > max_body_bytes:
        return problem(413, "Payload too large", f"The body is {size} bytes; the limit is {max_body_bytes}.")
    if size:
        content_type = (request.headers.get("content-type") or "application/json").split(";")[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            return problem(415, "Unsupported media type",
                           f"Send the body as application/json, not {content_type}.",
                           errors=[{"location": "header.content-type", "message": "must be application/json"}])
        if request.is_base64_encoded:
            try:
                base64.b64decode(body, validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return problem(400, "Malformed request", "The request body is not UTF-8 JSON.",
                               errors=[{"location": "body", "message": "invalid UTF-8"}])
    return None


def resolve(app: APIGatewayRestResolver, event: dict[str, Any], context: Any, *,
            max_body_bytes: int = 64 * 1024) -> dict[str, Any]:
    """Precheck, then route. Every API function's handler ends with this call."""
    refused = precheck(event, max_body_bytes)
    if refused is not None:
        return {
            "statusCode": refused.status_code,
            "headers": {"Content-Type": PROBLEM_JSON},
            "body": refused.body,
            "isBase64Encoded": False,
        }
    return app.resolve(event, context)


DirectHandler = Callable[[dict[str, Any], Any], Any]


def is_api_event(event: Any) -> bool:
    """An API Gateway proxy event (every one carries ``requestContext``); anything else was invoked directly."""
    return isinstance(event, dict) and "requestContext" in event


def api_handler(app: APIGatewayRestResolver, *, max_body_bytes: int,
                direct: DirectHandler | None = None) -> Callable[[dict[str, Any], Any], Any]:
    """The Lambda entry of an API function: the one decorator stack (logger with the API Gateway
    request id as correlation id, metrics, tracer), then :func:`resolve` with the body limit.

    ``direct`` takes the events that did not come through API Gateway (a typed internal event,
    see :mod:`smartpay.internal`); without it such an event goes to the resolver like any other.
    """

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
    @metrics.log_metrics
    @tracer.capture_lambda_handler
    def lambda_handler(event: dict[str, Any], context: Any) -> Any:
        if direct is not None and not is_api_event(event):
            return direct(event, context)
        return resolve(app, event, context, max_body_bytes=max_body_bytes)

    return lambda_handler


def require_scope(app: APIGatewayRestResolver, scope: str) -> str:
    """Defence in depth behind the authorizer's policy: the caller's principal, if it holds ``scope``."""
    from smartpay.auth import scopes_from_context
    from smartpay.errors import Forbidden

    context = app.current_event.request_context.authorizer.raw_event if app.current_event else {}
    if scope not in scopes_from_context(context):
        raise Forbidden(f"This API key lacks the scope {scope!r}.")
    return str(context.get("principal") or context.get("principalId") or "unknown")


def caller(app: APIGatewayRestResolver) -> tuple[str, str]:
    """(principal, key id) of the caller, as the authorizer named them (for audit and four eyes)."""
    context = app.current_event.request_context.authorizer.raw_event if app.current_event else {}
    principal = str(context.get("principal") or context.get("principalId") or "unknown")
    return principal, str(context.get("keyId") or principal)
