"""API Gateway REST (v1) proxy events, built one way for the gateway, tests and saved events."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

ACCOUNT_ID = "123456789012"


def api_event(method: str, raw_path: str, *, resource: str | None = None,
              headers: list[tuple[str, str]] | dict[str, str] | None = None, body: bytes | str | None = None,
              path_parameters: dict[str, str] | None = None, authorizer: dict[str, Any] | None = None,
              stage: str = "local", source_ip: str = "127.0.0.1", request_id: str | None = None) -> dict[str, Any]:
    split = urlsplit(raw_path)
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    multi_headers: dict[str, list[str]] = {}
    for key, value in pairs:
        multi_headers.setdefault(key, []).append(value)
    query = parse_qs(split.query, keep_blank_values=True)
    raw = body.encode() if isinstance(body, str) else (body or b"")
    try:
        text, b64 = raw.decode("utf-8"), False
    except UnicodeDecodeError:
        text, b64 = base64.b64encode(raw).decode(), True
    now = datetime.now(UTC)
    request_id = request_id or str(uuid.uuid4())
    resource = resource or split.path
    context: dict[str, Any] = {
        "resourceId": "local",
        "resourcePath": resource,
        "httpMethod": method,
        "extendedRequestId": request_id,
        "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "path": f"/{stage}{split.path}",
        "accountId": ACCOUNT_ID,
        "protocol": "HTTP/1.1",
        "stage": stage,
        "domainPrefix": "127",
        "requestTimeEpoch": int(now.timestamp() * 1000),
        "requestId": request_id,
        "identity": {"sourceIp": source_ip,
                     "userAgent": next((v[-1] for k, v in multi_headers.items() if k.lower() == "user-agent"),
                                       None)},
        "domainName": "127.0.0.1",
        "apiId": "local",
    }
    if authorizer is not None:
        context["authorizer"] = authorizer
    return {
        "resource": resource,
        "path": split.path,
        "httpMethod": method,
        "headers": {k: v[-1] for k, v in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "requestContext": context,
        "body": text if raw else None,
        "isBase64Encoded": b64,
    }


def operator_authorizer(scopes: str = "beneficiaries:read reconcile:run vouchers:read vouchers:write") -> dict:
    return {"principalId": "operator", "principal": "operator", "keyId": "operator-local", "scopes": scopes}


def buffr_authorizer() -> dict:
    return {"principalId": "buffr", "principal": "buffr", "keyId": "buffr-local", "scopes": "beneficiaries:read"}
