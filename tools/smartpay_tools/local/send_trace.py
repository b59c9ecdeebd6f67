"""When each request to Buffr left the sender: a stamp per request written by the local functions.

The simulator stamps a call when its own event loop reads it; on a box whose cores the senders
share with the simulator, that stamp lags in bursts, and a one-second window of arrivals can hold
more calls than the senders started in any one second. A benchmark that sets ``ENV`` to a folder
(before the local stack starts its workers) gets, from every function worker, the wall-clock time
at which each request's bytes were handed to the socket, one file per worker; :func:`read` returns
them all, for :func:`smartpay_tools.buffr_sim.state.busiest_second` beside the simulator's figure.

Only the local runtime installs it (a worker reads ``ENV`` before it takes the function's own
environment); the deployed functions carry nothing of it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

ENV = "SMARTPAY_LOCAL_SEND_TRACE"


def install(folder: str) -> None:
    """Stamp each request :class:`smartpay.buffr_transport.StreamTransport` writes (this process)."""
    from smartpay.buffr_transport import StreamTransport

    fd = os.open(Path(folder) / f"sends-{os.getpid()}.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    connect = StreamTransport._connect

    async def stamped(self: StreamTransport, timeout: float) -> Any:
        streams = await connect(self, timeout)
        os.write(fd, f"{time.time():.6f}\n".encode())  # the request is written right after, in the same step
        return streams

    StreamTransport._connect = stamped  # type: ignore[method-assign]


def read(folder: str | Path) -> list[float]:
    """Every stamp written under ``folder``."""
    return [float(line) for path in sorted(Path(folder).glob("sends-*.txt"))
            for line in path.read_text().split() if line]
