"""The benchmarks' sender-side clock: one stamp per request the Buffr client writes, every attempt,
each taken before the request reached the server."""

from __future__ import annotations

import time
from pathlib import Path

from smartpay.buffr_transport import StreamTransport
from smartpay_tools.local import send_trace
from tests.unit.test_buffr_transport import ACCEPTED, REQUEST, Server, client, deadline, reply


def test_every_attempt_is_stamped_once_before_it_arrives(tmp_path: Path) -> None:
    arrivals: list[float] = []

    async def handler(reader, writer, server):
        while True:
            await server.read_request(reader)
            arrivals.append(time.time())
            writer.write(reply(503, b"{}") if len(arrivals) == 1 else ACCEPTED)  # the first attempt is retried

    original = StreamTransport._connect
    try:
        send_trace.install(str(tmp_path))
        with Server(handler) as server:
            c = client(f"http://127.0.0.1:{server.port}")
            results = [c.disburse(REQUEST, deadline=deadline()) for _ in range(2)]
            c.close()
    finally:
        StreamTransport._connect = original  # type: ignore[method-assign]
    assert [r.outcome for r in results] == ["accepted", "accepted"] and len(arrivals) == 3
    stamps = send_trace.read(tmp_path)
    assert len(stamps) == 3
    assert all(sent <= arrived for sent, arrived in zip(sorted(stamps), arrivals, strict=True))
