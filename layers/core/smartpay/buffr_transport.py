"""The Buffr client's transport: HTTP/1.1 keep-alive connections over asyncio streams.

Buffr's API is small JSON requests and replies over HTTP/1.1, so the hot path is kept close
to the wire: the client hands over the request as prebuilt bytes, the reply head is split by
hand, and no per-call request/response objects are built. docs/performance.md has the figures
this was chosen by (against httpx, aiohttp and httpx-aiohttp, each beside a bare client).

What it keeps of a full client: an explicit connect timeout and a read timeout over the whole
exchange, TLS with certificate and host-name verification (the default context, or one given),
at most ``max_connections`` in use, and a reply over ``max_reply_bytes`` (1 MB) is refused as
soon as its size is known (Content-Length, chunk sizes, or bytes read) instead of buffered.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote, urlsplit

MAX_REPLY_BYTES = 1 << 20
_HEAD_LIMIT = 64 * 1024  # the reply's status line and headers together


class TransportError(Exception):
    """No usable reply: the connection failed, broke, or the reply was not HTTP/1.1."""


class TransportTimeout(TransportError):
    """The connect or the exchange ran past its timeout."""


class ReplyTooLarge(TransportError):
    """The reply's body is over the limit; it was not read (the connection is closed)."""

    def __init__(self, status: int, size: int | None, limit: int) -> None:
        super().__init__(f"reply over {limit} bytes refused" + (f" ({size} announced)" if size else ""))
        self.status = status


class Reply:
    """One HTTP reply: status, headers (lower-case names; parsed from the head on first use), body."""

    __slots__ = ("_head", "_headers", "body", "status")

    def __init__(self, status: int, headers: dict[str, str] | None, body: bytes, head: bytes = b"") -> None:
        self.status, self._headers, self.body, self._head = status, headers, body, head

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = _parse_headers(self._head)
        return self._headers

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body.decode())

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _parse_headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head[:-4].split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise TransportError("malformed header line")
        key = name.strip().lower().decode("latin-1")
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


class Origin:
    """Where requests go: scheme, host, port, base path, and the ``host`` header line they all carry."""

    __slots__ = ("host", "host_line", "path", "port", "tls")

    def __init__(self, base_url: str) -> None:
        split = urlsplit(base_url)
        if split.scheme not in {"http", "https"} or not split.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.tls = split.scheme == "https"
        self.host = split.hostname
        self.port = split.port or (443 if self.tls else 80)
        default = self.port == (443 if self.tls else 80)
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        self.path = quote(split.path.rstrip("/")).encode("ascii")
        self.host_line = f"host: {netloc if default else f'{netloc}:{self.port}'}\r\n".encode("ascii")


class StreamTransport:
    """HTTP/1.1 keep-alive over asyncio streams: a LIFO of idle connections, at most ``max_connections``.

    ``request(data, ...)`` sends ``data`` (a whole request: line, headers, body) and returns the
    :class:`Reply`. Raises :class:`TransportTimeout`, :class:`ReplyTooLarge` or
    :class:`TransportError`; a connection is reused only after a complete, keep-alive exchange.
    """

    def __init__(self, base_url: str, *, max_connections: int = 100, max_reply_bytes: int = MAX_REPLY_BYTES,
                 ssl_context: Any = None) -> None:
        self.origin = Origin(base_url)
        self.max_connections = max_connections
        self.max_reply_bytes = max_reply_bytes
        self._ssl = ssl_context
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots: asyncio.Semaphore | None = None

    def _tls(self) -> Any:
        if self._ssl is None:
            import ssl

            self._ssl = ssl.create_default_context()  # verifies the certificate chain and the host name
        return self._ssl

    async def _connect(self, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        idle = self._idle
        while idle:
            reader, writer = idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        origin = self.origin
        tls = self._tls() if origin.tls else None
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.open_connection(origin.host, origin.port, ssl=tls,
                                                     server_hostname=origin.host if tls else None,
                                                     limit=_HEAD_LIMIT)
        except TimeoutError:
            raise TransportTimeout("connect timed out") from None
        except OSError as exc:  # refused, unreachable, TLS verification failed (ssl.SSLError is an OSError)
            raise TransportError(f"connect failed: {exc}") from None

    async def request(self, data: bytes, *, connect_timeout: float, read_timeout: float) -> Reply:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        async with self._slots:
            reader, writer = await self._connect(connect_timeout)
            try:
                async with asyncio.timeout(read_timeout):
                    writer.write(data)
                    if writer.transport.get_write_buffer_size():
                        await writer.drain()
                    reply, reusable = await self._read_reply(reader)
            except TimeoutError:
                writer.close()
                raise TransportTimeout("read timed out") from None
            except TransportError:
                writer.close()
                raise
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                writer.close()
                raise TransportError(f"{type(exc).__name__}: {exc}") from None
            except BaseException:
                writer.close()
                raise
            if reusable:
                self._idle.append((reader, writer))
            else:
                writer.close()
            return reply

    async def _read_reply(self, reader: asyncio.StreamReader) -> tuple[Reply, bool]:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if head[:7] != b"HTTP/1." or head[8:9] != b" ":
                raise TransportError(f"not an HTTP/1.x reply: {head[:80]!r}")
            status = int(head[9:12])
            if status >= 200:
                break
            # 1xx (we never send Expect, but a server may still say 100 or 103): the real reply follows.
        lower = head.lower()
        if head[5:8] == b"1.1" and b"\r\ntransfer-encoding:" not in lower and b"\r\nconnection:" not in lower:
            # The common reply (HTTP/1.1, keep-alive, a Content-Length or none): found without parsing
            # every header; the rest are parsed only if someone asks (Retry-After on a retry).
            at = lower.find(b"\r\ncontent-length:")
            length = head[at + 17:head.index(b"\r\n", at + 17)] if at >= 0 else None
            headers = None
            reusable, chunked = True, False
        else:
            headers = _parse_headers(head)
            connection = headers.get("connection", "").lower()
            reusable = "close" not in connection and (head[5:8] == b"1.1" or "keep-alive" in connection)
            chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            length = headers.get("content-length")
        limit = self.max_reply_bytes
        if status in (204, 304):
            return Reply(status, headers, b"", head), reusable
        if chunked:
            return Reply(status, headers, await self._read_chunked(reader, status), head), reusable
        if length is not None:
            size = int(length.split(b"," if isinstance(length, bytes) else ",")[0])
            if size < 0:
                raise TransportError("negative content-length")
            if size > limit:
                raise ReplyTooLarge(status, size, limit)
            return Reply(status, headers, await reader.readexactly(size) if size else b"", head), reusable
        # Neither length nor chunks: the body runs to the end of the connection.
        parts, total = [], 0
        while chunk := await reader.read(65536):
            total += len(chunk)
            if total > limit:
                raise ReplyTooLarge(status, None, limit)
            parts.append(chunk)
        return Reply(status, headers, b"".join(parts), head), False

    async def _read_chunked(self, reader: asyncio.StreamReader, status: int) -> bytes:
        parts, total, limit = [], 0, self.max_reply_bytes
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                raise ReplyTooLarge(status, None, limit)
            chunk = await reader.readexactly(size + 2)
            if chunk[-2:] != b"\r\n":
                raise TransportError("malformed chunk")
            parts.append(chunk[:-2])

    async def aclose(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class HttpxTransport:
    """Runs the client's prebuilt requests through an httpx transport (tests: ``httpx.MockTransport``).

    Not on any deployed path: it exists so the client's retry policy can be tested without a
    network, and so the benchmarks can compare httpx-based transports on the same client.
    """

    def __init__(self, base_url: str, transport: Any, *, max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        import httpx

        self._httpx = httpx
        self._base = base_url.rstrip("/")
        self._transport = transport
        self.max_reply_bytes = max_reply_bytes

    async def request(self, data: bytes, *, connect_timeout: float, read_timeout: float) -> Reply:
        httpx = self._httpx
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        method, target, _ = lines[0].decode("ascii").split(" ", 2)
        headers = [tuple(v.strip() for v in line.split(b":", 1)) for line in lines[1:]]
        timeout = {"connect": connect_timeout, "read": read_timeout, "write": read_timeout, "pool": connect_timeout}
        request = httpx.Request(method, self._base + target, headers=headers, content=body,
                                extensions={"timeout": timeout})
        try:
            response = await self._transport.handle_async_request(request)
            try:
                content = await response.aread()
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise TransportTimeout(str(exc) or type(exc).__name__) from None
        except httpx.TransportError as exc:
            raise TransportError(str(exc) or type(exc).__name__) from None
        if len(content) > self.max_reply_bytes:
            raise ReplyTooLarge(response.status_code, len(content), self.max_reply_bytes)
        return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, content)

    async def aclose(self) -> None:
        await self._transport.aclose()
