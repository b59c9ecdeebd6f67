"""The wire ceiling: a bare HTTP/1.1 client (asyncio streams, a minimal writer and parser).

What any client could do against the same simulator in the same run: ``concurrency`` keep-alive
connections, each sending the next request as soon as the last reply is read, with nothing
else (no retries, timeouts, objects or JSON decoding). It runs on the same event loop as the
Buffr client (uvloop when installed), so the ceiling is the client's own, not asyncio's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def loop_name() -> str:
    return type(new_loop()).__module__.split(".")[0]


async def _run(host: str, port: int, requests: Iterable[bytes], concurrency: int) -> int:
    queue = iter(requests)
    done = 0

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, port)
        for data in queue:
            writer.write(data)
            head = await reader.readuntil(b"\r\n\r\n")
            at = head.find(b"ontent-length:")  # Content-Length or content-length
            if at < 0:
                at = head.find(b"ontent-Length:")
            length = int(head[at + 14:head.index(b"\r\n", at)]) if at >= 0 else 0
            if length:
                await reader.readexactly(length)
            if head[9:10] != b"2":
                raise RuntimeError(f"wire client got {head[:12]!r}")
            done += 1
        writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def wire(host: str, port: int, requests: list[bytes], concurrency: int, *, uvloop: bool = True) -> float:
    """Seconds for ``requests`` (whole HTTP/1.1 requests as bytes) at ``concurrency`` connections
    (on uvloop when installed, else, or with ``uvloop=False``, on asyncio's own loop)."""
    loop = new_loop() if uvloop else asyncio.new_event_loop()
    try:
        started = time.perf_counter()
        done = loop.run_until_complete(_run(host, port, requests, concurrency))
        elapsed = time.perf_counter() - started
    finally:
        loop.close()
    assert done == len(requests), f"wire client: {done} of {len(requests)}"
    return elapsed


def status_requests(host: str, port: int, key: str, voucher_ids: Iterable[str]) -> list[bytes]:
    prefix = f"host: {host}:{port}\r\nauthorization: Bearer {key}\r\n\r\n".encode()
    return [f"GET /api/v1/vouchers/{v} HTTP/1.1\r\n".encode() + prefix for v in voucher_ids]


def disburse_requests(host: str, port: int, key: str, voucher_ids: Iterable[str],
                      payload: Callable[[str], dict]) -> list[bytes]:
    out = []
    for v in voucher_ids:
        body = json.dumps(payload(v)).encode()
        out.append(f"POST /api/utilities/vouchers/disburse HTTP/1.1\r\nhost: {host}:{port}\r\n"
                   f"authorization: Bearer {key}\r\ncontent-type: application/json\r\n"
                   f"idempotency-key: disburse-{v}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
    return out
