"""PII masking for replies and log lines (docs/architecture.md#security).

ID numbers keep their last 4 digits, phone numbers their country code and last 4 digits,
names their initials. The log formatter masks by key *and* by pattern, so an ID number that
slips into a free-text message is still caught.
"""

from __future__ import annotations

import re
from typing import Any

# Where a number starts: not right after a digit — unless that digit ends a JSON ``\uXXXX`` escape
# (a log line is rendered JSON: "\x01" or "é" before a number is printed as \u0001 / \u00e9).
_START = r"(?:(?<![0-9])|(?<=\\u[0-9a-fA-F]{4}))"
# One pass, first alternative wins at each position: a UUID is kept whole (its last group can be
# 11-12 decimal digits, ~0.8 % of them, and a masked voucher id is one nobody can find), then
# phone numbers, then ID numbers.
_PII = re.compile(
    r"(?P<uuid>(?<![0-9A-Za-z-])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"(?![0-9A-Za-z-]))"
    rf"|{_START}(?P<cc>\+?264)[0-9]{{4,5}}(?P<phone_tail>[0-9]{{4}})(?![0-9])"
    rf"|{_START}[0-9]{{7}}(?P<id_tail>[0-9]{{4}})(?![0-9])"
)

#: Keys whose values are PII wherever they appear in a structured log record.
PII_KEYS = {
    "id_number": "id",
    "beneficiary_id_number": "id",
    "msisdn": "phone",
    "phone": "phone",
    "first_name": "name",
    "last_name": "name",
    "full_name": "name",
    "name": "name",
}


def mask_id_number(value: str | None) -> str | None:
    if not value:
        return value
    return "*" * max(len(value) - 4, 0) + value[-4:]


def mask_msisdn(value: str | None) -> str | None:
    if not value:
        return value
    prefix = "+264" if value.startswith("+264") else ""
    rest = value[len(prefix):]
    return prefix + "*" * max(len(rest) - 4, 0) + rest[-4:]


def mask_name(value: str | None) -> str | None:
    if not value:
        return value
    return " ".join(part[0] + "*" * (len(part) - 1) for part in value.split())


_MASKERS = {"id": mask_id_number, "phone": mask_msisdn, "name": mask_name}


def scrub_text(text: str) -> str:
    """Mask anything in free text that looks like a national ID number or a Namibian phone number."""
    return _PII.sub(_mask_match, text)


def _mask_match(m: re.Match[str]) -> str:
    if m.group("uuid"):
        return m.group("uuid")
    if m.group("cc"):
        return m.group("cc") + "*****" + m.group("phone_tail")
    return "*******" + m.group("id_tail")


def scrub(value: Any, key: str | None = None, *, patterns: bool = True) -> Any:
    """Recursively mask PII in a structure (dicts by key, strings by pattern).

    ``patterns=False`` masks by key only: for the log formatter, which masks patterns once over
    the whole rendered line (one regex pass per line rather than one per string in it).
    """
    if key is not None and key.lower() in PII_KEYS and isinstance(value, str):
        return _MASKERS[PII_KEYS[key.lower()]](value)
    if isinstance(value, dict):
        return {k: scrub(v, k if isinstance(k, str) else None, patterns=patterns) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, patterns=patterns) for v in value]
    if isinstance(value, str) and patterns:
        return scrub_text(value)
    return value
