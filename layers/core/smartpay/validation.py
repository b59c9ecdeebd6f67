"""One format for validation errors, wherever input is checked.

Pydantic's errors become ``{"location": "body.data.voucher_id", "message": …, "type": …}``:
the ``errors[]`` of a 422 problem reply (Powertools' resolver, the webhook body, which is parsed
only after its signature is checked) and the message of a refused direct invocation (reconcile's
events, the internal events between functions). Locations are dotted paths; an error with none
is about the whole input (``body`` for a request, ``event`` for an invocation).

Powertools' event handler (for :class:`RequestValidationError`) is imported only where a
request's error is raised: a function without an API (reconcile) validates its events here and
never imports the resolvers (~24 ms of its cold start, docs/performance.md#cold-start-of-every-function).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def details(errors: Iterable[Mapping[str, Any]], *, prefix: tuple[Any, ...] = (), whole: str = "body") -> list[dict[str, str]]:
    """Pydantic-style errors (``loc``, ``msg``, ``type``) in the one format callers see."""
    out = []
    for error in errors:
        parts = [str(p) for p in (*prefix, *error.get("loc", ()))]
        out.append({"location": ".".join(parts) if parts else whole, "message": str(error.get("msg", "invalid")),
                    "type": str(error.get("type", "invalid"))})
    return out


def summary(found: list[dict[str, str]]) -> str:
    """``location: message; …`` — the same details as one line (for an invocation's error message)."""
    return "; ".join(f"{d['location']}: {d['message']}" for d in found)


def request_model(model: type[Model], value: Any, *, prefix: tuple[Any, ...] = ("body",)) -> Model:
    """Validate part of an HTTP request outside the resolver's own validation; a failure is the
    resolver's :class:`RequestValidationError`, so it becomes the same 422 problem reply."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

        raise RequestValidationError([{**e, "loc": (*prefix, *e["loc"])}
                                      for e in exc.errors(include_url=False)]) from None


class InvalidEvent(ValueError):
    """A direct invocation's event is not what the function accepts; the message names each field."""

    def __init__(self, what: str, found: list[dict[str, str]]) -> None:
        super().__init__(f"invalid {what}: {summary(found)}")
        self.errors = found


def event_model(model: type[Model], value: Any, *, what: str) -> Model:
    """Validate a direct invocation's event (no HTTP reply to give): :class:`InvalidEvent` if it is not ``model``."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise InvalidEvent(what, details(exc.errors(include_url=False), whole="event")) from None
