"""``smartpay demo``: the main job — bring up the local stack with seeded data and use it."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from smartpay_tools import datagen, registry_import
from smartpay_tools.gateway import Gateway, serve
from smartpay_tools.stack import LocalStack


def run(stack: LocalStack, *, port: int, beneficiaries: int, keep_serving: bool) -> int:
    started = time.monotonic()
    stack.start_services()
    print(f"PostgreSQL: {stack.postgres.origin}; DynamoDB: moto at {stack.moto.endpoint}")
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "beneficiaries.csv"
        datagen.generate_file(csv_path, beneficiaries)
        report = registry_import.import_file(stack.postgres.url, csv_path)
        first = next(iter(registry_import.read_rows(csv_path)))[1]
    print(f"registry: {report.rows} rows read, {report.upserted} upserted, {len(report.rejected)} rejected")
    server = serve(Gateway(stack), port=port)
    base = f"http://127.0.0.1:{port}"
    key = stack.local["BuffrApiKey"]
    try:
        body = {"id_number": first["id_number"], "full_name": f"{first['first_name']} {first['last_name']}"}
        reply = httpx.post(f"{base}/api/v1/beneficiaries/verify", json=body,
                           headers={"x-api-key": key}, timeout=30)
        print(f"\nPOST {base}/api/v1/beneficiaries/verify (Buffr's key) -> {reply.status_code}")
        print(json.dumps(reply.json(), indent=2))
        refused = httpx.post(f"{base}/api/v1/beneficiaries/verify", json=body, timeout=30)
        print(f"\nthe same call without a key -> {refused.status_code} {refused.json()}")
        ok = reply.status_code == 200 and reply.json().get("match") is True and refused.status_code == 401
        print(f"\ndemo {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s")
        if keep_serving and ok:
            print(f"serving on {base} (Ctrl-C to stop); try:\n  curl -s -X POST {base}/api/v1/beneficiaries/verify "
                  f"-H 'x-api-key: {key}' -H 'content-type: application/json' -d '{json.dumps(body)}'")
            _wait_forever()
        return 0 if ok else 1
    finally:
        server.shutdown()
        stack.stop()


def _wait_forever() -> Any:
    import threading

    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        return None
