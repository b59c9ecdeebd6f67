"""The backing services of the local stack: DynamoDB (moto's server) and PostgreSQL.

PostgreSQL, in order: ``DATABASE_URL`` if set; else the machine's server on 127.0.0.1:5432
(the project's own database, created if missing); else a throwaway server started here with
the machine's PostgreSQL binaries (``initdb`` + ``pg_ctl``, as a non-root user).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from smartpay_tools import PROJECT_ROOT

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def die_with_parent() -> None:
    """``preexec_fn`` for service processes: the kernel kills them when the stack's process dies,
    however it dies (Ctrl-C, SIGKILL, a crashed test run), so no moto or simulator is left behind."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """Terminate a service process, killing it if it has not exited within 10 s."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_port(host: str, port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start listening on {host}:{port} within {timeout:.0f}s")


@dataclass
class MotoServer:
    """moto's AWS emulator as a separate process on loopback (its own GIL, like a real service), with
    DynamoDB's atomic conditional writes (:mod:`smartpay_tools.local.moto_process`)."""

    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "smartpay_tools.local.moto_process", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )
        wait_port("127.0.0.1", self.port, 30, "moto server")
        return self

    def stop(self) -> None:
        stop_process(self.process)


def client_env(endpoint: str, region: str) -> dict[str, str]:
    """Environment that points boto3 (and so Powertools) at moto."""
    return {**FAKE_AWS, "AWS_DEFAULT_REGION": region, "AWS_REGION": region, "AWS_ENDPOINT_URL": endpoint}


def create_tables(endpoint: str, region: str, tables: list[Any]) -> list[str]:
    """Create the template's DynamoDB tables in moto, exactly as the template defines them."""
    import boto3

    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name=region,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    existing = set(client.list_tables()["TableNames"])
    created = []
    for table in tables:
        props = table.properties
        if table.name not in existing:
            kwargs: dict[str, Any] = {
                "TableName": table.name,
                "AttributeDefinitions": props["AttributeDefinitions"],
                "KeySchema": props["KeySchema"],
                "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
            }
            client.create_table(**kwargs)
            created.append(table.name)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            client.update_time_to_live(TableName=table.name, TimeToLiveSpecification=ttl)
    return created


def create_anchor_buckets(endpoint: str, region: str, buckets: list[tuple[str, int]]) -> list[str]:
    """Create the template's Object Lock buckets in moto: versioned, compliance-mode default retention."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    created = []
    for name, days in buckets:
        if name not in existing:
            client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True,
                                 CreateBucketConfiguration={"LocationConstraint": region})
            client.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": days}}})
            created.append(name)
    return created


# --- PostgreSQL ------------------------------------------------------------------------------

@dataclass
class Postgres:
    url: str
    origin: str  # "DATABASE_URL" | "machine" | "embedded"
    data_dir: Path | None = None
    _bin: Path | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self.origin == "embedded" and self.data_dir and self._bin:
            _as_postgres_user([str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "stop"],
                              self.data_dir)


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _as_postgres_user(cmd: list[str], data_dir: Path) -> subprocess.CompletedProcess[bytes]:
    """PostgreSQL refuses to run as root; run its binaries as the ``postgres`` user then."""
    if os.geteuid() == 0:
        user = "postgres" if _user_exists("postgres") else "nobody"
        shutil.chown(data_dir, user=user)
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def ensure_database(admin_url: str, dbname: str) -> str:
    """Create ``dbname`` on the server behind ``admin_url`` if missing; return its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return psycopg.conninfo.make_conninfo(admin_url, dbname=dbname)


def url_as(url: str, role: str) -> str:
    """``url`` connecting as ``role`` without a password (local servers use trust auth)."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    params.pop("password", None)
    params["user"] = role
    return psycopg.conninfo.make_conninfo(**params)


def drop_database(admin_url: str, dbname: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def start_embedded(data_dir: Path, port: int | None = None, *, password: str | None = None) -> Postgres:
    """A server of our own in ``data_dir``. ``password``: every login checks a password (SCRAM),
    the superuser's is this one; otherwise the server trusts every local login."""
    bindir = _pg_bin()
    if bindir is None:
        raise RuntimeError("no PostgreSQL found: set DATABASE_URL, run one on 127.0.0.1:5432, "
                           "or install PostgreSQL's server binaries (initdb, pg_ctl)")
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "PG_VERSION").exists():
        auth = ["--auth=trust"]
        if password is not None:
            (data_dir.parent / f"{data_dir.name}.pw").write_text(password)
            auth = ["--auth=scram-sha-256", f"--pwfile={data_dir.parent / f'{data_dir.name}.pw'}"]
        _as_postgres_user([str(bindir / "initdb"), "-D", str(data_dir), "-U", "smartpay", *auth,
                           "-E", "UTF8", "--no-locale"], data_dir)
    _as_postgres_user([str(bindir / "pg_ctl"), "-D", str(data_dir), "-w", "-l", str(data_dir / "server.log"),
                       "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k {data_dir}", "start"], data_dir)
    admin = f"postgresql://smartpay{':' + password if password is not None else ''}@127.0.0.1:{port}/postgres"
    return Postgres(ensure_database(admin, "smartpay"), "embedded", data_dir, bindir)


def resolve_postgres(database_url: str | None, *, dbname: str = "smartpay",
                     data_dir: Path | None = None) -> Postgres:
    if database_url:
        return Postgres(database_url, "DATABASE_URL")
    if port_open("127.0.0.1", 5432):
        admin = "postgresql://postgres@127.0.0.1:5432/postgres"
        with contextlib.suppress(psycopg.OperationalError):
            return Postgres(ensure_database(admin, dbname), "machine")
    return start_embedded(data_dir or PROJECT_ROOT / ".local" / "pgdata")
