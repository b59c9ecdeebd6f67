"""An API Gateway (REST, Lambda proxy v1) emulator for the template's routes.

Serves on 127.0.0.1:3000 like ``sam local start-api`` (no stage prefix in the path). For each
request it runs the template's REQUEST authorizer (with its identity-source check, its policy
and its result cache), builds the proxy event the function would get in AWS, and maps the
function's reply (or failure) the way API Gateway does.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from smartpay_tools.local.events import api_event
from smartpay_tools.local.lambda_runtime import InvocationError
from smartpay_tools.local.stack import LocalStack
from smartpay_tools.local.template import ACCOUNT_ID, ApiRoute

MAX_PAYLOAD = 10 * 1024 * 1024  # API Gateway's own request limit


@dataclass
class GatewayReply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _json_reply(status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> GatewayReply:
    headers = [("Content-Type", "application/json"), *(extra or {}).items()]
    return GatewayReply(status, headers, json.dumps(body).encode())


class Gateway:
    def __init__(self, stack: LocalStack, extra_routes: dict[str, Any] | None = None) -> None:
        self.stack = stack
        self.stage = stack.template.stage()
        self.routes: list[tuple[ApiRoute, str]] = [
            (route, logical_id) for logical_id, spec in stack.functions.items() for route in spec.routes
        ]
        # Literal paths win over parameterised ones, as in API Gateway.
        self.routes.sort(key=lambda r: (r[0].path.count("{"), -len(r[0].path)))
        self.default_authorizer, self.authorizers = stack.template.authorizers()
        self._auth_cache: dict[tuple[str, tuple[str, ...]], tuple[float, dict[str, Any]]] = {}
        self._cache_lock = threading.Lock()
        self.extra_routes = extra_routes or {}

    # --- routing --------------------------------------------------------------------------
    def match(self, method: str, path: str) -> tuple[ApiRoute, str, dict[str, str]] | None:
        """API Gateway's order: first the most specific resource the path matches, then that
        resource's method (exact before ANY). A method the resource lacks is not routed to a sibling
        resource (``GET /beneficiaries/verify`` never reaches ``GET /beneficiaries/{id}``): None,
        which the caller answers as API Gateway does, 403 MissingAuthenticationToken."""
        for route, _ in self.routes:
            found = route.regex.match(path)
            if found is None:
                continue
            methods = {r.method: logical_id for r, logical_id in self.routes if r.path == route.path}
            for wanted in (method, "ANY"):
                if wanted in methods:
                    chosen = next(r for r, _ in self.routes if r.path == route.path and r.method == wanted)
                    return chosen, methods[wanted], found.groupdict()
            return None
        return None

    def method_arn(self, method: str, path: str) -> str:
        return f"arn:aws:execute-api:{self.stack.region}:{ACCOUNT_ID}:local/{self.stage}/{method}{path}"

    # --- events ---------------------------------------------------------------------------
    def build_event(self, method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes,
                    route: ApiRoute, params: dict[str, str], source_ip: str) -> dict[str, Any]:
        return api_event(method, raw_path, resource=route.path, headers=headers, body=body,
                         path_parameters=params, stage=self.stage, source_ip=source_ip)

    # --- authorizer -----------------------------------------------------------------------
    def authorize(self, route: ApiRoute, event: dict[str, Any]) -> dict[str, Any] | GatewayReply:
        name = self.default_authorizer if route.authorizer == "default" else route.authorizer
        if name is None:
            return {}
        spec = self.authorizers[name]
        lowered = {k.lower(): v for k, v in (event["headers"] or {}).items()}
        identity = tuple(lowered.get(h, "") for h in spec.headers)
        if not all(identity):
            return _json_reply(401, {"message": "Unauthorized"})
        method_arn = self.method_arn(event["httpMethod"], event["path"])
        cache_key = (name, identity)
        with self._cache_lock:
            cached = self._auth_cache.get(cache_key)
        if cached and cached[0] > time.monotonic():
            result = cached[1]
        else:
            auth_event = {
                "type": "REQUEST",
                "methodArn": method_arn,
                **{k: event[k] for k in ("resource", "path", "httpMethod", "headers", "multiValueHeaders",
                                         "queryStringParameters", "multiValueQueryStringParameters",
                                         "pathParameters", "stageVariables", "requestContext")},
            }
            try:
                result = self.stack.invoke(spec.function, auth_event)
            except InvocationError as exc:
                if exc.payload.get("errorMessage") == "Unauthorized":
                    return _json_reply(401, {"message": "Unauthorized"})
                return _json_reply(500, {"message": None}, {"x-amzn-ErrorType": "AuthorizerConfigurationException"})
            if spec.ttl > 0:
                with self._cache_lock:
                    self._auth_cache[cache_key] = (time.monotonic() + spec.ttl, result)
        if not _policy_allows(result.get("policyDocument", {}), method_arn):
            return _json_reply(403, {"Message": "User is not authorized to access this resource"},
                               {"x-amzn-ErrorType": "AccessDeniedException"})
        return {"principalId": result.get("principalId"), **(result.get("context") or {})}

    # --- the whole request ----------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes,
               source_ip: str = "127.0.0.1") -> GatewayReply:
        path = urlsplit(raw_path).path
        if method == "GET":
            extra = self.extra_routes.get(path) or next(
                (fn for prefix, fn in self.extra_routes.items() if prefix.endswith("/") and path.startswith(prefix)),
                None)
            if extra is not None:
                return extra(path)
        if len(body) > MAX_PAYLOAD:
            return _json_reply(413, {"message": "Request Too Long"})
        matched = self.match(method, path)
        if matched is None:
            return _json_reply(403, {"message": "Missing Authentication Token"},
                               {"x-amzn-ErrorType": "MissingAuthenticationTokenException"})
        route, logical_id, params = matched
        event = self.build_event(method, raw_path, headers, body, route, params, source_ip)
        authorized = self.authorize(route, event)
        if isinstance(authorized, GatewayReply):
            return authorized
        if authorized:
            event["requestContext"]["authorizer"] = authorized
        try:
            result = self.stack.invoke(logical_id, event, event["requestContext"]["requestId"])
        except InvocationError as exc:
            if exc.kind == "throttled":
                return _json_reply(429, {"message": "Too Many Requests"})
            return _json_reply(502, {"message": "Internal server error"})
        return _proxy_reply(result)


def docs_routes() -> dict[str, Any]:
    """The API document and Swagger UI (assets from the swagger-ui-bundle package: no CDN needed)."""
    from swagger_ui_bundle import swagger_ui_path

    from smartpay_tools.local import openapi

    document: dict[str, bytes] = {}

    def spec(_: str) -> GatewayReply:
        if "doc" not in document:
            document["doc"] = openapi.render(openapi.build()).encode()
        return GatewayReply(200, [("Content-Type", "application/json")], document["doc"])

    def page(_: str) -> GatewayReply:
        return GatewayReply(200, [("Content-Type", "text/html; charset=utf-8")], openapi.SWAGGER_HTML.encode())

    def static(path: str) -> GatewayReply:
        name = path.rsplit("/", 1)[-1]
        asset = swagger_ui_path / name
        if name not in {"swagger-ui.css", "swagger-ui-bundle.js"} or not asset.is_file():
            return _json_reply(404, {"message": "Not Found"})
        kind = "text/css" if name.endswith(".css") else "application/javascript"
        return GatewayReply(200, [("Content-Type", kind)], asset.read_bytes())

    return {"/openapi.json": spec, "/docs": page, "/docs/static/": static}


def _policy_allows(policy: dict[str, Any], method_arn: str) -> bool:
    allowed = False
    for statement in policy.get("Statement", []):
        resources = statement.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        if any(fnmatch.fnmatchcase(method_arn, r) for r in resources):
            if statement.get("Effect") == "Deny":
                return False
            allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


def _proxy_reply(result: Any) -> GatewayReply:
    if not isinstance(result, dict) or "statusCode" not in result:
        return _json_reply(502, {"message": "Internal server error"})
    headers: list[tuple[str, str]] = []
    for key, value in (result.get("headers") or {}).items():
        headers.append((key, str(value)))
    for key, values in (result.get("multiValueHeaders") or {}).items():
        if key not in (result.get("headers") or {}):
            headers.extend((key, str(v)) for v in values)
    body = result.get("body") or ""
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    return GatewayReply(int(result["statusCode"]), headers, raw)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "SmartPayLocalGateway/1.0"
    gateway: Gateway

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and the
        # client's delayed ACK stall every keep-alive reply (measured: docs/performance.md).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.gateway.handle(self.command, self.path, list(self.headers.items()), body,
                                    self.client_address[0])
        self.send_response(reply.status, HTTPStatus(reply.status).phrase if reply.status in
                           HTTPStatus._value2member_map_ else "")
        for key, value in reply.headers:
            if key.lower() not in {"content-length", "connection", "transfer-encoding"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def __getattr__(self, name: str) -> Any:
        # Any method (TRACE, PROPFIND, ...) reaches the gateway, which answers as API Gateway does.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # access logs would carry paths only, but the functions already log each request


class GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A caller that hung up before its reply (its timeout; Buffr retries) is dropped quietly, as
        API Gateway drops it; any other error is printed as usual."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def serve(gateway: Gateway, host: str = "127.0.0.1", port: int = 3000) -> GatewayServer:
    handler = type("BoundHandler", (_Handler,), {"gateway": gateway})
    server = GatewayServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="gateway", daemon=True).start()
    return server
