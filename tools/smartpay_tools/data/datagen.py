"""Realistic synthetic beneficiaries (and payroll rows) for demos, tests and benchmarks.

11-digit ID numbers (YYMMDD + 5 digits, unique), +264 8x mobile numbers, Namibia's 14
regions, and the three grant programmes with their usual amounts.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import TextIO

REGIONS = (
    "Erongo", "Hardap", "//Karas", "Kavango East", "Kavango West", "Khomas", "Kunene",
    "Ohangwena", "Omaheke", "Omusati", "Oshana", "Oshikoto", "Otjozondjupa", "Zambezi",
)
PROGRAMMES = {  # code: (share of beneficiaries, monthly amount in cents)
    "old_age": (0.55, 140000),
    "disability": (0.15, 140000),
    "child_grant": (0.30, 35000),
}
FIRST_NAMES = (
    "Johannes", "Maria", "Petrus", "Ndapewa", "Tuyeni", "Hilma", "Simon", "Selma", "Frieda",
    "Immanuel", "Ndeshi", "Paulus", "Loide", "Kaarina", "Festus", "Martha", "Gabriel", "Aina",
    "Elifas", "Rauna", "Josephine", "Hendrik", "Anna", "Tangeni", "Matheus", "Saara",
)
LAST_NAMES = (
    "Nangolo", "Shikongo", "Amupolo", "Haufiku", "Iipumbu", "Nghidinwa", "Kambonde",
    "Shipanga", "Mwandingi", "Hamutenya", "Kapofi", "Tjiriange", "Gariseb", "Van Wyk",
    "Muller", "Kandjii", "Nujoma", "Angula", "Ekandjo", "Shilongo", "Uusiku", "Katjavivi",
)
FIELDS = ("id_number", "first_name", "last_name", "msisdn", "region", "programme", "status")
PAYROLL_FIELDS = (*FIELDS[:-1], "cycle", "amount_cents")


def _birth_date(rng: random.Random, programme: str) -> date:
    today = date(2026, 11, 1)
    years = {"old_age": (60, 95), "disability": (18, 59), "child_grant": (0, 17)}[programme]
    return today - timedelta(days=rng.randint(years[0] * 365, years[1] * 365 + 364))


def beneficiaries(count: int, seed: int = 2026) -> Iterator[dict[str, str]]:
    rng = random.Random(seed)
    seen_ids: set[str] = set()
    seen_phones: set[str] = set()
    codes, weights = zip(*((c, w) for c, (w, _) in PROGRAMMES.items()), strict=True)
    while len(seen_ids) < count:
        programme = rng.choices(codes, weights)[0]
        id_number = _birth_date(rng, programme).strftime("%y%m%d") + f"{rng.randrange(100000):05d}"
        phone = f"+264{rng.choice(('81', '85'))}{rng.randrange(10**7):07d}"
        if id_number in seen_ids or phone in seen_phones:
            continue
        seen_ids.add(id_number)
        seen_phones.add(phone)
        yield {
            "id_number": id_number,
            "first_name": rng.choice(FIRST_NAMES),
            "last_name": rng.choice(LAST_NAMES),
            "msisdn": phone,
            "region": rng.choice(REGIONS),
            "programme": programme,
            "status": rng.choices(("active", "suspended", "deceased"), (0.97, 0.02, 0.01))[0],
        }


def write_csv(rows: Iterator[dict[str, str]], out: TextIO, fields: tuple[str, ...] = FIELDS) -> int:
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    return count


def payroll(count: int, cycle: str, seed: int = 2026, programme: str | None = None) -> Iterator[dict[str, str]]:
    """Payroll rows of a programme cycle: every active beneficiary with the programme's amount
    (``programme``: everyone enrolled in that one programme, as one programme's payroll is)."""
    for row in beneficiaries(count, seed):
        if row["status"] != "active":
            continue
        if programme is not None:
            row["programme"] = programme
        yield {**row, "cycle": cycle, "amount_cents": str(PROGRAMMES[row["programme"]][1])}


def generate_file(path: Path, count: int, seed: int = 2026) -> int:
    with path.open("w", newline="") as out:
        return write_csv(beneficiaries(count, seed), out)


def generate_payroll_file(path: Path, count: int, cycle: str, seed: int = 2026, programme: str | None = None) -> int:
    """A payroll CSV of ``count`` beneficiaries' cycle (inactive ones are left out, as a payroll would)."""
    with path.open("w", newline="") as out:
        return write_csv(payroll(count, cycle, seed, programme), out, PAYROLL_FIELDS)
