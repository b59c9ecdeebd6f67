"""Cold start of every function against a plain Powertools baseline measured in the same run.

Every function in template.yaml (so a function added later is measured too): each sample is a
fresh interpreter with the function's own environment (the local stack's, as the Docker-free
runner gives it) that times

* **init**: importing the handler module (imports + module-level setup: what a Lambda cold
  start pays before the first event), and
* **first request**: init + the first invocation of a real event against the local services
  (PostgreSQL, DynamoDB on moto, the Buffr simulator), each sample on its own fresh data.

The baseline is a plain Powertools function's init (boto3, httpx, psycopg, pydantic; Logger,
Metrics, Tracer, the REST resolver, the DynamoDB idempotency layer, an httpx client). Samples
alternate baseline and functions so machine noise hits all alike; figures are medians.
Targets are the build's two trees: the source tree (this venv's Python) and the ``sam build``
output (``make build``: python3.12 with its .pyc), each with its own baseline.
Beside them, the *floor* of an API function: only the libraries its first request needs
(pydantic, the REST resolver with OpenAPI validation, psycopg and its pool, Logger/Metrics/Tracer).
Target: every function's init <= 0.35 x the baseline. With SnapStart (the API functions' hooks,
run here as the runtime runs them) it also reports the init above the floor (goal: within 0.02 x
the baseline), the priming paid once per version, the work left after a restore, and the first
request after a simulated restore (the restore hooks + the request; goal: <= 0.15 x the
baseline). Ends with one JSON line (``worst_ratio``).

    python benchmarks/cold_start.py [--samples 5] [--target source|built|both]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import _common

ROOT = _common.ROOT
BUILD = ROOT / ".aws-sam" / "build"
TARGET_RATIO = 0.35
SNAP_INIT_OVER_FLOOR = 0.02
SNAP_FIRST_RATIO = 0.15
MARK = "@@cold-start "

BASELINE = textwrap.dedent("""
    import time
    t0, c0 = time.perf_counter(), time.process_time()
    import boto3, httpx, psycopg, pydantic
    from aws_lambda_powertools import Logger, Metrics, Tracer
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer, IdempotencyConfig, idempotent_function)
    logger = Logger(service="baseline")
    metrics = Metrics(namespace="Baseline")
    tracer = Tracer(service="baseline")
    app = APIGatewayRestResolver(enable_validation=True)
    store = DynamoDBPersistenceLayer(table_name="baseline")
    config = IdempotencyConfig(event_key_jmespath="body")
    client = httpx.Client(timeout=5)
    class Model(pydantic.BaseModel):
        x: int
    print(%r + repr({"init": time.perf_counter() - t0, "init_cpu": time.process_time() - c0}))
""") % MARK

# The floor of an API function: only the libraries its first request needs (pydantic, Powertools'
# REST resolver with OpenAPI validation, psycopg with its pool, Logger/Metrics/Tracer), nothing of
# ours built. A function's init can only come below this by not importing one of them in init.
FLOOR = textwrap.dedent("""
    import time
    t0, c0 = time.perf_counter(), time.process_time()
    import psycopg, psycopg_pool, pydantic
    from aws_lambda_powertools import Logger, Metrics, Tracer
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver
    from aws_lambda_powertools.event_handler.openapi.params import Path
    app = APIGatewayRestResolver(enable_validation=True)
    print(%r + repr({"init": time.perf_counter() - t0, "init_cpu": time.process_time() - c0}))
""") % MARK

# The function's sample: import its handler (init); with SnapStart hooks registered, run them as
# the runtime does (before the snapshot: once per version; after a restore: every cold start);
# then invoke it once with the event from argv.
FUNCTION = textwrap.dedent("""
    import time
    t0, c0 = time.perf_counter(), time.process_time()
    import importlib, sys
    module, _, name = sys.argv[1].rpartition(".")
    handler = getattr(importlib.import_module(module), name)
    init, init_cpu = time.perf_counter() - t0, time.process_time() - c0
    prime = restore = 0.0
    hooks = sys.modules.get("snapshot_restore_py")
    if hooks is not None and hooks._before_snapshot_registry:
        t1 = time.perf_counter()
        for func, args, kwargs in hooks._before_snapshot_registry:
            func(*args, **kwargs)
        prime = time.perf_counter() - t1
    restored = time.perf_counter()
    if hooks is not None:
        for func, args, kwargs in hooks._after_restore_registry:
            func(*args, **kwargs)
    restore = time.perf_counter() - restored
    first, after_restore, status = None, None, None
    if sys.argv[2]:
        import json
        class Context:
            function_name, memory_limit_in_mb, function_version = sys.argv[3], 1024, "$LATEST"
            invoked_function_arn = "arn:aws:lambda:af-south-1:123456789012:function:" + sys.argv[3]
            aws_request_id, log_group_name, log_stream_name = "cold-start", "", "local"
            deadline = time.time() + 30
            def get_remaining_time_in_millis(self):
                return int((self.deadline - time.time()) * 1000)
        reply = handler(json.loads(sys.argv[2]), Context())
        first = time.perf_counter() - t0
        after_restore = time.perf_counter() - restored
        status = reply.get("statusCode", "ok") if isinstance(reply, dict) else "ok"
    print(%r + repr({"init": init, "init_cpu": init_cpu, "first": first, "status": status, "prime": prime,
                     "restore": restore, "after_restore": after_restore}))
""") % MARK


# --- the first request of each function --------------------------------------------------------

class Events:
    """A fresh, realistic first event per function and sample (its own voucher, webhook id …)."""

    def __init__(self, stack: Any, owner_url: str) -> None:
        import psycopg

        self.stack = stack
        self.conn = psycopg.connect(owner_url, autocommit=True,  # its voucher changes audited as the operator
                                    options="-c smartpay.source=operator -c smartpay.reference=bench")

    def _beneficiary(self) -> str:
        return str(self.conn.execute(
            "INSERT INTO beneficiaries (id_number, first_name, last_name, msisdn, region, programme) "
            "VALUES (%s, 'Bench', 'Person', '+264810000000', 'Khomas', 'old_age') RETURNING id",
            (f"{uuid.uuid4().int % 10**11:011d}",)).fetchone()[0])

    def _voucher(self, status: str) -> str:
        """A voucher born ``issued`` (the database refuses anything else), then moved to ``status``."""
        vid = str(uuid.uuid4())
        self.conn.execute(
            "INSERT INTO vouchers (id, beneficiary_id, programme, cycle, amount_cents, expires_at) "
            "VALUES (%s, %s, 'old_age', '2026-11', 140000, now() + interval '30 days')", (vid, self._beneficiary()))
        if status != "issued":
            self.conn.execute("UPDATE vouchers SET status = %s, buffr_delivery_id = %s WHERE id = %s",
                              (status, f"dlv_{vid[:8]}", vid))
        return vid

    def _api(self, method: str, path: str, resource: str, params: dict[str, str], scopes: str,
             body: dict[str, Any] | None = None) -> dict[str, Any]:
        from smartpay_tools.local.events import api_event

        return api_event(method, path, resource=resource, path_parameters=params,
                         headers={"content-type": "application/json"} if body is not None else None,
                         body=json.dumps(body) if body is not None else None,
                         authorizer={"principalId": "operator", "principal": "operator", "scopes": scopes})

    def for_function(self, logical_id: str, name: str) -> dict[str, Any] | None:
        short = logical_id.removesuffix("Function").lower()
        make = getattr(self, f"_{short}", None)
        if make is not None:
            return make()
        saved = sorted((ROOT / "events" / short).glob("*.json")) if (ROOT / "events" / short).is_dir() else []
        return json.loads(saved[0].read_text()) if saved else None  # a function added later: its saved event

    def _authorizer(self) -> dict[str, Any]:
        from smartpay_tools.local.events import api_event

        event = api_event("GET", "/api/v1/vouchers/x", resource="/api/v1/vouchers/{voucher_id}",
                          headers={"x-api-key": str(self.stack.local["OperatorApiKey"])})
        return {"type": "REQUEST", "methodArn": "arn:aws:execute-api:af-south-1:123456789012:local/local/GET/"
                "api/v1/vouchers/x", **event}

    def _migrate(self) -> dict[str, Any]:
        return {}

    def _beneficiaries(self) -> dict[str, Any]:
        bid = self._beneficiary()
        return self._api("GET", f"/api/v1/beneficiaries/{bid}", "/api/v1/beneficiaries/{beneficiary_id}",
                         {"beneficiary_id": bid}, "beneficiaries:read")

    def _disburse(self) -> dict[str, Any]:
        """A voucher read: a single voucher is paid only inside an approved run, never by one request."""
        vid = self._voucher("issued")
        return self._api("GET", f"/api/v1/vouchers/{vid}", "/api/v1/vouchers/{voucher_id}",
                         {"voucher_id": vid}, "vouchers:read")

    def _webhook(self) -> dict[str, Any]:
        from smartpay_tools.buffr_sim.webhook_sender import signed_headers
        from smartpay_tools.local.events import api_event

        vid = self._voucher("active")
        body = json.dumps({"type": "voucher.redeemed", "timestamp": "2026-11-02T09:00:00.000Z",
                           "data": {"voucher_id": vid, "delivery_id": f"dlv_{vid[:8]}",
                                    "occurred_at": "2026-11-02T08:59:58.000Z", "amount_cents": 140000,
                                    "channel": "merchant_pos"}}).encode()
        headers = signed_headers(self.stack.webhook_secrets, body)
        return api_event("POST", "/api/v1/webhooks/buffr", headers=headers, body=body)

    def _reconcile(self) -> dict[str, Any]:
        vid = self._voucher("active")
        self.stack.buffr.load([{"voucher_id": vid, "status": "active", "amount": 140000}])
        return {"mode": "vouchers", "voucher_ids": [vid]}


# --- sampling ------------------------------------------------------------------------------------

def run_sample(python: str, code: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run([python, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith(MARK)]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"sample failed ({out.returncode}): {out.stderr[-2000:]}")
    import ast

    return ast.literal_eval(lines[-1][len(MARK):])


def target_paths(target: str, spec: Any) -> tuple[str, list[str], list[str]]:
    """(python, function's path, baseline's path) for a target."""
    if target == "built":
        layer = str(BUILD / "CoreLayer" / "python")
        return python312(), [str(BUILD / spec.logical_id), layer], [layer]
    return sys.executable, [str(spec.code_uri), str(ROOT / "layers" / "core")], []


def python312() -> str:
    """python3.12 itself, as `make build` finds it (pyenv's shim would refuse outside its version)."""
    found = os.environ.get("PY312")
    if found and Path(found).is_dir():
        found = str(Path(found) / "python3.12")
    if not found:
        pyenv = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
        candidates = sorted(pyenv.glob("3.12*/bin/python3.12"))
        found = str(candidates[-1]) if candidates else shutil.which("python3.12")
    if not found:
        raise SystemExit("the built target needs python3.12 (set PY312)")
    return found


def compile_source_tree() -> None:
    """Byte-compile the functions and the layer, as the installed packages the baseline imports
    already are (and as `make build` does for the built target): a sample must not pay for
    compiling our modules from source (with PYTHONDONTWRITEBYTECODE set, none are cached)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "functions"), str(ROOT / "layers" / "core")],
                   check=True, stdout=subprocess.DEVNULL)


def measure(target: str, stack: Any, events: Events, samples: int) -> dict[str, Any]:
    functions = stack.functions
    if target == "source":
        compile_source_tree()
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    base_env = {**clean, "AWS_DEFAULT_REGION": stack.region, "AWS_ACCESS_KEY_ID": "x",
                "AWS_SECRET_ACCESS_KEY": "x", "POWERTOOLS_TRACE_DISABLED": "true", "PYTHONDONTWRITEBYTECODE": "1"}
    any_spec = next(iter(functions.values()))
    python, _, base_path = target_paths(target, any_spec)
    baseline: list[float] = []
    baseline_cpu: list[float] = []
    floor: list[float] = []
    keys = ("init", "init_cpu", "first", "status", "prime", "restore", "after_restore")
    found: dict[str, dict[str, list[Any]]] = {lid: {k: [] for k in keys} for lid in functions}
    for _ in range(samples):
        got = run_sample(python, BASELINE, [], {**base_env, "PYTHONPATH": os.pathsep.join(base_path)})
        baseline.append(got["init"])
        baseline_cpu.append(got["init_cpu"])
        floor.append(run_sample(python, FLOOR, [], {**base_env, "PYTHONPATH": os.pathsep.join(base_path)})["init"])
        for lid, spec in functions.items():
            _, fn_path, _ = target_paths(target, spec)
            env = {**stack.env_for(spec), "PYTHONPATH": os.pathsep.join(fn_path), "PYTHONDONTWRITEBYTECODE": "1"}
            event = events.for_function(lid, spec.name)
            result = run_sample(python, FUNCTION, [spec.handler, json.dumps(event) if event is not None else "",
                                                   spec.name], env)
            for key in keys:
                found[lid][key].append(result[key])
    b, b_cpu = statistics.median(baseline), statistics.median(baseline_cpu)
    report: dict[str, Any] = {"python": python, "baseline_ms": round(b * 1000, 1),
                              "baseline_cpu_ms": round(b_cpu * 1000, 1),
                              "baseline_samples_ms": [round(x * 1000) for x in baseline],
                              "floor_ms": round(statistics.median(floor) * 1000, 1),
                              "floor_ratio": round(statistics.median(floor) / b, 3), "functions": {}}
    for lid, got in found.items():
        init, init_cpu = statistics.median(got["init"]), statistics.median(got["init_cpu"])
        firsts = [x for x in got["first"] if x is not None]
        first = statistics.median(firsts) if firsts else None
        afters = [x for x in got["after_restore"] if x is not None]
        after = statistics.median(afters) if afters else None
        floor_b = statistics.median(floor)
        report["functions"][lid] = {
            "init_ms": round(init * 1000, 1), "init_ratio": round(init / b, 3),
            "init_samples_ms": [round(x * 1000) for x in got["init"]],
            "init_cpu_ms": round(init_cpu * 1000, 1), "init_cpu_ratio": round(init_cpu / b_cpu, 3),
            "first_ms": round(first * 1000, 1) if first is not None else None,
            "first_ratio": round(first / b, 3) if first is not None else None,
            "first_status": sorted({str(s) for s in got["status"]}),
            # init above the floor, in baselines (SnapStart goal: within 0.02)
            "init_over_floor": round((init - floor_b) / b, 3),
            "snapstart": any(x > 0 for x in got["prime"]),
            "prime_ms": round(statistics.median(got["prime"]) * 1000, 1),
            "restore_ms": round(statistics.median(got["restore"]) * 1000, 1),
            # a cold start from a snapshot: the after-restore hooks + the first request (goal <= 0.15)
            "after_restore_ms": round(after * 1000, 1) if after is not None else None,
            "after_restore_ratio": round(after / b, 3) if after is not None else None,
        }
    return report


def print_report(target: str, report: dict[str, Any], samples: int) -> None:
    print(f"\n[{target}] {report['python']}   (medians of {samples}, alternated with the baseline)")
    print(f"  baseline (plain Powertools) init {report['baseline_ms']:7.1f} ms wall, {report['baseline_cpu_ms']:7.1f} "
          f"ms CPU   wall samples {report['baseline_samples_ms']}")
    print(f"  floor (the libraries an API function's first request needs, nothing of ours) "
          f"{report['floor_ms']:.1f} ms = {report['floor_ratio']:.2f} x the baseline")
    print(f"  {'function':24} {'init ms':>8} {'/ base':>7} {'CPU / base':>10} {'first req ms':>13} {'/ base':>7}  "
          f"first reply  init samples (wall ms)")
    for lid, f in report["functions"].items():
        first = f"{f['first_ms']:13.1f} {f['first_ratio']:7.2f}" if f["first_ms"] is not None else f"{'(no event)':>21}"
        flag = "" if f["init_ratio"] <= TARGET_RATIO else "  NOT met"
        print(f"  {lid:24} {f['init_ms']:8.1f} {f['init_ratio']:7.2f} {f['init_cpu_ratio']:10.2f} {first}  "
              f"{','.join(f['first_status']):11}  {f['init_samples_ms']}{flag}")
    print(f"  SnapStart (hooks run as the runtime does; goals: init - floor <= {SNAP_INIT_OVER_FLOOR} x base, "
          f"first request after a restore <= {SNAP_FIRST_RATIO} x base)")
    print(f"  {'function':24} {'init-floor':>10} {'prime ms':>9} {'restore ms':>10} {'1st after restore ms':>21} "
          f"{'/ base':>7}")
    for lid, f in report["functions"].items():
        if not f["snapstart"]:
            continue
        after = (f"{f['after_restore_ms']:21.1f} {f['after_restore_ratio']:7.2f}" if f["after_restore_ms"] is not None
                 else f"{'(no event)':>29}")
        flag = "" if (f["after_restore_ratio"] or 0) <= SNAP_FIRST_RATIO else "  NOT met"
        print(f"  {lid:24} {f['init_over_floor']:10.3f} {f['prime_ms']:9.1f} {f['restore_ms']:10.1f} {after}{flag}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--target", choices=("source", "built", "both"), default="both")
    parser.add_argument("--built", action="store_true", help="same as --target built")
    args = parser.parse_args()
    if args.built:
        args.target = "built"
    targets = ["source", "built"] if args.target == "both" else [args.target]
    if "built" in targets and not (BUILD / "CoreLayer").is_dir():
        if args.target == "built":
            raise SystemExit("no sam build output: run `make build` first")
        print("no .aws-sam/build (run `make build`): measuring the source tree only")
        targets = ["source"]

    from smartpay_tools.local.stack import LocalStack

    load_before = os.getloadavg()
    db_name = f"smartpay_bench_cold_start_{os.getpid()}"
    url = _common.fresh_database(db_name)
    stack = LocalStack(database_url=url, simulator_port=0, webhook_knobs={"enabled": False})
    stack.start_services()
    reports: dict[str, Any] = {}
    try:
        events = Events(stack, url)
        started = time.perf_counter()
        for target in targets:
            reports[target] = measure(target, stack, events, args.samples)
            print_report(target, reports[target], args.samples)
        print(f"\n{len(stack.functions)} functions x {args.samples} samples x {len(targets)} target(s) in "
              f"{time.perf_counter() - started:.0f} s; load average {load_before[0]:.1f} before, "
              f"{os.getloadavg()[0]:.1f} after")
    finally:
        stack.stop()
        _common.drop(db_name)
    worst = max(f["init_ratio"] for r in reports.values() for f in r["functions"].values())
    worst_cpu = max(f["init_cpu_ratio"] for r in reports.values() for f in r["functions"].values())
    print(f"worst init ratio {worst:.3f} wall, {worst_cpu:.3f} CPU   (target <= {TARGET_RATIO}: "
          f"{'met' if worst <= TARGET_RATIO else 'NOT met'})")
    snap = [f for r in reports.values() for f in r["functions"].values() if f["snapstart"]]
    print(json.dumps({"benchmark": "cold_start", "samples": args.samples, "worst_ratio": worst,
                      "worst_cpu_ratio": worst_cpu,
                      # SnapStart functions: the init above the floor and the first request after a restore
                      "snapstart_worst_init_over_floor": max((f["init_over_floor"] for f in snap), default=None),
                      "snapstart_worst_after_restore_ratio": max((f["after_restore_ratio"] or 0 for f in snap),
                                                                 default=None),
                      "load_average": [round(x, 2) for x in os.getloadavg()],
                      "targets": {t: {"baseline_ms": r["baseline_ms"], "floor_ratio": r["floor_ratio"],
                                      "functions": {lid: {k: f[k] for k in ("init_ms", "init_ratio", "init_cpu_ratio",
                                                                            "first_ms", "first_ratio", "init_over_floor",
                                                                            "prime_ms", "restore_ms",
                                                                            "after_restore_ratio")}
                                                    for lid, f in r["functions"].items()}}
                                  for t, r in reports.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
