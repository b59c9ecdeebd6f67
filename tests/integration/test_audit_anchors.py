"""Anchors: the audit chain's heads in the anchor bucket (S3 Object Lock; moto locally) catch a
history rewritten with every later hash recomputed, which ``audit verify`` alone cannot."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from smartpay import anchors, compliance, compliance_render
from smartpay_tools.cli import main
from smartpay_tools.local.scheduler import scheduled_event
from tests.fixtures_reconcile import at_buffr, seed_vouchers

pytestmark = pytest.mark.integration


@pytest.fixture()
def anchor_bucket(local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """The stack's anchor bucket and an S3 client on its moto (the CLI reads it through the environment)."""
    (bucket, _days), = local_stack.template.object_lock_buckets()
    monkeypatch.setenv("AUDIT_ANCHOR_BUCKET", bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_stack.moto.endpoint)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    return bucket, boto3.client("s3", endpoint_url=local_stack.moto.endpoint, region_name=local_stack.region,
                                aws_access_key_id="testing", aws_secret_access_key="testing")


def _rewrite_history(pg: Any, voucher_id: str) -> None:
    """What the owner can do: edit the voucher's first audit row and recompute every later hash."""
    with pg.transaction():
        pg.execute("ALTER TABLE voucher_events DISABLE TRIGGER voucher_events_no_update")
        pg.execute("UPDATE voucher_events SET reference = 'rewritten' WHERE id = "
                   "(SELECT min(id) FROM voucher_events WHERE voucher_id = %s)", (voucher_id,))
        pg.execute("""DO $$
                      DECLARE e voucher_events; prev bytea;
                      BEGIN
                          FOR e IN SELECT * FROM voucher_events WHERE voucher_id = %s ORDER BY id LOOP
                              prev := smartpay_audit_hash(e, prev);
                              UPDATE voucher_events SET hash = prev WHERE id = e.id;
                          END LOOP;
                      END $$""".replace("%s", "'" + voucher_id + "'"))
        pg.execute("ALTER TABLE voucher_events ENABLE TRIGGER voucher_events_no_update")


def test_a_rewritten_history_passes_verify_but_not_verify_anchors(local_stack, pg, sim, pg_url, anchor_bucket,
                                                                  capsys) -> None:
    bucket, s3 = anchor_bucket
    started = datetime.now(UTC)
    ids = seed_vouchers(pg, 6, status="active")
    at_buffr(sim, ids[:4], status="active")
    at_buffr(sim, ids[4:], status="redeemed")
    time.sleep(2.5)  # older than the stack's ANCHOR_SETTLE_S (2 s): the anchor covers every row so far
    reply = local_stack.invoke("ReconcileFunction", scheduled_event("anchor-test", local_stack.region))
    assert (reply["status"], reply["healed"]) == ("completed", 2)

    written = [a for a in anchors.read_all(s3, bucket) if datetime.fromisoformat(a["written_at"]) >= started]
    assert len(written) == 1
    anchor = written[0]
    last_settled = pg.execute("SELECT max(id) AS n FROM voucher_events WHERE reference <> %s",
                              (reply["run_id"],)).fetchone()["n"]
    assert anchor["kind"] == "reconcile" and anchor["reference"] == reply["run_id"]
    assert anchor["upto_event_id"] == last_settled  # the heal rows are newer than the settle time
    assert set(anchor["cycles"]) == {"old_age 2026-11"}
    # Object Lock in compliance mode: the anchor cannot be deleted, nor its retention shortened
    version = s3.list_object_versions(Bucket=bucket, Prefix=anchor["key"])["Versions"][0]["VersionId"]
    head = s3.head_object(Bucket=bucket, Key=anchor["key"], VersionId=version)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] > datetime.now(UTC)
    with pytest.raises(s3.exceptions.ClientError):
        s3.delete_object(Bucket=bucket, Key=anchor["key"], VersionId=version)

    verify = ["--database-url", pg_url, "audit", "verify", "--anchors", "--anchors-since", started.isoformat()]
    assert main(verify) == 0
    assert f"latest {anchor['key']}" in capsys.readouterr().out
    report = compliance.report(pg, "old_age", "2026-11", anchors=written)
    assert report["anchors"]["latest_verified"]["key"] == anchor["key"]
    assert compliance.checks(report)["latest anchor agrees"]
    assert f"latest verified anchor {anchor['key']} (up to row {anchor['upto_event_id']}" in \
        compliance_render.to_text(report)

    _rewrite_history(pg, ids[0])
    assert main(["--database-url", pg_url, "audit", "verify"]) == 0  # its limit: a consistent rewrite passes
    capsys.readouterr()
    assert main(verify) == 1
    err = capsys.readouterr().err
    assert f"anchors DISAGREE: s3://{bucket}/{anchor['key']} (up to row {anchor['upto_event_id']}" in err
    assert "old_age 2026-11" in err
    report = compliance.report(pg, "old_age", "2026-11", anchors=written)
    assert report["audit_chain"]["ok"] and report["anchors"]["latest_verified"] is None
    assert not compliance.checks(report)["latest anchor agrees"]
    assert "anchors: none of 1 verifies; 1 newer DISAGREE" in compliance_render.to_text(report)
