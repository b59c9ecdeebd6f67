"""Cold init of the beneficiaries function vs a plain Powertools baseline (issue 2).

Each sample is a fresh interpreter that times its own imports and module-level setup (what a
Lambda cold start pays before the first event). Median of N samples each, run alternately so
machine noise hits both alike. Target: function <= 0.35 x baseline.

    python benchmarks/cold_start.py [--samples 5] [--built]   # --built: .aws-sam/build with python3.12
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BASELINE = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
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
    print(time.perf_counter() - t0)
""")

FUNCTION = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    import beneficiaries.handler
    print(time.perf_counter() - t0)
""")


def sample(code: str, python: str, pythonpath: list[str]) -> float:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(pythonpath),
        "AWS_DEFAULT_REGION": "af-south-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
        "POWERTOOLS_SERVICE_NAME": "beneficiaries", "POWERTOOLS_TRACE_DISABLED": "true",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--built", action="store_true",
                        help="measure the sam build output (with its .pyc) under python3.12")
    args = parser.parse_args()
    if args.built:
        build = ROOT / ".aws-sam" / "build"
        python = os.environ.get("PY312", "python3.12")
        fn_path = [str(build / "BeneficiariesFunction"), str(build / "CoreLayer" / "python")]
        base_path = [str(build / "CoreLayer" / "python")]
    else:
        python = sys.executable
        fn_path = [str(ROOT / "functions" / "beneficiaries"), str(ROOT / "layers" / "core")]
        base_path = []
    base, func = [], []
    for _ in range(args.samples):
        base.append(sample(BASELINE, python, base_path))
        func.append(sample(FUNCTION, python, fn_path))
    b, f = statistics.median(base), statistics.median(func)
    print(f"interpreter: {python} ({'sam build output' if args.built else 'source tree'})")
    print(f"baseline cold init (median of {args.samples}): {b * 1000:7.1f} ms   samples {[round(x * 1000) for x in base]}")
    print(f"beneficiaries cold init (median of {args.samples}): {f * 1000:7.1f} ms   samples {[round(x * 1000) for x in func]}")
    print(f"ratio function / baseline: {f / b:.3f}   (target <= 0.35: {'met' if f / b <= 0.35 else 'NOT met'})")
    print(json.dumps({"baseline_ms": round(b * 1000, 1), "function_ms": round(f * 1000, 1), "ratio": round(f / b, 3)}))


if __name__ == "__main__":
    main()
