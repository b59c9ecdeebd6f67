"""The Buffr client's retry policy against httpx's MockTransport (no network)."""

import time

import httpx
import pytest

from smartpay import buffr

REQUEST = buffr.DisburseRequest("5d0c1a2b-0000-4000-8000-000000000001", 140000, "NAD", "44050267085")


def _client(replies: list, settings: dict | None = None) -> tuple[buffr.BuffrClient, list[httpx.Request], list]:
    seen: list[httpx.Request] = []
    sleeps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    config = buffr.BuffrSettings(url="https://buffr.test", max_attempts=4, backoff_base=0.1, backoff_cap=1.0,
                                 **(settings or {}))
    client = buffr.BuffrClient(config, transport=httpx.MockTransport(handler), api_key="k", sleep=sleep)
    return client, seen, sleeps


def _deadline(seconds: float = 20) -> float:
    return time.monotonic() + seconds


def test_accepted_first_time_with_key_derived_from_voucher_only() -> None:
    client, seen, _ = _client([httpx.Response(200, json={"deliveryId": "dlv_1"})])
    result = client.disburse(REQUEST, deadline=_deadline())
    assert (result.outcome, result.delivery_id, result.attempts) == ("accepted", "dlv_1", 1)
    assert seen[0].headers["idempotency-key"] == f"disburse-{REQUEST.voucher_id}"
    assert seen[0].headers["authorization"] == "Bearer k"
    assert seen[0].url.path == "/api/utilities/vouchers/disburse"
    client.close()


def test_5xx_timeout_and_429_are_retried_with_the_same_key_and_retry_after_honoured() -> None:
    request = httpx.Request("POST", "https://buffr.test")
    client, seen, sleeps = _client([
        httpx.Response(503), httpx.ReadTimeout("slow", request=request),
        httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200, json={"deliveryId": "dlv_2"})])
    result = client.disburse(REQUEST, deadline=_deadline())
    assert (result.outcome, result.attempts) == ("accepted", 4)
    assert {r.headers["idempotency-key"] for r in seen} == {f"disburse-{REQUEST.voucher_id}"}
    assert sleeps[0] <= 0.1 and sleeps[1] <= 0.2 and sleeps[2] >= 3
    client.close()


@pytest.mark.parametrize("status", [400, 410, 422])
def test_rejection_is_not_retried(status: int) -> None:
    client, seen, _ = _client([httpx.Response(status, json={"error": "bad wallet"})])
    result = client.disburse(REQUEST, deadline=_deadline())
    assert (result.outcome, result.reason, len(seen)) == ("rejected", "bad wallet", 1)
    client.close()


@pytest.mark.parametrize("status", [401, 403, 404, 409])
def test_other_4xx_is_not_retried_and_does_not_fail_the_voucher(status: int) -> None:
    client, seen, _ = _client([httpx.Response(status)])
    result = client.disburse(REQUEST, deadline=_deadline())
    assert (result.outcome, result.error, len(seen)) == ("unavailable", "refused", 1)
    client.close()


def test_gives_up_after_max_attempts_and_reports_the_last_error() -> None:
    client, seen, _ = _client([httpx.Response(502)] * 4)
    result = client.disburse(REQUEST, deadline=_deadline())
    assert (result.outcome, result.error, result.attempts, len(seen)) == ("unavailable", "server_error", 4, 4)
    client.close()


def test_retry_after_beyond_the_deadline_stops_at_once() -> None:
    client, seen, sleeps = _client([httpx.Response(429, headers={"Retry-After": "60"})] * 4)
    result = client.disburse(REQUEST, deadline=_deadline(5))
    assert (result.outcome, result.error, result.retry_after, len(seen), sleeps) == (
        "unavailable", "rate_limited", 60.0, 1, [])
    client.close()


def test_no_call_once_the_deadline_has_passed() -> None:
    client, seen, _ = _client([])
    result = client.disburse(REQUEST, deadline=time.monotonic() - 1)
    assert (result.outcome, result.error, seen) == ("unavailable", "deadline", [])
    client.close()


def test_2xx_without_delivery_id_is_not_taken_as_success() -> None:
    client, _, _ = _client([httpx.Response(200, json={})])
    assert client.disburse(REQUEST, deadline=_deadline()).error == "bad_reply"
    client.close()


def test_status_and_status_many() -> None:
    client, seen, _ = _client([httpx.Response(200, json={"status": "redeemed", "amount": 5}),
                               httpx.Response(404), httpx.Response(200, json={"status": "active"})])
    results = client.status_many(["a", "b", "c"], deadline=_deadline(), concurrency=1)
    assert [r.outcome for r in results] == ["found", "not_found", "found"]
    assert results[0].body["status"] == "redeemed" and seen[0].url.path == "/api/v1/vouchers/a"
    client.close()


def test_submit_disburse_many_keeps_at_most_concurrency_in_flight_and_reports_each() -> None:
    import asyncio
    import queue
    import threading

    live, peak, lock = [0], [0], threading.Lock()

    class Slow(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            with lock:
                live[0] += 1
                peak[0] = max(peak[0], live[0])
            await asyncio.sleep(0.01)
            with lock:
                live[0] -= 1
            return httpx.Response(200, json={"deliveryId": f"dlv_{request.headers['idempotency-key']}"})

    client = buffr.BuffrClient(buffr.BuffrSettings(url="https://buffr.test", concurrency=3), transport=Slow(),
                               api_key="k")
    requests = [buffr.DisburseRequest(f"v{i}", 100, "NAD", "44050267085") for i in range(12)]
    done: queue.SimpleQueue = queue.SimpleQueue()
    client.submit_disburse_many(requests, deadline=_deadline(), on_result=done.put)
    results = [done.get(timeout=10) for _ in requests]
    assert sorted(r.voucher_id for r in results) == sorted(f"v{i}" for i in range(12))
    assert all(r.outcome == "accepted" and r.delivery_id == f"dlv_disburse-{r.voucher_id}" for r in results)
    assert peak[0] == 3 and done.empty()
    client.close()


def test_submit_disburse_many_turns_a_client_bug_into_an_unavailable_result(monkeypatch) -> None:
    import queue

    client, _, _ = _client([])

    async def broken(request, deadline, pacer=None):
        raise RuntimeError("bug")

    monkeypatch.setattr(client, "disburse_async", broken)
    done: queue.SimpleQueue = queue.SimpleQueue()
    client.submit_disburse_many([REQUEST], deadline=_deadline(), on_result=done.put)
    result = done.get(timeout=10)
    assert (result.outcome, result.voucher_id, result.error, result.reason) == (
        "unavailable", REQUEST.voucher_id, "client_error", "RuntimeError")
    client.close()
