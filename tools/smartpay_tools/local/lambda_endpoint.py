"""The Lambda Invoke API on loopback, so one local function can invoke another with boto3.

The reconcile function re-sends vouchers through the disburse function with
``lambda.invoke(FunctionName=…)``; in AWS that is IAM-authorised Lambda-to-Lambda. Locally, the
stack points each function's boto3 at this endpoint (``AWS_ENDPOINT_URL_LAMBDA``) and it runs the
named function in the stack's own worker pool, exactly as ``stack.invoke`` does. Only
``POST /2015-03-31/functions/{name}/invocations`` (RequestResponse or Event) is served.

Like IAM, it lets a caller invoke only what the template's policies allow. Each local function is
given its own endpoint URL, ``…/caller/<LogicalId>`` (:meth:`LambdaEndpoint.url_for`; the local
runner sets it as ``AWS_ENDPOINT_URL_LAMBDA``, the SAM env-vars file as ``LOCAL_LAMBDA_ENDPOINT_URL``),
as each deployed function has its own role; an invoke from a caller whose ``LambdaInvokePolicy``
does not name the target, or from no function at all, is refused (403 AccessDeniedException).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from smartpay_tools.local.lambda_runtime import InvocationError

_PATH = re.compile(r"^(?:/caller/(?P<caller>[A-Za-z0-9]+))?/2015-03-31/functions/(?P<name>[^/]+)/invocations$")


class LambdaEndpoint(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stack: Any, port: int) -> None:
        self.stack = stack
        super().__init__(("127.0.0.1", port), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, name="lambda-endpoint", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url_for(self, logical_id: str) -> str:
        """The endpoint URL one function's boto3 uses: the caller is part of the path."""
        return f"{self.url}/caller/{logical_id}"

    def start(self) -> LambdaEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: LambdaEndpoint

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        match = _PATH.match(self.path.split("?", 1)[0])
        if not match:
            self._reply(404, {"Type": "User", "message": f"no such Lambda API route {self.path}"})
            return
        name = match.group("name").rsplit(":", 1)[-1] if match.group("name").startswith("arn:") else match.group(
            "name")
        try:
            logical_id = self.server.stack.find_function(name)
        except KeyError:
            self._reply(404, {"Type": "User", "message": f"Function not found: {name}"},
                        {"x-amzn-errortype": "ResourceNotFoundException"})
            return
        caller = match.group("caller")
        if not self.server.stack.may_invoke(caller, logical_id):
            self._reply(403, {"Type": "User", "Message": f"{caller or 'an unknown caller'} is not authorized to "
                                                          f"perform lambda:InvokeFunction on {logical_id} (template.yaml)"},
                        {"x-amzn-errortype": "AccessDeniedException"})
            return
        length = int(self.headers.get("content-length") or 0)
        try:
            event = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._reply(400, {"Type": "User", "message": "payload is not JSON"},
                        {"x-amzn-errortype": "InvalidRequestContentException"})
            return
        if self.headers.get("x-amz-invocation-type") == "Event":
            threading.Thread(target=self._invoke, args=(logical_id, event), daemon=True).start()
            self._reply(202, {})
            return
        try:
            result = self.server.stack.invoke(logical_id, event)
        except InvocationError as exc:
            self._reply(200, exc.payload, {"x-amz-function-error": "Unhandled"})
            return
        self._reply(200, result, {"x-amz-executed-version": "$LATEST"})

    def _invoke(self, logical_id: str, event: dict[str, Any]) -> None:
        # Asynchronous: like Lambda, the caller never sees an error (the function's log does).
        with contextlib.suppress(InvocationError):
            self.server.stack.invoke(logical_id, event)
