"""PII masking for replies and log lines (docs/architecture.md#security).

ID numbers keep their last 4 digits, phone numbers their country code and last 4 digits,
names their initials. The log formatter masks by key *and* by pattern, so an ID number that
slips into a free-text message is still caught.
"""

from __future__ import annotations

import re
from typing import Any

# Where a number starts: not inside a longer token — a letter, digit or underscore right before
# it means it is part of an id (``msg_e22e85010112345f…``, a hex digest), not an ID number or a
# phone — unless that character ends a JSON ``\uXXXX`` escape (a log line is rendered JSON:
# "\x01" or "é" before a number is printed as \u0001 / \u00e9). The same goes for its end.
_START = r"(?:(?<![0-9A-Za-z_])|(?<=\\u[0-9a-fA-F]{4}))"
_END = r"(?![0-9A-Za-z_])"
# Free text that names a person: a name key with a quoted value (``full_name='Anna Angula'``,
# ``"last_name": "Nangolo"``, also JSON-escaped quotes), pydantic's ``input_value='…'`` (a
# validation error echoes what was sent) and PostgreSQL's "Failing row contains (…)" detail.
_NAME_KEYS = r"(?:first_name|last_name|full_name|name)"
# One pass, first alternative wins at each position: ids are kept whole — a UUID (its last group
# can be 11-12 decimal digits, ~0.8 % of them, and a masked voucher id is one nobody can find)
# and our prefixed ids (webhook ``msg_…``, delivery ``dlv_…``; their random part can hold a digit
# run) —, then names in free text, phone numbers, ID numbers.
_PII = re.compile(
    r"(?P<uuid>(?<![0-9A-Za-z-])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"(?![0-9A-Za-z-]))"
    r"|(?P<token>(?<![0-9A-Za-z_-])(?:msg|dlv|req|evt)_[0-9A-Za-z_-]+)"
    rf"|(?P<nkey>\b(?:{_NAME_KEYS}|input_value)\\?[\"']?\s*[:=]\s*)(?P<nq>\\?[\"'])(?P<nval>[^\"'\\\n]{{1,200}})(?P=nq)"
    r"|(?P<frow>Failing row contains \()(?P<fvals>[^)\n]{0,2000})\)"
    rf"|{_START}(?P<cc>\+?264)[0-9]{{4,5}}(?P<phone_tail>[0-9]{{4}}){_END}"
    rf"|{_START}[0-9]{{7}}(?P<id_tail>[0-9]{{4}}){_END}"
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_PLAIN = re.compile(r"^(?:null|-?[0-9]+(?:\.[0-9]+)?|[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9:.+-]+)$")

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
    """Mask what in free text is a national ID number, a Namibian phone number or a person's name
    (after a name key, in a validation error's input, in a failing row); ids stay whole."""
    return _PII.sub(_mask_match, text)


def _mask_value(value: str) -> str:
    """A value out of free text that may be a name: ids and plain numbers/timestamps stay as they
    are (numbers still get the ID/phone pattern), anything else keeps its initials."""
    stripped = value.strip()
    if _UUID.match(stripped) or _PLAIN.match(stripped):
        return _PII.sub(_mask_match, value)
    return mask_name(value) or value


def _mask_match(m: re.Match[str]) -> str:
    if m.group("uuid"):
        return m.group("uuid")
    if m.group("token"):
        return m.group("token")
    if m.group("nkey"):
        return m.group("nkey") + m.group("nq") + _mask_value(m.group("nval")) + m.group("nq")
    if m.group("frow"):
        return m.group("frow") + ",".join(_mask_value(v) for v in m.group("fvals").split(",")) + ")"
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
