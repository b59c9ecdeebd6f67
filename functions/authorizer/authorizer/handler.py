"""REQUEST authorizer. Raises ``Unauthorized`` (API Gateway: 401) for a missing or unknown key;
otherwise returns a policy allowing exactly the routes the principal's scopes open, so API
Gateway itself answers 403 for the rest (and the policy can be cached per key)."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerRequestEvent,
)

from smartpay import auth, coldstart, snapstart
from smartpay.observability import logger
from smartpay.settings import env_int, secret


def _key_store() -> list[dict]:
    """Deployed: every SecureString under ``API_KEYS_PATH`` (one per key, cached for
    ``SECRETS_MAX_AGE``); locally the env-vars file's ``API_KEYS`` list."""
    path = os.environ.get("API_KEYS_PATH")
    if not path:
        return auth.parse_store(secret("API_KEYS"))
    from aws_lambda_powertools.utilities import parameters

    values = parameters.get_parameters(path, decrypt=True, max_age=env_int("SECRETS_MAX_AGE", 300, minimum=0))
    return auth.parse_store("[" + ",".join(str(values[name]) for name in sorted(values)) + "]")


def _resource_arn(method_arn: str, method: str, path: str) -> str:
    # arn:aws:execute-api:region:account:api-id/stage/METHOD/resource
    api_part, _, _ = method_arn.partition("/")
    stage = method_arn.split("/")[1]
    wildcard = "/".join("*" if seg.startswith("{") else seg for seg in path.strip("/").split("/"))
    return f"{api_part}/{stage}/{method}/{wildcard}"


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = APIGatewayAuthorizerRequestEvent(event)
    presented = request.headers.get(os.environ.get("API_KEY_HEADER", "x-api-key"))  # any casing
    principal = auth.authenticate(presented, _key_store())
    if principal is None:
        logger.warning("api key rejected", extra={"path": request.path, "key_present": bool(presented)})
        raise Exception("Unauthorized")  # API Gateway's contract for a 401
    allowed = [_resource_arn(request.method_arn, m, p) for m, p in auth.routes_for(principal.scopes)]
    logger.info("api key accepted", extra={"principal": principal.principal, "key_id": principal.key_id})
    statement: list[dict[str, Any]] = [
        {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": allowed or [request.method_arn]}
    ]
    if not allowed:
        statement[0]["Effect"] = "Deny"
    result: dict[str, Any] = {
        "principalId": principal.principal,
        "policyDocument": {"Version": "2012-10-17", "Statement": statement},
        "context": {
            "principal": principal.principal,
            "keyId": principal.key_id,
            "scopes": " ".join(sorted(principal.scopes)),
        },
    }
    if principal.usage_key:
        # The API's key source is AUTHORIZER: this names the principal's usage plan (throttle, quota).
        result["usageIdentifierKey"] = principal.usage_key
    return result


# SnapStart: primed before the snapshot, connections and secrets renewed after each restore.
snapstart.register(snapstart.prime_modules("aws_lambda_powertools.utilities.parameters"))
coldstart.end()  # the init is over: freeze what it loaded, collector back on (smartpay.coldstart)
