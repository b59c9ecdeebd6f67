"""A small demo cycle (300 beneficiaries): the terminal shows progress lines and the report while the
functions log to files; the report carries each programme's compliance section (text, CSV and HTML,
read as the auditor role) and ``smartpay audit verify`` runs at its end and passes."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from smartpay_tools import PROJECT_ROOT
from smartpay_tools.data import datagen
from smartpay_tools.local.services import drop_database, free_port
from tests.conftest import ADMIN_URL

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(pg_url, tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One small demo run (its terminal output, its folder), shared by this module's tests."""
    folder = tmp_path_factory.mktemp("demo")
    database = f"smartpay_demo_compliance_{os.getpid()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DATABASE_URL", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "smartpay_tools", "demo", "--port", str(free_port()), "--out",
             str(folder / "reports"), "--logs", str(folder / "logs"), "--beneficiaries", "300",
             "--database-name", database],
            capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT, env=env,
        )
    finally:
        drop_database(ADMIN_URL, database)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert "demo passed" in proc.stdout
    return proc, folder


def test_demo_terminal_shows_progress_lines_and_the_report_and_logs_go_to_files(demo) -> None:
    """The terminal carries a bounded number of progress lines, then the report; every function's
    log lines are in its own file under --logs, none on the terminal."""
    proc, folder = demo
    programmes = sorted(datagen.PROGRAMMES)
    progress, report = proc.stdout.split("[6/6] report\n", 1)
    # [1/6]..[5/6], the log folder, a line per programme's cycle run and per supplementary run, and
    # the two registry changes (mid-cycle, after the runs)
    assert len(progress.splitlines()) <= 5 + 1 + 2 * len(programmes) + 2, progress
    assert f"function logs: {folder / 'logs'}/<Function>.log" in progress
    # the report, audit verify's lines, the files written and the verdict: no log line among them
    lines = report.splitlines()
    assert lines[-1].startswith("demo passed in ")
    assert proc.stderr == ""
    assert not [line for line in proc.stdout.splitlines() if line.lstrip().startswith("{")]
    logs = {p.name: p.read_text() for p in (folder / "logs").glob("*.log")}
    assert {"DisburseFunction.log", "WebhookFunction.log", "ReconcileFunction.log"} <= logs.keys()
    for name in ("DisburseFunction.log", "WebhookFunction.log", "ReconcileFunction.log"):
        records = [json.loads(line) for line in logs[name].splitlines() if line.startswith("{")]
        assert records and all(isinstance(r, dict) for r in records), name  # whole JSON lines, never interleaved
    assert '"_aws"' in logs["DisburseFunction.log"]  # the EMF metric lines too


def test_demo_report_has_compliance_sections_and_audit_verify_passes(demo) -> None:
    proc, folder = demo
    out = folder / "reports"
    programmes = sorted(datagen.PROGRAMMES)

    # Text: one compliance section per programme cycle, every check passing.
    report_text = proc.stdout.split("[6/6] report", 1)[1]
    assert sorted(re.findall(r"^Compliance report: (\S+) \d{4}-\d{2}$", report_text, re.M)) == programmes
    assert report_text.count("Checks: arithmetic PASS, no payment to an ineligible beneficiary PASS, "
                             "audit chain verifies PASS, latest anchor agrees PASS") == len(programmes)
    assert report_text.count("  latest verified anchor anchors/") == len(programmes)

    # audit verify --anchors ran after the report, over the whole trail and every anchor, and passed.
    verify = report_text.split("$ smartpay audit verify --anchors\n", 1)[1]
    assert re.match(r"audit chain OK: ([\d,]+) of \1 rows recomputed over [\d,]+ vouchers \(all vouchers\)", verify)
    assert re.search(r"^anchors OK: (\d+) of s3://smartpay-audit-anchors-\d+-local agree with the recomputed heads; "
                     r"latest anchors/", verify, re.M)
    assert int(re.search(r"anchors OK: (\d+)", verify).group(1)) >= len(programmes)  # a cycle run each, at least
    assert "BROKEN" not in proc.stderr

    # CSV: the compliance rows of each programme, checks included.
    [csv_file] = out.glob("demo-*.csv")
    rows = list(csv.reader(csv_file.open()))
    checks = {(r[1], r[2]): r[3] for r in rows if r[0] == "compliance.check"}
    assert checks == {(p, name): "PASS" for p in programmes
                      for name in ("arithmetic", "no payment to an ineligible beneficiary", "audit chain verifies",
                                   "latest anchor agrees")}
    assert {r[1] for r in rows if r[0] == "compliance.duplicates_prevented" and r[2] == "buffr_duplicates_refused"
            and r[3] != ""} == set(programmes)

    # HTML: one compliance section per programme.
    [html_file] = out.glob("demo-*.html")
    page = html_file.read_text()
    assert sorted(re.findall(r"<h2>Compliance: (\S+) \d{4}-\d{2}</h2>", page)) == programmes
