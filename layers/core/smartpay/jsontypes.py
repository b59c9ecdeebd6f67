"""Types at the JSON edges whose pydantic reading is exactly what the OpenAPI document says.

Pydantic's lax mode reads more than JSON Schema allows: a number (or a string of digits) as a
Unix time for a datetime. The contract fuzzer holds the API to its document, so a date-time is
an RFC 3339 string here, nothing else (a number is refused, as the document says).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator, Field

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339_text(value: Any) -> Any:
    if isinstance(value, datetime):  # built in code, not read from JSON
        return value
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string, not a number")
    if not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-11-02T08:00:00Z")
    return value


#: A date-time with an offset, given as an RFC 3339 string (JSON Schema ``format: date-time``).
DateTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]

#: The largest integer every JSON reader holds exactly (2^53 - 1, within PostgreSQL's bigint).
JSON_INT_MAX = 2**53 - 1
#: A count or an amount in cents at the JSON edge, bounded (``minimum``/``maximum`` in the
#: document): a number no column can hold is refused at the edge (422), never a 500 behind it.
Count = Annotated[int, Field(ge=0, le=JSON_INT_MAX)]
