"""Load a beneficiary CSV into the registry: validated, upserted by ID number, in chunks.

Each chunk is one transaction loaded with COPY into a temporary table and merged with one
``INSERT … ON CONFLICT (id_number) DO UPDATE``; a bad row is reported with its line number
and never written, so nothing half-written remains.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from smartpay_tools.data.datagen import FIELDS, REGIONS

_ID = re.compile(r"^[0-9]{11}$")
_PHONE = re.compile(r"^\+264[0-9]{8,9}$")
_STATUSES = {"active", "suspended", "deceased"}


@dataclass
class ImportReport:
    rows: int = 0
    upserted: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def normalise_phone(raw: str) -> str:
    digits = re.sub(r"[\s()-]", "", raw)
    if digits.startswith("00264"):
        digits = "+" + digits[2:]
    elif digits.startswith("264"):
        digits = "+" + digits
    elif digits.startswith("0"):
        digits = "+264" + digits[1:]
    return digits


def validate(row: dict[str, str], programmes: set[str]) -> tuple[dict[str, str] | None, str | None]:
    clean = {k: (row.get(k) or "").strip() for k in FIELDS}
    clean["status"] = clean["status"] or "active"
    clean["msisdn"] = normalise_phone(clean["msisdn"])
    if not _ID.match(clean["id_number"]):
        return None, "id_number must be 11 digits"
    if not clean["first_name"] or not clean["last_name"]:
        return None, "first_name and last_name are required"
    if not _PHONE.match(clean["msisdn"]):
        return None, "msisdn must be a Namibian number (+264…)"
    if clean["region"] not in REGIONS:
        return None, f"region {clean['region']!r} is not one of Namibia's 14 regions"
    if clean["programme"] not in programmes:
        return None, f"programme {clean['programme']!r} is unknown"
    if clean["status"] not in _STATUSES:
        return None, f"status {clean['status']!r} is not active/suspended/deceased"
    return clean, None


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"id_number", "first_name", "last_name", "msisdn", "region", "programme"} - set(
            reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {', '.join(sorted(missing))}")
        for row in reader:
            yield reader.line_num, row


def merge_sql(source: str, fields: tuple[str, ...], *, keep: tuple[str, ...] = ()) -> str:
    """Upsert beneficiaries from ``source`` by ID number; rows that change nothing are not touched.

    ``keep``: fields set on a new beneficiary but never changed on an existing one (the payroll
    does not re-enrol anyone). A change of ``status`` or ``programme`` fires the registry trigger
    (migration 0011): the beneficiary's open vouchers are held, cancelled or flagged at once.
    """
    updated = [f for f in fields if f != "id_number" and f not in keep]
    return f"""INSERT INTO beneficiaries ({', '.join(fields)})
            SELECT DISTINCT ON (id_number) {', '.join(fields)} FROM {source}
            ON CONFLICT (id_number) DO UPDATE
               SET {', '.join(f'{f} = EXCLUDED.{f}' for f in updated)}, updated_at = now()
             WHERE ({', '.join(f'beneficiaries.{f}' for f in updated)})
                   IS DISTINCT FROM
                   ({', '.join(f'EXCLUDED.{f}' for f in updated)})"""


def _merge(conn: psycopg.Connection, rows: list[dict[str, str]]) -> int:
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS incoming_beneficiaries "
                 "(LIKE beneficiaries INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
    with conn.cursor().copy(f"COPY incoming_beneficiaries ({', '.join(FIELDS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[k] for k in FIELDS])
    return conn.execute(merge_sql("incoming_beneficiaries", FIELDS)).rowcount


def import_file(conninfo: str, path: Path, *, chunk: int = 5000,
                progress: Callable[[int], None] | None = None) -> ImportReport:
    report = ImportReport()
    with psycopg.connect(conninfo, autocommit=True) as conn:  # each chunk its own transaction
        programmes = {r[0] for r in conn.execute("SELECT code FROM programmes")}
        seen: dict[str, int] = {}
        batch: list[dict[str, str]] = []
        for line, raw in read_rows(path):
            report.rows += 1
            clean, problem = validate(raw, programmes)
            if clean is not None and clean["id_number"] in seen:
                clean, problem = None, f"duplicate id_number (first on line {seen[clean['id_number']]})"
            if clean is None:
                report.rejected.append((line, problem or "invalid"))
                continue
            seen[clean["id_number"]] = line
            batch.append(clean)
            if len(batch) >= chunk:
                with conn.transaction():
                    report.upserted += _merge(conn, batch)
                if progress:
                    progress(len(batch))
                batch = []
        if batch:
            with conn.transaction():
                report.upserted += _merge(conn, batch)
            if progress:
                progress(len(batch))
    return report
