"""A loopback TCP relay in front of PostgreSQL that reads what clients send, as RDS Proxy does,
and records every request that would pin the client's session to one server connection.

RDS Proxy pins a session on: a startup ``options`` parameter, a session ``SET``/``set_config``
(``SET LOCAL`` only for its transaction), a named (server-side) prepared statement, a
session-level advisory lock, ``LISTEN``, ``DECLARE ... WITH HOLD`` and temporary tables
(https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/rds-proxy-pinning.html).
The relay parses only the client-to-server direction of the wire protocol (v3) and forwards
every byte unchanged in both directions.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
from dataclasses import dataclass, field

_SESSION_SQL = re.compile(
    r"\b(pg_(try_)?advisory_lock(_shared)?\s*\("           # session advisory locks (not the _xact_ ones)
    r"|set_config\s*\([^)]*,\s*false\s*\)"                 # set_config(..., is_local => false)
    r"|listen\s+\w|declare\s+\w+[^;]*\bwith\s+hold"
    r"|create\s+(temp|temporary)\s+(table|sequence|view))", re.IGNORECASE)
_SESSION_SET = re.compile(r"^\s*(set\s+(?!local\b|transaction\b)(session\s+)?\w|reset\s+\w|prepare\s+\w|discard\s+\w)",
                          re.IGNORECASE)
_PROTOCOL_3 = 196608


@dataclass
class PinningProxy:
    """``PinningProxy(upstream_port).start()``; clients connect to ``.port``; ``.pins`` lists
    (role, reason, text) of every pinning request seen; ``.parses`` counts Parse messages."""

    upstream_port: int
    upstream_host: str = "127.0.0.1"
    pins: list[tuple[str, str, str]] = field(default_factory=list)
    statements: dict[str, int] = field(default_factory=dict)
    port: int = 0
    _server: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> PinningProxy:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="pinning-proxy").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.upstream_host, self.upstream_port))
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
            threading.Thread(target=self._inspect, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _pin(self, role: str, reason: str, text: str) -> None:
        with self._lock:
            self.pins.append((role, reason, text[:200]))

    def _count(self, role: str) -> None:
        with self._lock:
            self.statements[role] = self.statements.get(role, 0) + 1

    def _inspect(self, client: socket.socket, upstream: socket.socket) -> None:
        buf = bytearray()
        role = "?"

        def read(n: int) -> bytes:
            while len(buf) < n:
                data = client.recv(65536)
                if not data:
                    raise EOFError
                upstream.sendall(data)
                buf.extend(data)
            out = bytes(buf[:n])
            del buf[:n]
            return out

        try:
            while True:  # SSL/GSS requests, then the startup message (no type byte)
                length = struct.unpack("!I", read(4))[0]
                body = read(length - 4)
                if struct.unpack("!I", body[:4])[0] == _PROTOCOL_3:
                    parts = body[4:].split(b"\0")
                    params = dict(zip(parts[0::2], parts[1::2], strict=False))
                    role = params.get(b"user", b"?").decode()
                    if b"options" in params:
                        self._pin(role, "startup options", params[b"options"].decode())
                    break
            while True:
                kind = read(1)
                length = struct.unpack("!I", read(4))[0]
                body = read(length - 4)
                if kind == b"Q":
                    self._sql(role, body[:-1].decode(errors="replace"))
                elif kind == b"P":
                    name, _, rest = body.partition(b"\0")
                    if name:
                        self._pin(role, "server-side prepared statement", rest.partition(b"\0")[0].decode())
                    self._sql(role, rest.partition(b"\0")[0].decode(errors="replace"))
        except (EOFError, OSError):
            return

    def _sql(self, role: str, text: str) -> None:
        self._count(role)
        for statement in text.split(";"):
            if _SESSION_SET.search(statement) or _SESSION_SQL.search(statement):
                self._pin(role, "session state", statement.strip())
