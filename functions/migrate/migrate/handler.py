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
    if result.get("admin_sql"):
        # The owner may not create roles: grants wait until an administrator runs this SQL.
        logger.warning("database roles missing; an administrator must run admin_sql, then migrate again",
                       extra={"roles_missing": result["roles_missing"]})
    return result
