"""`smartpay invoke FUNCTION --event FILE` behaves like `sam local invoke`: prints the result."""

import json
import subprocess
import sys

import pytest

from smartpay_tools import PROJECT_ROOT
from tests import factories

pytestmark = pytest.mark.integration


def test_invoke_beneficiaries_with_a_saved_event(clean_db, pg) -> None:
    """The saved event verifies Rauna Shilongo's ID number: seeded here, so the answer is a match."""
    event = json.loads((PROJECT_ROOT / "events/beneficiaries/verify.json").read_text())
    person = json.loads(event["body"])
    first, last = person["full_name"].split()
    factories.beneficiary(pg, id_number=person["id_number"], first_name=first, last_name=last)
    out = subprocess.run(
        [sys.executable, "-m", "smartpay_tools", "--database-url", clean_db, "invoke", "beneficiaries",
         "--event", str(PROJECT_ROOT / "events/beneficiaries/verify.json")],
        capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout[out.stdout.index("{"):])
    assert result["statusCode"] == 200
    body = json.loads(result["body"])
    assert body["match"] is True and body["checks"] == {"id_number": True, "full_name": True}
    assert person["id_number"] not in result["body"] and last not in result["body"]  # masked


def test_invoke_unknown_function_is_usage_error(pg_url) -> None:
    out = subprocess.run([sys.executable, "-m", "smartpay_tools", "invoke", "nope"], capture_output=True,
                         text=True, timeout=60, cwd=PROJECT_ROOT)
    assert out.returncode == 2 and "no function" in out.stderr
