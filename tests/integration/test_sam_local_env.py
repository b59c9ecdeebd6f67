"""SAM local with Docker, without Docker: every function's environment is resolved by SAM CLI's own
code from the built template and the env-vars file the local stack writes (only the variables the
template declares; the file's block for the function; a clean shell; Stage=local, af-south-1 as in
samconfig.toml), and the BUILT function (.aws-sam/build, python3.12) is invoked in a subprocess
with exactly that environment against the running local stack, host.docker.internal -> 127.0.0.1.
Every saved event under events/<function>/ is invoked as it is (after `smartpay seed-events`;
webhook events re-signed as `smartpay sign-event` does)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smartpay_tools import PROJECT_ROOT
from smartpay_tools.data import saved_events
from smartpay_tools.local import sam_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # SAM CLI's own, on every template read

BUILD = PROJECT_ROOT / ".aws-sam" / "build"
SOURCES = ("template.yaml", "functions", "layers", "Makefile")
FOLDERS = {"authorizer": "AuthorizerFunction", "beneficiaries": "BeneficiariesFunction",
           "disburse": "DisburseFunction", "migrate": "MigrateFunction", "reconcile": "ReconcileFunction",
           "webhook": "WebhookFunction"}
#: events/webhooks/ holds `smartpay replay` files (headers + body), not Lambda events.
REPLAY_FILES = "webhooks"
#: Saved events in the order an operator would send them, and the status each answers with.
EXPECTED = {
    "authorizer/buffr_key.json": "Allow",
    "migrate/migrate.json": "migrated",
    "beneficiaries/get.json": 200,
    "beneficiaries/verify.json": 200,
    "disburse/issue.json": 201,
    "disburse/get.json": 200,
    "disburse/cycle_status.json": 200,
    "disburse/cycle_chunk.json": {"batchItemFailures": []},
    "webhook/buffr.json": 200,
    "reconcile/vouchers.json": "completed",
    "reconcile/incremental.json": "completed",
    "reconcile/full.json": "completed",
    "reconcile/dry_run.json": "completed",
    "reconcile/redisburse.json": "completed",
    "reconcile/shard.json": "completed",
    "reconcile/scheduled.json": "completed",
    "reconcile/report_compliance.json": "report",
    "reconcile/report_cycle.json": "report",
    "reconcile/report_run.json": "report",
}

BOOTSTRAP = r"""
import importlib, json, os, sys, time, uuid
handler, event_path = sys.argv[1], sys.argv[2]
module, name = handler.rsplit(".", 1)
class Context:
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    memory_limit_in_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:af-south-1:123456789012:function:" + function_name
    aws_request_id = str(uuid.uuid4())
    log_group_name = log_stream_name = "local"
    _deadline = time.time() + int(os.environ["AWS_LAMBDA_FUNCTION_TIMEOUT"])
    def get_remaining_time_in_millis(self):
        return max(int((self._deadline - time.time()) * 1000), 0)
try:
    result = {"result": getattr(importlib.import_module(module), name)(json.load(open(event_path)), Context())}
except Exception as exc:
    result = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
print("\n" + json.dumps(result, default=str))
"""


def _python312() -> str:
    from smartpay_tools.local import lambda_python

    found = lambda_python.find()
    if found is None:
        pytest.fail(lambda_python.HOW_TO_GET_IT, pytrace=False)
    return str(found)


def _stale() -> bool:
    built = BUILD / "template.yaml"
    if not built.exists():
        return True
    newest = max(p.stat().st_mtime for s in SOURCES for p in
                 ([PROJECT_ROOT / s] if (PROJECT_ROOT / s).is_file() else (PROJECT_ROOT / s).rglob("*"))
                 if p.is_file() and "__pycache__" not in p.parts)
    return newest > built.stat().st_mtime


@pytest.fixture(scope="session")
def built() -> Path:
    """`make build` once per session, only when the sources are newer than .aws-sam/build (CI builds first)."""
    if _stale():
        out = subprocess.run(["make", "build"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1100)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return BUILD


@pytest.fixture(scope="module")
def sam_stack(built: Path) -> Iterator[Any]:
    """Its own database and local stack (moto, simulator, Lambda endpoint), seeded as documented."""
    from smartpay import migrate
    from smartpay_tools.local.services import drop_database, ensure_database
    from smartpay_tools.local.stack import LocalStack
    from tests.conftest import ADMIN_URL

    name = f"smartpay_samenv_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = ensure_database(ADMIN_URL, name)
    stack = LocalStack(database_url=url, simulator_port=0, webhook_knobs={"enabled": False})
    try:
        migrate.apply(url)
        stack.start_services(migrate=False)
        saved_events.seed(url)
        yield stack
    finally:
        stack.stop()
        drop_database(ADMIN_URL, name)


@pytest.fixture(scope="module")
def env_vars_file(sam_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = sam_env.write(sam_stack, tmp_path_factory.mktemp("sam") / "sam-env.json")
    text = path.read_text()
    assert "127.0.0.1" not in text and "localhost" not in text and "host.docker.internal" in text
    return path


@functools.cache
def _functions() -> Any:
    """SAM CLI's view of the built template, as `sam local` builds it (samconfig: Stage=local, af-south-1)."""
    from samcli.lib.providers.sam_function_provider import SamFunctionProvider
    from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider

    stacks, _ = SamLocalStackProvider.get_stacks(str(BUILD / "template.yaml"), parameter_overrides={"Stage": "local"},
                                                 global_parameter_overrides={"AWS::Region": "af-south-1"})
    return SamFunctionProvider(stacks)


def sam_environment(logical_id: str, env_vars: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The container environment `sam local invoke <logical_id> --env-vars FILE` would give (SAM's own code)."""
    from samcli.commands.local.lib.local_lambda import LocalLambdaRunner

    provider = _functions()
    function = provider.get(logical_id)
    declared = function.environment["Variables"]
    # A clean operator shell: SAM lets a shell variable of a declared name win over the template.
    for name in [*declared, "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]:
        monkeypatch.delenv(name, raising=False)
    runner = LocalLambdaRunner(local_runtime=None, function_provider=provider, cwd=str(BUILD),
                               real_path=str(PROJECT_ROOT), aws_region="af-south-1", env_vars_values=env_vars)
    env = runner._make_env_vars(function).resolve()
    assert set(env) - set(declared) <= {k for k in env if k.startswith("AWS_")}  # nothing undeclared but SAM's own
    return env


def invoke_built(logical_id: str, event: dict[str, Any], env: dict[str, str], tmp: Path) -> dict[str, Any]:
    """The built function under python3.12 with exactly ``env`` (host.docker.internal -> 127.0.0.1)."""
    function = _functions().get(logical_id)
    code, layer = Path(function.codeuri), Path(function.layers[0].codeuri) / "python"
    container = {k: v.replace(sam_env.DOCKER_HOST, "127.0.0.1") for k, v in env.items()}
    container.update({"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TZ": "UTC", "LAMBDA_TASK_ROOT": str(code),
                      "_HANDLER": function.handler, "PYTHONPATH": f"{code}{os.pathsep}{layer}"})
    event_file = tmp / f"{logical_id}-{uuid.uuid4().hex[:8]}.json"
    event_file.write_text(json.dumps(event))
    out = subprocess.run([_python312(), "-c", BOOTSTRAP, function.handler, str(event_file)], env=container,
                         cwd=str(code), capture_output=True, text=True, timeout=int(env["AWS_LAMBDA_FUNCTION_TIMEOUT"]) + 60)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _outcome(path: str, answer: dict[str, Any]) -> Any:
    assert "errorType" not in answer, (path, answer)
    result = answer["result"]
    if "statusCode" in result:
        return result["statusCode"]
    if path.startswith("authorizer/"):
        return result["policyDocument"]["Statement"][0]["Effect"]
    if path.startswith("migrate/"):
        return "migrated" if "applied" in result and not result.get("admin_sql") else result
    if "text" in result:
        return "report"
    return result.get("status", result)


def test_every_saved_lambda_event_is_listed_here() -> None:
    saved = {str(p.relative_to(PROJECT_ROOT / "events")) for p in (PROJECT_ROOT / "events").glob("*/*.json")
             if p.parent.name != REPLAY_FILES}
    assert saved == set(EXPECTED)
    assert {p.name for p in (PROJECT_ROOT / "events").iterdir() if p.is_dir()} - {REPLAY_FILES} == set(FOLDERS)


def test_the_env_vars_file_declares_nothing_the_template_does_not(sam_stack: Any, env_vars_file: Path) -> None:
    blocks = json.loads(env_vars_file.read_text())
    assert set(blocks) == set(sam_stack.functions)
    for logical_id, block in blocks.items():
        assert set(block) == set(sam_stack.functions[logical_id].environment), logical_id
        assert block["STAGE"] == "local" and block["DATABASE_SSLMODE"] == "disable"
        assert block["LOCAL_AWS_ENDPOINT_URL"].startswith("http://host.docker.internal:")
        if "DATABASE_URL" in block:
            assert "host=host.docker.internal" in block["DATABASE_URL"]


def test_saved_events_through_the_built_functions_in_sams_environment(
        sam_stack: Any, env_vars_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from smartpay_tools.buffr_sim.webhook_sender import resign_event

    env_vars = json.loads(env_vars_file.read_text())
    environments = {logical_id: sam_environment(logical_id, env_vars, monkeypatch) for logical_id in set(FOLDERS.values())}
    assert environments["WebhookFunction"]["IDEMPOTENCY_TABLE"] == "smartpay-webhook-idempotency-local"
    assert environments["WebhookFunction"]["AWS_SAM_LOCAL"] == "true"  # so tracing stays off, as in SAM
    seen = {}
    for path in EXPECTED:
        folder = path.split("/")[0]
        event = json.loads((PROJECT_ROOT / "events" / path).read_text())
        if folder == "webhook":
            resign_event(event, sam_stack.webhook_secrets)  # `smartpay sign-event FILE`
        seen[path] = _outcome(path, invoke_built(FOLDERS[folder], event, environments[FOLDERS[folder]], tmp_path))
    assert seen == EXPECTED
    # What the saved events did, read back from the stack's database and its Buffr simulator.
    import psycopg

    with psycopg.connect(sam_stack.postgres.url) as conn:
        status = dict(conn.execute("SELECT id::text, status FROM vouchers").fetchall())
    assert status["6f1c2a7e-3b9d-4c21-9e55-0a7d4b8c1f20"] == "issued"  # read, never sent: no run of it
    assert status["7d3f1c2a-5b8e-4f61-9a0d-2c4e6b8a1f01"] == "active"  # the signed webhook applied
    # redisburse.json re-sent the voucher Buffr never got through the disburse function: the built
    # reconcile function reached the stack's Lambda endpoint (LOCAL_LAMBDA_ENDPOINT_URL).
    assert status["3f0b6a52-8f1e-4b5e-9a51-2d9f1f0c7a10"] == "active"
    assert sam_stack.lambda_endpoint is not None
    issued = [v for v, s in status.items() if v not in {x.id for x in saved_events.VOUCHERS}]
    assert len(issued) == 1 and status[issued[0]] == "issued"  # issue.json's voucher (runs pay it)


def test_seed_events_is_safe_to_repeat_and_audits_every_step(sam_stack: Any, capsys) -> None:
    import psycopg

    from smartpay_tools.cli import app

    assert app.main(["--database-url", sam_stack.postgres.url, "seed-events"]) == 0  # the command, again
    assert "0 beneficiaries, 0 vouchers, 0 runs, 0 cycle runs added" in capsys.readouterr().out
    with psycopg.connect(sam_stack.postgres.url) as conn:
        audit = conn.execute("""SELECT voucher_id::text, array_agg(to_status ORDER BY id) FROM voucher_events
                                WHERE reference = %s GROUP BY 1""", (saved_events.REFERENCE,)).fetchall()
    expected = {"issued": ["issued"], "pending": ["issued", "pending"], "active": ["issued", "pending", "active"]}
    assert dict(audit) == {v.id: expected[v.status] for v in saved_events.VOUCHERS}
