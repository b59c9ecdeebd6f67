"""Payroll import: beneficiaries upserted, vouchers issued once, bad rows reported and never written."""

from pathlib import Path

import pytest

from smartpay_tools.data import datagen, payroll_import
from tests import factories

pytestmark = pytest.mark.integration
HEADER = ",".join(datagen.PAYROLL_FIELDS)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


def test_generated_payroll_imports_once(pg, tmp_path) -> None:
    csv_path = tmp_path / "payroll.csv"
    rows = datagen.generate_payroll_file(csv_path, 500, "2026-11")
    first = payroll_import.import_file(pg.info.dsn, csv_path, chunk=120)
    assert (first.rows, first.vouchers_issued, first.beneficiaries_upserted, first.rejected) == (rows, rows, rows, [])
    again = payroll_import.import_file(pg.info.dsn, csv_path, chunk=120)
    assert (again.vouchers_issued, again.already_issued, again.beneficiaries_upserted, again.rejected) == (
        0, rows, 0, [])
    assert factories.count(pg, "SELECT count(*) FROM vouchers") == rows
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE to_status = 'issued' "
                               "AND from_status IS NULL AND source = 'operator'") == rows


def test_bad_rows_are_listed_with_line_numbers_and_write_nothing(pg, tmp_path) -> None:
    suspended = factories.beneficiary(pg, status="suspended", first_name="Old", last_name="Name")
    paid = factories.beneficiary(pg)
    factories.voucher(pg, paid["id"], cycle="2026-11", amount_cents=140000)
    good = "44050267085,Rauna,Shilongo,+264811234567,Oshana,old_age,2026-11,140000"
    csv_path = _write(tmp_path / "p.csv", [
        good,                                                                     # line 2
        "4405026708,Short,Id,+264811234567,Oshana,old_age,2026-11,140000",        # 3 bad id
        "44050267086,A,B,+264811234568,Oshana,old_age,2026-13,140000",            # 4 bad cycle
        "44050267087,A,B,+264811234569,Oshana,old_age,2026-11,12.50",             # 5 float amount
        "44050267088,A,B,+264811234570,Oshana,old_age,2026-11,300001",            # 6 above maximum
        "44050267085,Rauna,Shilongo,+264811234567,Oshana,old_age,2026-11,140000",  # 7 duplicate of 2
        f"{suspended['id_number']},New,Name,+264811234571,Oshana,old_age,2026-11,140000",  # 8 suspended
        f"{paid['id_number']},A,B,{paid['msisdn']},Oshana,old_age,2026-11,99000",  # 9 other amount
        "44050267089,A,B,+264811234572,Nowhere,old_age,2026-11,140000",           # 10 region
        "44050267090,A,B,+264811234573,Oshana,old_age,2020-01,140000",            # 11 expired cycle
    ])
    report = payroll_import.import_file(pg.info.dsn, csv_path)
    assert [line for line, _ in report.rejected] == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    reasons = dict(report.rejected)
    assert reasons[7] == "duplicate id_number (first on line 2)"
    assert reasons[8] == "beneficiary is suspended" and "already issued" in reasons[9]
    assert "maximum" in reasons[6] and "expired" in reasons[11]
    assert (report.vouchers_issued, report.beneficiaries_upserted) == (1, 1)
    assert factories.count(pg, "SELECT count(*) FROM beneficiaries") == 3
    assert pg.execute("SELECT first_name, status FROM beneficiaries WHERE id = %s",
                      (suspended["id"],)).fetchone() == {"first_name": "Old", "status": "suspended"}
    assert factories.count(pg, "SELECT count(*) FROM vouchers") == 2
    assert factories.count(pg, "SELECT count(*) FROM vouchers WHERE amount_cents = 99000") == 0


def test_missing_columns_are_refused(pg, tmp_path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("id_number,first_name,last_name,msisdn,region,programme\n")
    with pytest.raises(ValueError, match="missing columns amount_cents, cycle"):
        payroll_import.import_file(pg.info.dsn, path)
