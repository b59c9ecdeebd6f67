"""The tamper-evident audit trail: per-voucher SHA-256 chains written by the database's trigger,
recomputed independently in Python (smartpay.audit_chain) — edits, deletions and insertions made
with the append-only trigger disabled by a superuser are found and named."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from smartpay import audit_chain
from smartpay.transitions import transition
from tests import factories

pytestmark = pytest.mark.integration


def _voucher(pg, *targets: str, programme: str = "old_age", cycle: str = "2026-11") -> str:
    """A voucher issued (with its creation row) and moved through ``targets`` by the one writer."""
    runs = pg.execute("SELECT to_regclass('cycle_runs') IS NOT NULL AS ok").fetchone()["ok"]  # 0013 on
    v = factories.voucher(pg, factories.beneficiary(pg, programme=programme)["id"], programme=programme,
                          cycle=cycle, claimable=runs and "pending" in targets)["id"]
    for target in targets:
        with pg.transaction():
            assert transition(pg, v, target, source="operator", reference="test").applied
    return v


def _tamper(pg, statement: str, *params) -> None:
    """What an owner/superuser can do: switch the append-only trigger off, change history, switch it on."""
    with pg.transaction():
        pg.execute("ALTER TABLE voucher_events DISABLE TRIGGER voucher_events_no_update")
        pg.execute(statement, params)
        pg.execute("ALTER TABLE voucher_events ENABLE TRIGGER voucher_events_no_update")


def _event_ids(pg, voucher_id: str) -> list[int]:
    return [r["id"] for r in pg.execute("SELECT id FROM voucher_events WHERE voucher_id = %s ORDER BY id",
                                        (voucher_id,)).fetchall()]


def test_trigger_hashes_match_the_independent_python_recomputation(pg) -> None:
    v = _voucher(pg, "pending", "active", "redeemed")
    rows = pg.execute("""SELECT id, voucher_id::text, from_status, to_status, source, reference, detail::text, at, hash
                           FROM voucher_events WHERE voucher_id = %s ORDER BY id""", (v,)).fetchall()
    prev = None
    for r in rows:
        expected = hashlib.sha256(audit_chain.encoding(
            prev, r["id"], r["voucher_id"], r["from_status"], r["to_status"], r["source"], r["reference"],
            r["detail"], r["at"])).digest()
        assert bytes(r["hash"]) == expected
        prev = expected
    result = audit_chain.verify(pg)
    assert result.ok and result.vouchers == 1 and result.events == 4 == result.checked
    assert result.head == audit_chain.head([(v, prev)])


def test_a_writer_cannot_choose_its_rows_hash(pg) -> None:
    v = _voucher(pg)
    pg.execute("""INSERT INTO voucher_events (voucher_id, from_status, to_status, source, hash)
                  VALUES (%s, 'issued', 'issued', 'operator', %s)""", (v, b"\x00" * 32))  # as the owner
    assert bytes(pg.execute("SELECT hash FROM voucher_events ORDER BY id DESC LIMIT 1").fetchone()["hash"]) != \
        b"\x00" * 32
    assert audit_chain.verify(pg).ok


def test_a_row_edited_with_the_trigger_disabled_is_named(pg) -> None:
    _voucher(pg, "pending")
    v = _voucher(pg, "pending", "active", "redeemed")
    _voucher(pg, "cancelled")
    assert audit_chain.verify(pg).ok
    edited = _event_ids(pg, v)[2]  # pending -> active
    _tamper(pg, "UPDATE voucher_events SET reference = 'someone else' WHERE id = %s", edited)
    result = audit_chain.verify(pg)
    assert not result.ok and result.broken.event_id == edited and result.broken.voucher_id == v
    assert result.head == ""


def test_an_edit_that_also_rewrites_the_hash_column_to_garbage_is_named(pg) -> None:
    v = _voucher(pg, "pending", "active")
    edited = _event_ids(pg, v)[1]
    _tamper(pg, "UPDATE voucher_events SET hash = %s WHERE id = %s", b"\x01" * 32, edited)
    result = audit_chain.verify(pg)
    assert result.broken.event_id == edited


def test_a_deleted_row_breaks_the_chain_at_the_row_after_it(pg) -> None:
    v = _voucher(pg, "pending", "active", "redeemed")
    ids = _event_ids(pg, v)
    _tamper(pg, "DELETE FROM voucher_events WHERE id = %s", ids[1])  # issued -> pending
    result = audit_chain.verify(pg)
    assert not result.ok and result.broken.voucher_id == v and result.broken.event_id == ids[2]


def test_the_last_row_deleted_is_found_by_the_voucher_status(pg) -> None:
    v = _voucher(pg, "pending", "active")
    _tamper(pg, "DELETE FROM voucher_events WHERE id = %s", _event_ids(pg, v)[-1])
    result = audit_chain.verify(pg)
    assert not result.ok and result.broken.voucher_id == v and result.broken.event_id is None
    assert "ends at 'pending'" in result.broken.reason


def test_a_row_inserted_with_every_trigger_disabled_is_named(pg) -> None:
    v = _voucher(pg, "pending", "active")
    with pg.transaction():
        pg.execute("ALTER TABLE voucher_events DISABLE TRIGGER USER")
        pg.execute("ALTER TABLE vouchers DISABLE TRIGGER vouchers_audit_update")
        pg.execute("""INSERT INTO voucher_events (voucher_id, from_status, to_status, source, hash)
                      VALUES (%s, 'active', 'redeemed', 'operator', %s)""", (v, b"\x02" * 32))
        pg.execute("UPDATE vouchers SET status = 'redeemed' WHERE id = %s", (v,))
        pg.execute("ALTER TABLE vouchers ENABLE TRIGGER vouchers_audit_update")
        pg.execute("ALTER TABLE voucher_events ENABLE TRIGGER USER")
    result = audit_chain.verify(pg)
    assert result.broken.event_id == _event_ids(pg, v)[-1]


def test_since_checks_only_recent_rows_from_the_stored_anchor(pg) -> None:
    v = _voucher(pg, "pending", "active")
    ids = _event_ids(pg, v)
    _tamper(pg, "UPDATE voucher_events SET at = at - interval '2 days' WHERE id = ANY(%s)", ids[:2])
    _tamper(pg, "UPDATE voucher_events SET reference = 'old edit' WHERE id = %s", ids[0])
    since = datetime.now(UTC) - timedelta(days=1)
    recent = audit_chain.verify(pg, since=since)
    assert recent.ok and recent.checked == 1 and recent.events == 3  # only pending -> active recomputed
    assert not audit_chain.verify(pg).ok


def test_upto_reproduces_the_head_a_report_printed(pg) -> None:
    v = _voucher(pg, "pending")
    w = _voucher(pg, "pending", "active")
    before = audit_chain.verify(pg, programme="old_age", cycle="2026-11")
    with pg.transaction():
        transition(pg, v, "active", source="operator", reference="later")
    with pg.transaction():
        transition(pg, w, "redeemed", source="operator", reference="later")
    later = audit_chain.verify(pg, programme="old_age", cycle="2026-11")
    assert later.ok and later.head != before.head
    again = audit_chain.verify(pg, programme="old_age", cycle="2026-11", upto=before.last_event_id)
    assert again.ok and again.head == before.head


def test_cycle_filter_and_a_voucher_without_audit_rows(pg) -> None:
    _voucher(pg, "pending", cycle="2026-10")
    b = factories.beneficiary(pg)
    with pg.transaction():  # the owner, its audit trigger off
        pg.execute("ALTER TABLE vouchers DISABLE TRIGGER vouchers_audit_insert")
        pg.execute("""INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at)
                      VALUES (%s, 'old_age', '2026-11', 100, now() + interval '1 day')""", (b["id"],))
        pg.execute("ALTER TABLE vouchers ENABLE TRIGGER vouchers_audit_insert")
    assert audit_chain.verify(pg, programme="old_age", cycle="2026-10").ok
    result = audit_chain.verify(pg, programme="old_age", cycle="2026-11")
    assert not result.ok and result.broken.reason == "voucher has no audit rows"


def test_migration_chains_the_rows_written_before_it(scratch, monkeypatch) -> None:
    from smartpay import migrate

    url = scratch.database()
    everything = migrate.available()
    monkeypatch.setattr(migrate, "available", lambda: [m for m in everything if m.version < "0012"])
    monkeypatch.setattr(migrate, "repeatables", lambda: [])  # today's grants name 0012's views
    migrate.apply(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.row_factory = psycopg.rows.dict_row
        # the writers of that schema wrote their audit rows themselves
        v = factories.voucher(conn, factories.beneficiary(conn)["id"], status="active")["id"]
        w = factories.voucher(conn, factories.beneficiary(conn)["id"], status="cancelled")["id"]
        conn.execute("""INSERT INTO voucher_events (voucher_id, from_status, to_status, source)
                        VALUES (%(v)s, NULL, 'issued', 'operator'), (%(v)s, 'issued', 'pending', 'operator'),
                               (%(v)s, 'pending', 'active', 'operator'), (%(w)s, NULL, 'issued', 'operator'),
                               (%(w)s, 'issued', 'cancelled', 'operator')""", {"v": v, "w": w})
        assert "hash" not in [c.name for c in conn.execute("SELECT * FROM voucher_events LIMIT 0").description]
    monkeypatch.undo()
    assert [m.split("_")[0] for m in migrate.apply(url)["applied"]] == [  # 0012, then any later one
        m.version for m in everything if m.version >= "0012"]
    with psycopg.connect(url, autocommit=True) as conn:
        result = audit_chain.verify(conn)
        assert result.ok and result.vouchers == 2 and result.events == 5
        with pytest.raises(psycopg.errors.RaiseException):
            conn.execute("UPDATE voucher_events SET reference = 'x' WHERE voucher_id = %s", (v,))


def test_the_chain_verifies_after_a_batch_and_1000_concurrent_webhook_deliveries(disburse_env, gateway_url, pg, sim,
                                                                                  webhook_secrets) -> None:
    """Writers racing on the same vouchers (the batch's own answers, then Buffr's events in any order,
    retried) still leave one unbroken chain per voucher, ending in the voucher's status."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from disburse.logic import batch
    from disburse.models import BatchRequest
    from smartpay_tools.buffr_sim.webhook_sender import WEBHOOK_PATH, encode, payload, signed_headers
    from tests.fixtures_disburse import lambda_context

    ids = [_voucher(pg, cycle="2026-09") for _ in range(300)]
    factories.in_run(pg, ids, cycle="2026-09")
    reply = batch.disburse_batch(BatchRequest(voucher_ids=ids), reference="chain", context=lambda_context(120))
    assert reply.succeeded == 300
    deliveries = []
    for n, v in enumerate(ids):
        deliveries.append(("voucher.activated", v, f"msg_act_{v}"))  # stale: the batch already made it active
        deliveries += [("voucher.redeemed", v, f"msg_red_{v}")] * 2  # one applied, one replayed
        if n < 100:
            deliveries.append(("voucher.expired", v, f"msg_exp_{v}"))  # races the redemption
    assert len(deliveries) == 1000

    bodies = {webhook_id: encode(payload(kind, v, delivery_id=f"bfr_{v[:8]}", amount_cents=140000, channel="pos"))
              for kind, v, webhook_id in deliveries}  # a retry carries the same body

    def deliver(client: httpx.Client, item: tuple[str, str, str]) -> int:
        raw = bodies[item[2]]
        webhook_id = item[2]
        return client.post(f"{gateway_url}{WEBHOOK_PATH}", content=raw, timeout=60,
                           headers=signed_headers(webhook_secrets, raw, webhook_id=webhook_id)).status_code

    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    with httpx.Client(limits=limits) as client, ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda item: deliver(client, item), deliveries))
    assert set(statuses) <= {200, 409}, set(statuses)
    retry = [d for d, s in zip(deliveries, statuses, strict=True) if s == 409]  # in flight elsewhere: Buffr retries
    with httpx.Client() as client:
        assert all(deliver(client, item) == 200 for item in retry)
    assert factories.count(pg, "SELECT count(*) FROM vouchers WHERE cycle = '2026-09' AND status <> 'redeemed'") == 0
    result = audit_chain.verify(pg, programme="old_age", cycle="2026-09")
    assert result.ok, result.broken
    assert result.vouchers == 300
    assert result.events == factories.count(pg, "SELECT count(*) FROM voucher_events") >= 300 * 4


def test_cli_verify_prints_the_head_then_names_the_broken_row(pg, pg_url, capsys) -> None:
    from smartpay_tools.cli import main

    v = _voucher(pg, "pending", "active")
    assert main(["--database-url", pg_url, "audit", "verify", "--programme", "old_age", "--cycle", "2026-11"]) == 0
    out = capsys.readouterr().out
    head = audit_chain.verify(pg, programme="old_age", cycle="2026-11").head
    assert f"head {head}" in out and "3 of 3 rows" in out
    edited = _event_ids(pg, v)[1]
    _tamper(pg, "UPDATE voucher_events SET to_status = 'active' WHERE id = %s", edited)
    assert main(["--database-url", pg_url, "audit", "verify"]) == 1
    assert f"voucher_events row {edited} of voucher {v}" in capsys.readouterr().err
    assert main(["--database-url", pg_url, "audit", "verify", "--since", "3d", "--json"]) == 1
    assert main(["--database-url", pg_url, "audit", "verify", "--since", "yesterday"]) == 2
