"""A whole demo-sized pay cycle: it passes, and no ID number, full phone number or surname of the cycle
reaches any log line, while every voucher, webhook and delivery id that appears stays whole.

Runs `smartpay demo` (5,000 beneficiaries) as an operator would and captures everything it and
the functions it runs write, plus the report files.
"""

import os
import re
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from smartpay_tools import PROJECT_ROOT
from smartpay_tools.data import datagen
from smartpay_tools.local.services import drop_database, free_port
from tests.conftest import ADMIN_URL

pytestmark = pytest.mark.integration


@pytest.mark.timeout(660)  # the demo itself may take up to 600 s on a busy box (its subprocess timeout)
def test_demo_cycle_passes_and_logs_no_pii(pg_url, tmp_path) -> None:
    out = tmp_path / "reports"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "smartpay_tools", "demo", "--port", str(free_port()), "--out", str(out),
         "--beneficiaries", "5000", "--database-name", f"smartpay_demo_test_{os.getpid()}",
         "--logs", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT, env=env,
    )
    import psycopg
    from psycopg.conninfo import make_conninfo

    try:
        with psycopg.connect(make_conninfo(ADMIN_URL, dbname=f"smartpay_demo_test_{os.getpid()}")) as conn:
            ids = {r[0] for r in conn.execute(
                "SELECT id::text FROM vouchers UNION SELECT webhook_id FROM webhook_events "
                "UNION SELECT buffr_delivery_id FROM vouchers WHERE buffr_delivery_id IS NOT NULL")}
    finally:
        drop_database(ADMIN_URL, f"smartpay_demo_test_{os.getpid()}")
    captured = proc.stdout + proc.stderr
    assert proc.returncode == 0, captured[-5000:]
    assert "demo passed" in proc.stdout
    files = sorted(out.glob("demo-*"))
    assert {f.suffix for f in files} == {".csv", ".html"}
    captured += "".join(f.read_text() for f in files)
    captured += "".join(f.read_text() for f in sorted((tmp_path / "logs").glob("*.log")))  # the functions' logs
    assert len(captured) > 100_000, "expected the functions' logs to be captured"

    cycle = datetime.now(UTC).strftime("%Y-%m")
    people = list(datagen.payroll(5000, cycle, 2026))
    assert len(people) > 4000
    leaked_ids = [p["id_number"] for p in people if p["id_number"] in captured]
    assert leaked_ids == []
    digits = {p["msisdn"].removeprefix("+") for p in people}
    numbers_seen = set(re.findall(r"264\d{8,9}", captured))
    assert numbers_seen & digits == set()
    surnames = {p["last_name"] for p in people}
    assert [name for name in surnames if re.search(rf"\b{re.escape(name)}\b", captured)] == []
    # Ids stay whole: no masked id anywhere, and those of this cycle that were logged are findable.
    uuid_shape = r"[0-9a-fA-F*]{8}-[0-9a-fA-F*]{4}-[0-9a-fA-F*]{4}-[0-9a-fA-F*]{4}-[0-9a-fA-F*]{12}"
    assert [m for m in re.findall(uuid_shape, captured) if "*" in m] == []
    assert re.findall(r"(?:msg|dlv)_[0-9A-Za-z_-]*\*", captured) == []
    tokens = set(re.findall(r"\b(?:msg|dlv)_[0-9A-Za-z_-]+", captured)) | set(re.findall(uuid_shape, captured))
    assert len(tokens & ids) > 1000, "expected the cycle's voucher, webhook and delivery ids in the logs"
