"""The Buffr client's own transport against scripted HTTP servers on loopback (no mocks).

Each server is a few lines of asyncio that answer exactly as the test says, so the client's
limits are seen from the wire: timeouts, the retry policy, TLS verification, oversized replies.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from smartpay import buffr
from smartpay.buffr_transport import MAX_REPLY_BYTES, StreamTransport

REQUEST = buffr.DisburseRequest("5d0c1a2b-0000-4000-8000-000000000001", 140000, "NAD", "44050267085")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """An asyncio server on 127.0.0.1 in its own thread; records connections and request heads."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler, self.ssl_context = handler, ssl_context
        self.connections = 0
        self.requests: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer, self)
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        async def start() -> None:
            self.server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=self.ssl_context)
            self.port = self.server.sockets[0].getsockname()[1]
            self._ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def __enter__(self) -> Server:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0.01)  # let the closed transports finish

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        return await reader.readexactly(length)


def reply(status: int, body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n" % (
        status, len(body), extra) + body


ACCEPTED = reply(200, b'{"deliveryId": "dlv_1"}')


def client(url: str, *, transport: StreamTransport | None = None, sleeps: list[float] | None = None,
           **settings: float) -> buffr.BuffrClient:
    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    config = buffr.BuffrSettings(url=url, **{"max_attempts": 3, "read_timeout": 5.0, **settings})
    return buffr.BuffrClient(config, transport=transport, api_key="k", sleep=sleep)


def deadline(seconds: float = 20) -> float:
    return time.monotonic() + seconds


# --- keep-alive, retries, timeouts -----------------------------------------------------------------

def test_calls_reuse_one_keep_alive_connection() -> None:
    async def handler(reader, writer, server):
        while True:
            await server.read_request(reader)
            writer.write(ACCEPTED)

    with Server(handler) as server:
        c = client(f"http://127.0.0.1:{server.port}")
        results = [c.disburse(REQUEST, deadline=deadline()) for _ in range(3)]
        c.close()
    assert [r.outcome for r in results] == ["accepted"] * 3
    assert (server.connections, len(server.requests)) == (1, 3)
    head = server.requests[0]
    assert head.startswith(b"POST /api/utilities/vouchers/disburse HTTP/1.1\r\n")
    assert f"idempotency-key: disburse-{REQUEST.voucher_id}\r\n".encode() in head
    assert b"authorization: Bearer k\r\n" in head and f"host: 127.0.0.1:{server.port}\r\n".encode() in head


@pytest.mark.parametrize("head", [b"HTTP/1.1 200 OK\r\nConnection: close\r\n", b"HTTP/1.0 200 OK\r\n"])
def test_a_connection_the_server_closes_is_not_reused(head: bytes) -> None:
    body = b'{"deliveryId": "dlv_1"}'

    async def handler(reader, writer, server):
        await server.read_request(reader)
        writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)

    with Server(handler) as server:
        c = client(f"http://127.0.0.1:{server.port}")
        results = [c.disburse(REQUEST, deadline=deadline()) for _ in range(2)]
        c.close()
    assert [r.delivery_id for r in results] == ["dlv_1", "dlv_1"]
    assert (server.connections, len(server.requests)) == (2, 2)


def test_5xx_then_success_is_retried_with_the_same_key_over_the_wire() -> None:
    answers = [reply(503, b"{}", b"retry-after: 2\r\n"), reply(502, b"{}"), ACCEPTED]

    async def handler(reader, writer, server):
        while answers:
            await server.read_request(reader)
            writer.write(answers.pop(0))

    sleeps: list[float] = []
    with Server(handler) as server:
        c = client(f"http://127.0.0.1:{server.port}", sleeps=sleeps, backoff_base=0.01)
        result = c.disburse(REQUEST, deadline=deadline())
        c.close()
    assert (result.outcome, result.attempts, result.delivery_id) == ("accepted", 3, "dlv_1")
    keys = {line for head in server.requests for line in head.split(b"\r\n") if line.startswith(b"idempotency-key")}
    assert keys == {f"idempotency-key: disburse-{REQUEST.voucher_id}".encode()} and len(server.requests) == 3
    assert sleeps[0] >= 2 and sleeps[1] <= 0.02  # Retry-After honoured, then plain backoff


def test_a_silent_server_is_a_read_timeout_on_every_attempt() -> None:
    async def handler(reader, writer, server):
        await server.read_request(reader)
        await asyncio.sleep(30)  # never answers

    with Server(handler) as server:
        c = client(f"http://127.0.0.1:{server.port}", read_timeout=0.2, max_attempts=2)
        result = c.disburse(REQUEST, deadline=deadline())
        c.close()
    assert (result.outcome, result.error, result.attempts) == ("unavailable", "timeout", 2)
    assert (server.connections, len(server.requests)) == (2, 2)  # a timed-out connection is never reused


def test_a_call_held_far_past_buffrs_latency_is_cut_by_the_adaptive_timeout_and_retried_under_its_key() -> None:
    """After 20 quick answers the read timeout follows Buffr's latency: the 26th call, held without
    an answer, is given up long before BUFFR_READ_TIMEOUT_S and its retry (same key) is accepted
    inside a deadline the full timeout would have used up."""
    async def handler(reader, writer, server):
        while True:
            await server.read_request(reader)
            if len(server.requests) == 26:
                await asyncio.sleep(30)  # held: never answered
            await asyncio.sleep(0.01)
            writer.write(ACCEPTED)

    with Server(handler) as server:
        c = client(f"http://127.0.0.1:{server.port}", read_timeout=5.0, read_timeout_min=0.2)
        warm = [c.disburse(REQUEST, deadline=deadline()) for _ in range(25)]
        held = c.disburse(REQUEST, deadline=deadline(3))
        c.close()
    assert [r.outcome for r in warm] == ["accepted"] * 25
    assert (held.outcome, held.attempts, held.delivery_id) == ("accepted", 2, "dlv_1")
    keys = {line for head in server.requests[25:] for line in head.split(b"\r\n") if line.startswith(b"idempotency-key")}
    assert keys == {f"idempotency-key: disburse-{REQUEST.voucher_id}".encode()} and len(server.requests) == 27


def test_the_read_timeout_follows_latency_within_its_bounds() -> None:
    timeout = buffr.ReadTimeout(0.5, 5.0)
    for _ in range(buffr.ReadTimeout.WARM_SAMPLES - 1):
        timeout.observe(0.15)
    assert timeout.current == 5.0  # too few answers timed: the configured timeout
    timeout.observe(0.15)
    assert timeout.current == 0.5  # steady 150 ms: the floor
    for _ in range(40):
        timeout.observe(1.2)  # Buffr slows down as a whole: the timeout grows with it
    assert 1.2 < timeout.current < 5.0
    for _ in range(40):
        timeout.observe(9.0)
    assert timeout.current == 5.0  # never past the configured timeout
    assert buffr.BuffrSettings(url="https://b.test", read_timeout=0.3).read_timeout_min == 0.3


def test_a_refused_connection_is_a_connect_error_retried() -> None:
    with Server(lambda r, w, s: asyncio.sleep(0)) as server:
        port = server.port
    c = client(f"http://127.0.0.1:{port}", max_attempts=2)  # the server is gone: connection refused
    result = c.disburse(REQUEST, deadline=deadline())
    c.close()
    assert (result.outcome, result.error, result.attempts) == ("unavailable", "connect", 2)


# --- replies over 1 MB ---------------------------------------------------------------------------

def _oversized(kind: str) -> Handler:
    async def handler(reader, writer, server):
        await server.read_request(reader)
        if kind == "length":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (MAX_REPLY_BYTES + 1))
        elif kind == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(5):
                writer.write(b"%x\r\n%s\r\n" % (256 * 1024, b"x" * 256 * 1024))
        else:  # no length: the body would run to the end of the connection
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + b"x" * (MAX_REPLY_BYTES + 1))
        await writer.drain()
        await asyncio.sleep(30)  # and never finishes: a client that buffers waits for its timeout

    return handler


@pytest.mark.parametrize("kind", ["length", "chunked", "until_close"])
def test_a_reply_over_1mb_is_refused_not_buffered(kind: str) -> None:
    with Server(_oversized(kind)) as server:
        c = client(f"http://127.0.0.1:{server.port}", read_timeout=10)
        result = c.disburse(REQUEST, deadline=deadline(30))
        c.close()
    # Refused as soon as the size is known: not a timeout, not retried, voucher not failed.
    assert (result.outcome, result.error, result.attempts) == ("unavailable", "bad_reply", 1)
    assert "refused" in result.reason and len(server.requests) == 1


def test_a_reply_just_under_1mb_is_read() -> None:
    padding = "x" * (MAX_REPLY_BYTES - 100)
    body = json.dumps({"deliveryId": "dlv_big", "pad": padding}).encode()
    assert len(body) <= MAX_REPLY_BYTES

    async def handler(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 100_000):
            part = body[i:i + 100_000]
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        writer.write(b"0\r\n\r\n")

    with Server(handler) as server:
        c = client(f"http://127.0.0.1:{server.port}")
        result = c.disburse(REQUEST, deadline=deadline())
        c.close()
    assert (result.outcome, result.delivery_id) == ("accepted", "dlv_big")


# --- TLS -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for the name ``localhost`` only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _tls_server(certificate: tuple[Path, Path]) -> Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)

    async def handler(reader, writer, server):
        while True:
            await server.read_request(reader)
            writer.write(ACCEPTED)

    return Server(handler, ssl_context=context)


def test_tls_with_an_untrusted_certificate_is_refused(certificate) -> None:
    with _tls_server(certificate) as server:
        c = client(f"https://localhost:{server.port}", max_attempts=2)  # the default context: system CAs
        result = c.disburse(REQUEST, deadline=deadline())
        c.close()
    assert (result.outcome, result.error) == ("unavailable", "connect")
    assert server.requests == []  # nothing was sent over the unverified connection


def test_tls_with_a_trusted_certificate_and_matching_name_is_used(certificate) -> None:
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    with _tls_server(certificate) as server:
        url = f"https://localhost:{server.port}"
        c = client(url, transport=StreamTransport(url, ssl_context=trusted))
        result = c.disburse(REQUEST, deadline=deadline())
        c.close()
    assert (result.outcome, result.delivery_id) == ("accepted", "dlv_1") and len(server.requests) == 1


def test_tls_host_name_is_verified(certificate) -> None:
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    with _tls_server(certificate) as server:
        url = f"https://127.0.0.1:{server.port}"  # same server and trusted CA, but the certificate names localhost
        c = client(url, transport=StreamTransport(url, ssl_context=trusted), max_attempts=1)
        result = c.disburse(REQUEST, deadline=deadline())
        c.close()
    assert (result.outcome, result.error) == ("unavailable", "connect") and server.requests == []
