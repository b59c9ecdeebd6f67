"""Powertools idempotency on DynamoDB, set up once for every function (docs/architecture.md#idempotency).

* One persistence layer per distinct config (Powertools configures the layer per call, so two
  configs must never share one), created lazily: boto3's client is made on first use, after
  moto (tests) or the real endpoint is in place.
* ``raise_on_no_idempotency_key=True`` everywhere; records live ``IDEMPOTENCY_TTL_SECONDS``
  (default 4 days, beyond Buffr's 3-day retry horizon), not Powertools' 1-hour default.
* Replays are marked by a response hook so handlers can add ``Idempotent-Replayed: true``.
* A completed record is written with one ``PutItem`` of the whole record instead of Powertools'
  ``UpdateItem`` (see :class:`PersistenceLayer`).
* Powertools' errors map to problem replies: in progress → 409 + Retry-After, same key with
  another payload → 422, no key → 400, DynamoDB unreachable → 503.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyKeyError,
    IdempotencyPersistenceConnectionError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from smartpay.errors import Conflict, ProblemError, ServiceUnavailable, Unprocessable
from smartpay.settings import env_int, env_str

REPLAYED = "__idempotent_replayed__"
DEFAULT_TTL = 4 * 24 * 3600

_lock = threading.Lock()
_layers: dict[str, DynamoDBPersistenceLayer] = {}
_configs: dict[str, IdempotencyConfig] = {}


def _mark_replayed(response: Any, record: Any) -> Any:
    if isinstance(response, dict):
        return {**response, REPLAYED: True}
    return response


class PersistenceLayer(DynamoDBPersistenceLayer):
    """Powertools' DynamoDB layer, saving a completed record as one whole-item ``PutItem``.

    Same record, same single unconditional write per success as Powertools' ``UpdateItem`` (the
    key's ``INPROGRESS`` lock is ours until then; Powertools' update has no condition either), so
    on DynamoDB the two cost the same one write. The local stack and tests run on moto, whose
    UpdateExpression parser made the update several times slower than the put
    (``benchmarks/webhook_receipt.py``; figures in docs/performance.md); the put also drops the
    spent in-progress expiry.
    """

    def _update_record(self, data_record: DataRecord) -> None:
        item = {
            **self._get_key(data_record.idempotency_key),
            self.expiry_attr: {"N": str(data_record.expiry_timestamp)},
            self.status_attr: {"S": data_record.status},
            self.data_attr: {"S": data_record.response_data},
        }
        if self.payload_validation_enabled and data_record.payload_hash:
            item[self.validation_key_attr] = {"S": data_record.payload_hash}
        self.client.put_item(TableName=self.table_name, Item=item)


def persistence_layer(name: str) -> DynamoDBPersistenceLayer:
    """The persistence layer for config ``name`` (one per config, per container)."""
    with _lock:
        if name not in _layers:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "dynamodb",
                config=Config(connect_timeout=2, read_timeout=3, retries={"mode": "standard", "max_attempts": 3}),
            )
            _layers[name] = PersistenceLayer(table_name=env_str("IDEMPOTENCY_TABLE"), boto3_client=client)
        return _layers[name]


def config(name: str, *, event_key_jmespath: str = "", payload_validation_jmespath: str = "") -> IdempotencyConfig:
    """The (cached) config ``name``; the first call fixes its key and validation expressions."""
    with _lock:
        if name not in _configs:
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


def header(headers: Mapping[str, str] | None, *names: str) -> str | None:
    """The first of ``names`` present in ``headers``, whatever its casing; blank counts as absent."""
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    for name in names:
        value = lowered.get(name.lower())
        if value is not None and value.strip():
            return value.strip()
    return None


@contextmanager
def problems() -> Iterator[None]:
    """Translate Powertools' idempotency errors into problem replies."""
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
