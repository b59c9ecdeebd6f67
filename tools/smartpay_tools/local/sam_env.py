"""An env-vars file for ``sam local invoke|start-api --env-vars FILE`` against the running local stack.

Each function's block holds exactly the variables the template declares for it (SAM passes no
others), with the local stack's values, and every loopback address rewritten to
``host.docker.internal`` so the Lambda containers reach the stack's PostgreSQL, moto, the Buffr
simulator and the stack's Lambda endpoint on the host. ``LOCAL_AWS_ENDPOINT_URL`` and
``LOCAL_LAMBDA_ENDPOINT_URL`` (empty in the template) point boto3 at moto and at that endpoint
(``smartpay.settings.apply_local_endpoints``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from smartpay_tools import PROJECT_ROOT

DOCKER_HOST = "host.docker.internal"
DEFAULT_PATH = PROJECT_ROOT / ".local" / "sam-env.json"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def for_docker(name: str, value: str, host: str = DOCKER_HOST) -> str:
    """``value`` with a loopback host (URL or libpq conninfo) replaced by ``host``."""
    if name == "DATABASE_URL" and value:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(value)
        if str(params.get("host", "")) in LOOPBACK:
            params["host"] = host
        return make_conninfo(**params)
    parts = urlsplit(value)
    if parts.scheme in {"http", "https"} and parts.hostname in LOOPBACK:
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return value


def sam_env_vars(stack: Any, host: str = DOCKER_HOST) -> dict[str, dict[str, str]]:
    """``{"<LogicalId>": {declared variable: value}}`` for every function of the running ``stack``."""
    out: dict[str, dict[str, str]] = {}
    for logical_id, spec in sorted(stack.functions.items()):
        env = stack.env_for(spec)
        block = {name: env.get(name, value) for name, value in spec.environment.items()}
        if "LOCAL_AWS_ENDPOINT_URL" in block and stack.moto is not None:
            block["LOCAL_AWS_ENDPOINT_URL"] = stack.moto.endpoint
        if "LOCAL_LAMBDA_ENDPOINT_URL" in block and stack.lambda_endpoint is not None:
            block["LOCAL_LAMBDA_ENDPOINT_URL"] = stack.lambda_endpoint.url_for(logical_id)
        out[logical_id] = {name: for_docker(name, str(value), host) for name, value in block.items()}
    return out


def write(stack: Any, path: Path = DEFAULT_PATH, host: str = DOCKER_HOST) -> Path:
    """Write the file (it holds local keys and secrets only; ``.local/`` is not committed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sam_env_vars(stack, host), indent=2) + "\n")
    return path
