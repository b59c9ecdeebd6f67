"""Migrate function: applies pending migrations; safe to invoke twice or concurrently.

Secrets Manager also invokes it to rotate the function roles' logins (migrate/rotation.py): the
schema owner's connection and the code that sets role passwords live here.
"""

from __future__ import annotations

from typing import Any

from migrate import rotation
from smartpay import access, coldstart, migrate
from smartpay.observability import logger, metrics
from smartpay.settings import database_url, env_str


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics  # a failed rotation's DatabaseLoginRotationFailed, flushed even as the step raises
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if rotation.is_rotation_event(event):
        return rotation.rotate(event)
    url = database_url()
    result = migrate.apply(url)
    role_secrets = env_str("ROLE_SECRETS", "")
    if role_secrets:
        # The template created the database: each function role's login comes from its secret.
        result.update(access.apply_role_secrets(url, role_secrets))
    logger.info("migrations", extra=result)
    if result.get("admin_sql"):
        # The owner may not create roles: grants wait until an administrator runs this SQL.
        logger.warning("database roles missing; an administrator must run admin_sql, then migrate again",
                       extra={"roles_missing": result["roles_missing"]})
    return result


coldstart.end()  # the init is over: freeze what it loaded, collector back on (smartpay.coldstart)
