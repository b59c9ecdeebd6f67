"""SAM ``--env-vars`` files: ``{"Parameters": {...all functions...}, "<LogicalId>": {...}}``.

As with ``sam local``, a value only reaches a function if the template declares that variable
for it, so the local stack cannot grow configuration that the deployed stack lacks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from smartpay_tools import PROJECT_ROOT

DEFAULT_ENV_FILE = PROJECT_ROOT / "env.local.json"


def load(path: Path | None = None) -> dict[str, Any]:
    return json.loads((path or DEFAULT_ENV_FILE).read_text())


def function_env(declared: dict[str, str], env_file: dict[str, Any], logical_id: str) -> dict[str, str]:
    """The template's variables, overridden by the file's ``Parameters`` then the function's own block."""
    result = dict(declared)
    for block in (env_file.get("Parameters", {}), env_file.get(logical_id, {})):
        for key, value in block.items():
            if key in result:
                result[key] = "" if value is None else str(value)
    return result


def local_settings(env_file: dict[str, Any]) -> dict[str, Any]:
    """Settings only the local stack and tools read (ports, plain local API keys for curl/demo)."""
    return dict(env_file.get("LocalStack", {}))
