"""A Docker-free Lambda runtime: each function runs in its own worker processes.

Like Lambda, a worker handles one event at a time, keeps its module state warm between
events, gets a context whose deadline is the function's Timeout, and is killed (and replaced
on the next event) when it runs over. Concurrency per function is bounded, like reserved
concurrency; callers wait briefly for a free worker and are throttled after that.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import multiprocessing
import os
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from smartpay_tools import PROJECT_ROOT
from smartpay_tools.local.send_trace import ENV as SEND_TRACE_ENV


@dataclass
class FakeLambdaContext:
    """The attributes Powertools and handlers read from a real LambdaContext."""

    function_name: str
    memory_limit_in_mb: int
    aws_request_id: str
    deadline_ms: float
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:af-south-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(int(self.deadline_ms - time.time() * 1000), 0)


class InvocationError(Exception):
    def __init__(self, kind: str, payload: dict[str, Any]) -> None:
        super().__init__(payload.get("errorMessage", kind))
        self.kind = kind  # "error" | "timeout" | "crash" | "throttled"
        self.payload = payload


def _worker_main(conn: Connection, code_dir: str, layer_dirs: list[str], handler: str,
                 env: dict[str, str], name: str, memory: int, log_path: str | None = None) -> None:
    send_trace = os.environ.get(SEND_TRACE_ENV)  # a benchmark's, not the function's (cleared below)
    os.environ.clear()
    os.environ.update(env)
    # Function logs go to stderr, as with `sam local` (stdout stays clean for results), or all of
    # them to the function's log file, one line per write so that workers' lines never interleave.
    sys.stdout.flush()
    sys.stderr.flush()
    if log_path:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log_fd, sys.stderr.fileno())
        os.close(log_fd)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # One write(2) per line (print writes a line and its newline separately otherwise).
    sys.stdout = sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False), 1 << 20),
                                               encoding="utf-8", errors="backslashreplace", line_buffering=True)
    project = str(PROJECT_ROOT)
    # Only the function's code, its layers and the installed packages: like /var/task + /opt/python.
    sys.path[:] = [code_dir, *layer_dirs] + [
        p for p in sys.path if p and not p.startswith(project + os.sep + "functions")
        and not p.startswith(project + os.sep + "layers")
    ]
    started = time.perf_counter()
    try:
        if send_trace:
            from smartpay_tools.local import send_trace as trace

            trace.install(send_trace)
        module_name, func_name = handler.rsplit(".", 1)
        func = getattr(importlib.import_module(module_name), func_name)
    except BaseException as exc:  # init error: report and die, as Lambda does
        conn.send(("init_error", {"errorType": type(exc).__name__, "errorMessage": str(exc),
                                  "stackTrace": traceback.format_exc().splitlines()}))
        return
    conn.send(("ready", {"init_ms": (time.perf_counter() - started) * 1000}))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        event, request_id, deadline_ms = message
        context = FakeLambdaContext(name, memory, request_id, deadline_ms,
                                    log_group_name=f"/aws/lambda/{name}")
        try:
            result = func(event, context)
            conn.send(("ok", json.dumps(result, default=str)))
        except Exception as exc:
            conn.send(("error", {"errorType": type(exc).__name__, "errorMessage": str(exc),
                                 "stackTrace": traceback.format_exc().splitlines()}))


class _Worker:
    def __init__(self, spec: Any, env: dict[str, str], layer_dirs: list[Path], log_path: Path | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main,
            args=(child, str(spec.code_uri), [str(p) for p in layer_dirs], spec.handler, env, spec.name,
                  spec.memory, str(log_path) if log_path else None),
            daemon=True,
            name=f"lambda-{spec.logical_id}",
        )
        self.process.start()
        child.close()
        self.ready = False
        self.init_ms: float | None = None

    def wait_ready(self, timeout: float) -> None:
        if self.ready:
            return
        if not self.conn.poll(timeout):
            self.kill()
            raise InvocationError("timeout", {"errorMessage": "init timed out"})
        kind, payload = self.conn.recv()
        if kind != "ready":
            self.kill()
            raise InvocationError("error", payload)
        self.ready = True
        self.init_ms = payload["init_ms"]

    def invoke(self, event: dict[str, Any], request_id: str, timeout_s: float) -> Any:
        deadline_ms = time.time() * 1000 + timeout_s * 1000
        self.conn.send((event, request_id, deadline_ms))
        if not self.conn.poll(timeout_s + 0.5):
            self.kill()
            raise InvocationError("timeout", {"errorType": "Sandbox.Timedout",
                                              "errorMessage": f"Task timed out after {timeout_s:.2f} seconds"})
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            self.kill()
            raise InvocationError("crash", {"errorType": "Runtime.ExitError",
                                            "errorMessage": "the function process exited"}) from None
        if kind == "ok":
            return json.loads(payload)
        raise InvocationError("error", payload)

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(None)
        self.process.join(timeout=5)
        self.kill()


class FunctionPool:
    """Warm workers for one function, at most ``max_concurrency`` at once; their logs go to
    ``log_path`` when given, else to stderr."""

    def __init__(self, spec: Any, env: dict[str, str], layer_dirs: list[Path], *,
                 max_concurrency: int = 4, queue_timeout_s: float = 30.0, log_path: Path | None = None) -> None:
        self.spec = spec
        self.log_path = log_path
        self.env = env
        self.layer_dirs = layer_dirs
        self.max_concurrency = max_concurrency
        self.queue_timeout_s = queue_timeout_s
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self.invocations = 0
        self.cold_starts = 0

    def _acquire(self) -> _Worker:
        deadline = time.monotonic() + self.queue_timeout_s
        with self._cond:
            while True:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker
                    self._count -= 1
                if self._count < self.max_concurrency:
                    self._count += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise InvocationError("throttled", {"errorType": "TooManyRequestsException",
                                                        "errorMessage": "Rate Exceeded."})
                self._cond.wait(remaining)
        try:
            worker = _Worker(self.spec, self.env, self.layer_dirs, self.log_path)
            self.cold_starts += 1
            return worker
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker, healthy: bool) -> None:
        with self._cond:
            if healthy and worker.alive():
                self._idle.append(worker)
            else:
                self._count -= 1
            self._cond.notify()

    def invoke(self, event: dict[str, Any], request_id: str | None = None) -> Any:
        worker = self._acquire()
        healthy = False
        try:
            worker.wait_ready(timeout=max(self.spec.timeout, 30))
            self.invocations += 1
            result = worker.invoke(event, request_id or str(uuid.uuid4()), float(self.spec.timeout))
            healthy = True
            return result
        except InvocationError as exc:
            healthy = exc.kind == "error" and worker.alive()
            raise
        finally:
            self._release(worker, healthy)

    def shutdown(self) -> None:
        with self._cond:
            workers, self._idle = self._idle, []
        for worker in workers:
            worker.stop()
