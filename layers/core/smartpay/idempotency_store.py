"""The DynamoDB persistence layer behind :mod:`smartpay.idempotency` (imported on first use).

Powertools' own layer and record format (key, expiry, in-progress expiry, status, data,
validation hash), with two changes:

* its client is a plain botocore client with explicit timeouts and retries (boto3 adds only a
  session around the same client);
* a completed record is saved as one whole-item ``PutItem`` (see :class:`PersistenceLayer`).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord


def dynamodb_client() -> Any:
    """A DynamoDB client with bounded timeouts and retries (endpoint and region from the environment)."""
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "dynamodb",
        config=Config(connect_timeout=2, read_timeout=3, retries={"mode": "standard", "max_attempts": 3}),
    )


class PersistenceLayer(DynamoDBPersistenceLayer):
    """Powertools' DynamoDB layer, saving a completed record as one whole-item ``PutItem``.

    Same record, same single unconditional write per success as Powertools' ``UpdateItem`` (the
    key's ``INPROGRESS`` lock is ours until then; Powertools' update has no condition either), so
    on DynamoDB the two cost the same one write. On moto (the local stack and tests) the put is
    the cheaper call (docs/performance.md); it also drops the spent in-progress expiry.
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
