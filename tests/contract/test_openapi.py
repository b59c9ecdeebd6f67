"""The published API contract: generated from the resolvers, committed, served, and fuzzed."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from smartpay_tools import PROJECT_ROOT
from smartpay_tools.local import openapi
from tests import factories

pytestmark = pytest.mark.integration


def test_committed_document_matches_the_code() -> None:
    committed = (PROJECT_ROOT / "openapi.json").read_text()
    assert committed == openapi.render(openapi.build()), "run `smartpay openapi` and commit openapi.json"


def test_document_covers_every_template_route() -> None:
    from smartpay_tools.local.template import Template

    document = openapi.build()
    for spec in Template().functions().values():
        for route in spec.routes:
            operation = document["paths"][route.path][route.method.lower()]
            assert "422" in operation["responses"] and "503" in operation["responses"]
            assert ("security" in operation and operation["security"] == []) == (route.authorizer is None)


def test_gateway_serves_the_document_and_swagger_ui(gateway_url) -> None:
    assert httpx.get(f"{gateway_url}/openapi.json").json()["info"]["title"] == openapi.TITLE
    page = httpx.get(f"{gateway_url}/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    asset = httpx.get(f"{gateway_url}/docs/static/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000


def test_fuzzing_finds_no_server_errors_and_no_contract_breaks(gateway_url, api_keys, pg, tmp_path) -> None:
    for _ in range(5):
        factories.beneficiary(pg)
    st = Path(sys.executable).with_name("st")  # schemathesis' CLI, installed beside this interpreter
    assert st.exists(), f"schemathesis is a test dependency and is missing: {st}"
    cmd = [
        str(st), "run", f"{gateway_url}/openapi.json",
        "--url", gateway_url,
        "-H", f"x-api-key: {api_keys['operator']}",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                    "response_schema_conformance",
        "--max-examples", "25", "--seed", "2026", "--request-timeout", "30",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=420, cwd=tmp_path)
    summary = out.stdout[-4000:]
    assert out.returncode == 0, summary + out.stderr[-2000:]
    assert "No issues found" in out.stdout or "passed" in out.stdout.lower(), summary
    # The fuzzer must actually have exercised every operation.
    document = json.loads((PROJECT_ROOT / "openapi.json").read_text())
    operations = sum(len(ops) for ops in document["paths"].values())
    assert operations >= 2
