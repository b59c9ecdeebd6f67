"""The local stack: template.yaml's functions, wired to moto, PostgreSQL and the env-vars file."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smartpay_tools.buffr_sim.process import SimulatorProcess
from smartpay_tools.buffr_sim.state import DEFAULT_API_KEY, DEFAULT_PORT, SECRET_ENV
from smartpay_tools.local import envfile
from smartpay_tools.local.lambda_runtime import FunctionPool
from smartpay_tools.local.services import (
    MotoServer,
    Postgres,
    client_env,
    create_anchor_buckets,
    create_tables,
    resolve_postgres,
    url_as,
)
from smartpay_tools.local.template import FunctionSpec, Template


@dataclass
class LocalStack:
    env_file_path: Path | None = None
    database_url: str | None = None
    max_concurrency: int = 4
    #: The Buffr simulator's port: None → the env file's ``BuffrSimulatorPort`` (4010), 0 → a free port.
    simulator_port: int | None = None
    #: Where the simulator sends webhooks: None → the local gateway (``GatewayPort``); see connect_webhooks.
    webhook_url: str | None = None
    #: Webhook knobs over the env file's ``LocalStack.BuffrWebhooks`` (e.g. ``{"enabled": False}`` in tests).
    webhook_knobs: dict[str, Any] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Where the functions' and the simulator's logs go, one file each (``<LogicalId>.log``); None → stderr.
    log_dir: Path | None = None
    #: Template parameters over the env file's ``LocalStack.TemplateParameters`` (e.g. a short
    #: ``CycleQueueVisibilityTimeout`` in tests).
    template_parameters: dict[str, str] = field(default_factory=dict)
    template: Template = field(init=False)
    env_file: dict[str, Any] = field(init=False)
    moto: MotoServer | None = field(init=False, default=None)
    postgres: Postgres | None = field(init=False, default=None)
    buffr: SimulatorProcess | None = field(init=False, default=None)
    lambda_endpoint: Any = field(init=False, default=None)
    pools: dict[str, FunctionPool] = field(init=False, default_factory=dict)
    queue_urls: dict[str, str] = field(init=False, default_factory=dict)
    pollers: list[Any] = field(init=False, default_factory=list)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _logs: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.env_file = envfile.load(self.env_file_path)
        params = {k: str(v) for k, v in self.env_file.get("Parameters", {}).items()}
        stage_params = {"Stage": "local", **{k: v for k, v in envfile.local_settings(self.env_file)
                                              .get("TemplateParameters", {}).items()},
                        **self.template_parameters}
        self.template = Template(parameters=stage_params)
        self.region = params.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "af-south-1"
        self.functions: dict[str, FunctionSpec] = self.template.functions()

    @property
    def local(self) -> dict[str, Any]:
        return envfile.local_settings(self.env_file)

    @property
    def buffr_api_key(self) -> str:
        """The key the functions present to Buffr (env file), which the simulator accepts."""
        return str(self.env_file.get("DisburseFunction", {}).get("BUFFR_API_KEY") or DEFAULT_API_KEY)

    @property
    def webhook_secrets(self) -> str:
        """Webhook signing secrets: $SMARTPAY_WEBHOOK_SECRET, else the env file's WebhookFunction block."""
        return (os.environ.get(SECRET_ENV) or str(self.env_file.get("WebhookFunction", {}).get(
            "WEBHOOK_SECRET") or "")).strip()

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{int(self.local.get('GatewayPort', 3000))}"

    def simulator_knobs(self) -> dict[str, Any]:
        """The simulator's start-time webhook knobs: env file ``LocalStack.BuffrWebhooks``, then overrides."""
        from_file = {k: v for k, v in dict(self.local.get("BuffrWebhooks") or {}).items() if not k.startswith("_")}
        return {**from_file, **(self.webhook_knobs or {})}

    def start_services(self, *, migrate: bool = True, simulator: bool = True) -> LocalStack:
        """Start what the functions need; on any failure, stop what was already started (no orphans)."""
        try:
            return self._start_services(migrate=migrate, simulator=simulator)
        except BaseException:
            self.stop()
            raise

    def _start_services(self, *, migrate: bool, simulator: bool) -> LocalStack:
        from smartpay import migrate as migrations
        from smartpay_tools.local.lambda_endpoint import LambdaEndpoint

        if simulator:
            port = self.simulator_port if self.simulator_port is not None else int(
                self.local.get("BuffrSimulatorPort", DEFAULT_PORT))
            self.buffr = SimulatorProcess(port=port, api_key=self.buffr_api_key,
                                          webhook_url=self.webhook_url or self.gateway_url,
                                          webhook_secrets=self.webhook_secrets or None,
                                          knobs=self.simulator_knobs(),
                                          log_path=self.log_path("BuffrSimulator")).start()
        self.moto = MotoServer().start()
        self.lambda_endpoint = LambdaEndpoint(self, 0).start()
        create_tables(self.moto.endpoint, self.region, self.template.tables())
        create_anchor_buckets(self.moto.endpoint, self.region, self.template.object_lock_buckets())
        from smartpay_tools.local.event_sources import create_queues

        self.queue_urls = create_queues(self.sqs(), self)
        file_url = self.env_file.get("Parameters", {}).get("DATABASE_URL") or None
        self.postgres = resolve_postgres(self.database_url or os.environ.get("DATABASE_URL") or file_url)
        if migrate:
            result = migrations.apply(self.postgres.url)
            if result.get("admin_sql"):
                raise RuntimeError("the functions' database roles are missing and this user may not create "
                                   f"them; run as an administrator, then start again:\n{result['admin_sql']}")
        return self

    def sqs(self) -> Any:
        """A boto3 SQS client on the stack's moto."""
        import boto3

        assert self.moto is not None
        return boto3.client("sqs", endpoint_url=self.moto.endpoint, region_name=self.region,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def start_event_sources(self) -> list[Any]:
        """Poll the template's SQS event sources as Lambda does (see event_sources)."""
        from smartpay_tools.local.event_sources import make_pollers

        self.pollers = make_pollers(self, self.sqs(), self.queue_urls)
        for logical_id in {p.function for p in self.pollers} & set(self.pools):
            self.restart_function(logical_id)  # made before the pollers: sized without their batches
        for poller in self.pollers:
            poller.start()
        return self.pollers

    def stop_event_sources(self) -> None:
        for poller in self.pollers:
            poller.stop()
        self.pollers = []

    def alarm_states(self) -> dict[str, str]:
        """The template's queue-depth alarms, evaluated now (name → ALARM | OK)."""
        from smartpay_tools.local.event_sources import sqs_alarm_states

        return sqs_alarm_states(self, self.sqs(), self.queue_urls)

    def restart_function(self, logical_id: str) -> None:
        """Drop a function's warm workers (the next event starts fresh ones, with current extra_env)."""
        with self._lock:
            pool = self.pools.pop(logical_id, None)
        if pool is not None:
            pool.shutdown()

    def connect_webhooks(self, gateway_url: str) -> None:
        """Point the running simulator's webhooks at this gateway (e.g. one on another port)."""
        if self.buffr is not None and self.webhook_secrets:
            self.buffr.configure_webhooks(url=gateway_url)

    def env_for(self, spec: FunctionSpec) -> dict[str, str]:
        env = envfile.function_env(spec.environment, self.env_file, spec.logical_id)
        if self.postgres and "DATABASE_URL" in spec.environment:
            env["DATABASE_URL"] = self.database_url_for(spec)
            env["DATABASE_URL_SECRET"] = ""
        if self.buffr and "BUFFR_API_URL" in env:
            env["BUFFR_API_URL"] = self.buffr.url
        for name, value in env.items():  # !Ref Queue resolves to its name locally; the URL is moto's
            if value in self.queue_urls:
                env[name] = self.queue_urls[value]
        base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
        runtime = {
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "_HANDLER": spec.handler,
            "LAMBDA_TASK_ROOT": str(spec.code_uri),
            "TZ": "UTC",
        }
        aws = client_env(self.moto.endpoint, self.region) if self.moto else {}
        if self.lambda_endpoint is not None:  # Lambda-to-Lambda invokes stay inside the stack
            # Each function gets its own endpoint URL: the local Lambda endpoint tells callers apart
            # by it, as IAM tells the deployed functions' roles apart.
            aws["AWS_ENDPOINT_URL_LAMBDA"] = self.lambda_endpoint.url_for(spec.logical_id)
        return {**base, **runtime, **aws, **env, **self.extra_env}

    def database_url_for(self, spec: FunctionSpec) -> str:
        """The function's connection: as its template ``DB_ROLE`` (no password: local trust
        auth), or as the stack's own (owner) user for a function without one (migrate)."""
        assert self.postgres is not None
        role = spec.environment.get("DB_ROLE")
        return url_as(self.postgres.url, role) if role else self.postgres.url

    def pool(self, logical_id: str) -> FunctionPool:
        with self._lock:
            if logical_id not in self.pools:
                spec = self.functions[logical_id]
                # A function whose SQS event sources are polled gets room for their batches too.
                batches = sum(p.concurrency for p in self.pollers if p.function == logical_id)
                self.pools[logical_id] = FunctionPool(spec, self.env_for(spec), self.template.layer_dirs(),
                                                      max_concurrency=self.max_concurrency + batches,
                                                      log_path=self.log_path(logical_id))
            return self.pools[logical_id]

    def log_path(self, name: str) -> Path | None:
        """``name``'s log file under ``log_dir`` (created, emptied at the first call of a stack), or None."""
        if self.log_dir is None:
            return None
        path = self.log_dir / f"{name}.log"
        if name not in self._logs:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            path.write_text("")
            self._logs.add(name)
        return path

    def invoke(self, logical_id: str, event: dict[str, Any], request_id: str | None = None) -> Any:
        return self.pool(logical_id).invoke(event, request_id)

    def may_invoke(self, caller: str | None, target: str) -> bool:
        """What the template's policies allow: ``caller``'s ``LambdaInvokePolicy`` names ``target``."""
        return caller in self.functions and target in self.functions[caller].invokes

    def find_function(self, name: str) -> str:
        """Accept a logical id (BeneficiariesFunction), a short name (beneficiaries) or a function name."""
        lowered = name.lower()
        for logical_id, spec in self.functions.items():
            if lowered in {logical_id.lower(), spec.name.lower(), logical_id.lower().removesuffix("function")}:
                return logical_id
        raise KeyError(f"no function {name!r}; have: {', '.join(sorted(self.functions))}")

    def stop(self) -> None:
        for poller in self.pollers:
            poller.kill()
        for pool in self.pools.values():
            pool.shutdown()
        if self.lambda_endpoint is not None:
            self.lambda_endpoint.stop()
        if self.moto:
            self.moto.stop()
        if self.buffr:
            self.buffr.stop()
        if self.postgres:
            self.postgres.stop()
