"""The Buffr simulator in its own process (its own GIL), with a small admin client for tests and tools."""


from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from smartpay_tools.buffr_sim.state import DEFAULT_API_KEY, DEFAULT_PORT, SECRET_ENV
from smartpay_tools.buffr_sim.webhook_sender import (
    Knobs,
)


class SimulatorProcess:
    """The simulator in its own process (its own GIL), plus a small admin client for it."""

    def __init__(self, port: int = DEFAULT_PORT, api_key: str = DEFAULT_API_KEY, host: str = "127.0.0.1", *,
                 webhook_url: str | None = None, webhook_secrets: str | None = None,
                 knobs: dict[str, Any] | None = None, log_path: Path | None = None) -> None:
        self.host, self.port, self.api_key = host, port, api_key
        self.log_path = log_path  # its stderr (None: the terminal's)
        self.webhook_url, self.webhook_secrets = webhook_url, webhook_secrets
        self.knobs = Knobs().update(knobs or {})  # validated here, before a process starts
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> SimulatorProcess:
        from smartpay_tools.local.services import free_port, port_open, wait_port

        self.port = self.port or free_port()
        if port_open(self.host, self.port):  # else wait_port would mistake another process for ours
            raise RuntimeError(f"{self.host}:{self.port} is already in use (another simulator or `smartpay serve`?)")
        cmd = [sys.executable, "-m", "smartpay_tools.buffr_sim", "--host", self.host, "--port", str(self.port),
               "--api-key", self.api_key, "--webhooks", json.dumps(self.knobs.as_dict())]
        env = dict(os.environ)
        env.pop(SECRET_ENV, None)
        if self.webhook_secrets:  # in the environment, not on a command line anyone can read
            env[SECRET_ENV] = self.webhook_secrets
            if self.webhook_url:
                cmd += ["--webhook-url", self.webhook_url]
        from smartpay_tools.local.services import die_with_parent

        with contextlib.ExitStack() as files:
            stderr = files.enter_context(self.log_path.open("ab")) if self.log_path else None
            self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
                                            preexec_fn=die_with_parent)
        try:
            wait_port(self.host, self.port, timeout, "Buffr simulator")
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        from smartpay_tools.local.services import stop_process

        stop_process(self.process)

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        reply = httpx.request(method, f"{self.url}/_sim/{path}", json=body, timeout=10)
        reply.raise_for_status()
        return dict(reply.json())

    def configure(self, **settings: Any) -> dict[str, Any]:
        return self._admin("PUT", "config", settings)

    def stats(self, detail: bool = False) -> dict[str, Any]:
        return self._admin("GET", "stats?detail=1" if detail else "stats")

    def reset(self, **settings: Any) -> None:
        """Forget vouchers and stats; settings back to how the process started, then ``settings``."""
        self._admin("POST", "reset")
        if settings:
            self.configure(**settings)

    def configure_webhooks(self, **knobs: Any) -> dict[str, Any]:
        """Change webhook knobs or ``url`` at run time (validated by the simulator)."""
        return dict(self.configure(webhooks=knobs)["webhooks"])

    def flush_webhooks(self, timeout_s: float = 60.0) -> bool:
        """Wait until the simulator's webhook queue is empty (every delivery answered or given up)."""
        import httpx

        reply = httpx.post(f"{self.url}/_sim/webhooks/flush", json={"timeout_s": timeout_s},
                           timeout=timeout_s + 10)
        return bool(reply.json().get("flushed"))

    def settle(self, voucher_id: str, status: str = "redeemed", *, webhook: bool = True) -> dict[str, Any]:
        """Redeem or expire one voucher at Buffr now, with or without its webhook."""
        return self._admin("POST", f"vouchers/{voucher_id}/{'redeem' if status == 'redeemed' else 'expire'}",
                           {"webhook": webhook})

    def settle_many(self, voucher_ids: list[str], status: str = "redeemed", *,
                    webhook: bool = False) -> dict[str, Any]:
        """Settle many at Buffr now (default: Buffr-only, no webhook — drift for reconciliation)."""
        return self._admin("POST", "settle", {"voucher_ids": voucher_ids, "status": status, "webhook": webhook})

    def set_voucher(self, voucher_id: str, **changes: Any) -> dict[str, Any]:
        return self._admin("PUT", f"vouchers/{voucher_id}", changes)

    def load(self, vouchers: list[dict[str, Any]]) -> int:
        """Make Buffr hold these vouchers (``voucher_id``, ``amount``, ``status``) in one call."""
        return int(self._admin("POST", "vouchers", {"vouchers": vouchers})["loaded"])

    def voucher(self, voucher_id: str) -> dict[str, Any] | None:
        import httpx

        reply = httpx.get(f"{self.url}/_sim/vouchers/{voucher_id}", timeout=10)
        return None if reply.status_code == 404 else dict(reply.json())

    def forget(self, voucher_id: str) -> None:
        self._admin("DELETE", f"vouchers/{voucher_id}")

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
