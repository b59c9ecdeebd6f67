"""PII masking for replies and log lines (DESIGN §8).

ID numbers keep their last 4 digits, phone numbers their country code and last 4 digits,
names their initials. The log formatter masks by key *and* by pattern, so an ID number that
slips into a free-text message is still caught.
"""

from __future__ import annotations

import re
from typing import Any

_ID_NUMBER = re.compile(r"(?<![0-9])[0-9]{7}([0-9]{4})(?![0-9])")
_MSISDN = re.compile(r"(?<![0-9])(\+?264)[0-9]{4,5}([0-9]{4})(?![0-9])")

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
    text = _MSISDN.sub(lambda m: m.group(1) + "*****" + m.group(2), text)
    return _ID_NUMBER.sub(lambda m: "*******" + m.group(1), text)


def scrub(value: Any, key: str | None = None) -> Any:
    """Recursively mask PII in a structure (dicts by key, strings by pattern)."""
    if key is not None and key.lower() in PII_KEYS and isinstance(value, str):
        return _MASKERS[PII_KEYS[key.lower()]](value)
    if isinstance(value, dict):
        return {k: scrub(v, k if isinstance(k, str) else None) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value
