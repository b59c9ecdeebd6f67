"""Domain errors that handlers map to HTTP problem replies (RFC 9457).

Services raise these; they never build HTTP responses themselves.
"""

from __future__ import annotations

from typing import Any


class ProblemError(Exception):
    """An error with an HTTP status and a problem body; safe to show to the caller."""

    status: int = 400
    title: str = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title
        self.errors = errors or []
        self.headers = headers or {}
        self.extra = extra or {}


class NotFound(ProblemError):
    status = 404
    title = "Not found"


class Conflict(ProblemError):
    status = 409
    title = "Conflict"


class Unprocessable(ProblemError):
    status = 422
    title = "Unprocessable content"


class Unauthenticated(ProblemError):
    """The caller could not be authenticated (e.g. a webhook whose signature does not verify)."""

    status = 401
    title = "Unauthenticated"


class Forbidden(ProblemError):
    status = 403
    title = "Forbidden"


class ServiceUnavailable(ProblemError):
    """A dependency (database, DynamoDB, Buffr) is down; the caller should retry later."""

    status = 503
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5, **kwargs: Any) -> None:
        headers = {"Retry-After": str(retry_after), **kwargs.pop("headers", {})}
        super().__init__(detail, headers=headers, **kwargs)


class DatabaseUnavailable(ServiceUnavailable):
    def __init__(self, detail: str = "The database is unavailable; retry later.") -> None:
        super().__init__(detail, retry_after=5)


class ConfigError(RuntimeError):
    """Configuration is missing or invalid; names the variable so an operator can fix it."""
