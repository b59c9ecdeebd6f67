"""Migrate function: applies pending migrations; safe to invoke twice or concurrently."""

from __future__ import annotations

from typing import Any

from smartpay import migrate
from smartpay.observability import logger
from smartpay.settings import database_url


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result = migrate.apply(database_url())
    logger.info("migrations", extra=result)
    return result
