"""Powertools idempotency on DynamoDB, set up once for every function (docs/architecture.md#idempotency).

* One persistence layer per distinct config (Powertools configures the layer per call, so two
  configs must never share one), created lazily: the DynamoDB client is made on first use, after
  moto (tests) or the real endpoint is in place.
* Powertools' idempotency and botocore are imported on the first idempotent call, not at
  import: they are most of a cold start, and not every request of a function needs them
  (a forged webhook, a voucher lookup). The persistence layer is :mod:`smartpay.idempotency_store`.
* ``raise_on_no_idempotency_key=True`` everywhere; records live ``IDEMPOTENCY_TTL_SECONDS``
  (default 4 days, beyond Buffr's 3-day retry horizon), not Powertools' 1-hour default.
* Replays are marked by a response hook so handlers can add ``Idempotent-Replayed: true``.
* A completed record is written with one ``PutItem`` of the whole record instead of Powertools'
  ``UpdateItem`` (:class:`smartpay.idempotency_store.PersistenceLayer`).
* Powertools' errors map to problem replies: in progress → 409 + Retry-After, same key with
  another payload → 422, no key → 400, DynamoDB unreachable → 503.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from smartpay.errors import Conflict, ProblemError, ServiceUnavailable, Unprocessable
from smartpay.settings import env_int, env_str

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

    from smartpay.idempotency_store import PersistenceLayer

REPLAYED = "__idempotent_replayed__"
DEFAULT_TTL = 4 * 24 * 3600

_lock = threading.Lock()
_layers: dict[str, PersistenceLayer] = {}
_configs: dict[str, IdempotencyConfig] = {}


def _mark_replayed(response: Any, record: Any) -> Any:
    if isinstance(response, dict):
        return {**response, REPLAYED: True}
    return response


def persistence_layer(name: str) -> PersistenceLayer:
    """The persistence layer for config ``name`` (one per config, per container)."""
    with _lock:
        if name not in _layers:
            from smartpay.idempotency_store import PersistenceLayer, dynamodb_client

            _layers[name] = PersistenceLayer(table_name=env_str("IDEMPOTENCY_TABLE"), boto3_client=dynamodb_client())
        return _layers[name]


def config(name: str, *, event_key_jmespath: str = "", payload_validation_jmespath: str = "") -> IdempotencyConfig:
    """The (cached) config ``name``; the first call fixes its key and validation expressions."""
    with _lock:
        if name not in _configs:
            from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

            _configs[name] = IdempotencyConfig(
                event_key_jmespath=event_key_jmespath,
                payload_validation_jmespath=payload_validation_jmespath,
                raise_on_no_idempotency_key=True,
                expires_after_seconds=env_int("IDEMPOTENCY_TTL_SECONDS", DEFAULT_TTL, minimum=60),
                hash_function="sha256",
                response_hook=_mark_replayed,
            )
        return _configs[name]


def run(
    name: str,
    func: Callable[..., dict[str, Any]],
    *,
    data: Mapping[str, Any],
    context: Any,
    event_key_jmespath: str,
    payload_validation_jmespath: str = "",
) -> tuple[dict[str, Any], bool]:
    """Run ``func(data=...)`` at most once per idempotency key; returns (result, replayed).

    ``func`` must return a JSON-safe dict (it is stored in DynamoDB and replayed as is).
    """
    from aws_lambda_powertools.utilities.idempotency import idempotent_function

    cfg = config(name, event_key_jmespath=event_key_jmespath,
                 payload_validation_jmespath=payload_validation_jmespath)
    if context is not None:
        cfg.register_lambda_context(context)
    wrapped = idempotent_function(
        data_keyword_argument="data",
        persistence_store=persistence_layer(name),
        config=cfg,
        key_prefix=f"{os.environ.get('STAGE', 'local')}#{name}",
    )(func)
    with problems():
        result = wrapped(data=dict(data))
    replayed = bool(result.pop(REPLAYED, False)) if isinstance(result, dict) else False
    return result, replayed



@contextmanager
def problems() -> Iterator[None]:
    """Translate Powertools' idempotency errors into problem replies."""
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyInconsistentStateError,
        IdempotencyKeyError,
        IdempotencyPersistenceConnectionError,
        IdempotencyPersistenceLayerError,
        IdempotencyValidationError,
    )

    try:
        yield
    except IdempotencyAlreadyInProgressError:
        raise Conflict("A request with this idempotency key is still in progress; retry shortly.",
                       title="Request in progress", headers={"Retry-After": "2"}) from None
    except IdempotencyValidationError:
        raise Unprocessable("This idempotency key was already used with a different request body.",
                            title="Idempotency key reused") from None
    except IdempotencyKeyError:
        raise ProblemError("An idempotency key is required (Idempotency-Key header).",
                           status=400, title="Idempotency key required",
                           errors=[{"location": "header.Idempotency-Key", "message": "required"}]) from None
    except (IdempotencyPersistenceConnectionError, IdempotencyPersistenceLayerError,
            IdempotencyInconsistentStateError) as exc:
        raise ServiceUnavailable("The idempotency store is unavailable; retry later.",
                                 retry_after=5) from exc
