"""`smartpay invoke FUNCTION --event FILE` behaves like `sam local invoke`: prints the result."""

import json
import subprocess
import sys

import pytest

from smartpay_tools import PROJECT_ROOT

pytestmark = pytest.mark.integration


def test_invoke_beneficiaries_with_a_saved_event(pg_url) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "smartpay_tools", "--database-url", pg_url, "invoke", "beneficiaries",
         "--event", str(PROJECT_ROOT / "events/beneficiaries/verify.json")],
        capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout[out.stdout.index("{"):])
    assert result["statusCode"] == 200
    assert json.loads(result["body"])["match"] in (True, False)


def test_invoke_unknown_function_is_usage_error(pg_url) -> None:
    out = subprocess.run([sys.executable, "-m", "smartpay_tools", "invoke", "nope"], capture_output=True,
                         text=True, timeout=60, cwd=PROJECT_ROOT)
    assert out.returncode == 2 and "no function" in out.stderr
