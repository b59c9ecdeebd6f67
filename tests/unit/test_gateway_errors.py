"""The local gateway keeps the terminal for the story: a caller that hung up before its reply is
dropped quietly (as API Gateway drops it); any other error is still printed."""

from __future__ import annotations

import http.server

import pytest

from smartpay_tools.local.gateway import GatewayServer


@pytest.mark.parametrize(("error", "printed"), [(BrokenPipeError, False), (ConnectionResetError, False),
                                                 (ValueError, True)])
def test_only_a_hung_up_caller_is_silent(error: type[Exception], printed: bool, capsys) -> None:
    server = GatewayServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    try:
        try:
            raise error("boom")
        except Exception:
            server.handle_error(None, ("127.0.0.1", 1))
    finally:
        server.server_close()
    assert ("boom" in capsys.readouterr().err) is printed
