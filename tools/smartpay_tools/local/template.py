"""Read template.yaml the way SAM does, enough to run it locally without drifting from it.

Functions (code, handler, timeout, memory, environment with Globals merged), their Api and
Schedule events, the API's authorizer, and the DynamoDB tables all come from the template;
nothing about routes or tables is written down twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from smartpay_tools import PROJECT_ROOT

ACCOUNT_ID = "123456789012"


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation short tags into their long form."""


def _construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct)


@dataclass(frozen=True)
class ApiRoute:
    event_name: str
    method: str
    path: str
    authorizer: str | None  # None: open route (Auth.Authorizer NONE)

    @property
    def regex(self) -> re.Pattern[str]:
        pattern = re.sub(r"\\\{[^/]+?\\\+\\\}", r"(?P<proxy>.+)", re.escape(self.path))
        pattern = re.sub(r"\\\{([A-Za-z0-9_]+)\\\}", r"(?P<\1>[^/]+)", pattern)
        return re.compile(f"^{pattern}$")


@dataclass(frozen=True)
class ScheduleEvent:
    event_name: str
    schedule: str
    enabled: bool
    input: str | None


@dataclass(frozen=True)
class SqsEvent:
    """An SQS event source mapping, as Lambda runs it (the local poller honours each field)."""

    event_name: str
    queue: str  # the queue's logical id
    batch_size: int
    max_concurrency: int | None  # ScalingConfig.MaximumConcurrency
    report_failures: bool  # FunctionResponseTypes: [ReportBatchItemFailures]
    batching_window_s: int
    enabled: bool


@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    name: str
    visibility_timeout: int
    dead_letter_queue: str | None  # logical id of the redrive target
    max_receive_count: int | None
    attributes: dict[str, str]


@dataclass
class FunctionSpec:
    logical_id: str
    name: str
    code_uri: Path
    handler: str
    runtime: str
    timeout: int
    memory: int
    environment: dict[str, str]
    routes: list[ApiRoute] = field(default_factory=list)
    schedules: list[ScheduleEvent] = field(default_factory=list)
    queues: list[SqsEvent] = field(default_factory=list)
    #: Logical ids of the functions this one may invoke directly (its ``LambdaInvokePolicy`` entries).
    invokes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AuthorizerSpec:
    name: str
    function: str  # logical id
    headers: tuple[str, ...]
    ttl: int


@dataclass(frozen=True)
class TableSpec:
    logical_id: str
    name: str
    properties: dict[str, Any]


class Template:
    def __init__(self, path: Path | None = None, parameters: dict[str, str] | None = None,
                 region: str = "af-south-1") -> None:
        self.path = path or PROJECT_ROOT / "template.yaml"
        self.doc: dict[str, Any] = yaml.load(self.path.read_text(), Loader=_CfnLoader)  # noqa: S506
        self.region = region
        self.parameters = {
            name: str(spec.get("Default", "")) for name, spec in self.doc.get("Parameters", {}).items()
        }
        self.parameters.update(parameters or {})
        self.resources: dict[str, Any] = self.doc["Resources"]

    # --- intrinsic functions -------------------------------------------------------------
    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.doc.get("Conditions", {})[name]))

    def _ref(self, name: str) -> Any:
        pseudo = {"AWS::Region": self.region, "AWS::AccountId": ACCOUNT_ID, "AWS::Partition": "aws",
                  "AWS::StackName": f"smartpay-{self.parameters.get('Stage', 'local')}",
                  "AWS::URLSuffix": "amazonaws.com"}
        if name in pseudo:
            return pseudo[name]
        if name == "AWS::NoValue":
            return None
        if name in self.parameters:
            return self.parameters[name]
        resource = self.resources.get(name)
        if resource is None:
            raise KeyError(f"!Ref to unknown name {name}")
        props = resource.get("Properties", {})
        for key in ("TableName", "FunctionName", "Name", "QueueName", "TopicName", "LayerName", "BucketName"):
            if key in props:
                return self.resolve(props[key])
        return name

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (self.resolve(v) for v in value) if v is not None]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
                return re.sub(r"\$\{([^}!]+)\}",
                              lambda m: str(extra[m.group(1)] if m.group(1) in extra
                                            else self._sub_name(m.group(1))), text)
            if key == "Fn::GetAtt":
                logical, attr = arg
                resource = self.resources.get(logical, {})
                if resource.get("Type") == "AWS::SQS::Queue" and attr in {"QueueName", "Arn"}:
                    name = self.resolve(resource.get("Properties", {}).get("QueueName", logical))
                    return name if attr == "QueueName" else f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{name}"
                return f"arn:aws:local:{self.region}:{ACCOUNT_ID}:{logical}/{attr}"
            if key == "Fn::If":
                cond, yes, no = arg
                return self.resolve(yes if self.condition(cond) else no)
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::Equals":
                left, right = (self.resolve(a) for a in arg)
                return str(left) == str(right)
            if key == "Fn::And":
                return all(self.resolve(a) for a in arg)
            if key == "Fn::Or":
                return any(self.resolve(a) for a in arg)
            if key == "Fn::Join":
                sep, items = arg
                return sep.join(str(i) for i in self.resolve(items))
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                sep, text = arg
                return str(self.resolve(text)).split(sep)
        return {k: self.resolve(v) for k, v in value.items()}

    def _sub_name(self, name: str) -> Any:
        if "." in name:
            logical, attr = name.split(".", 1)
            return f"arn:aws:local:{self.region}:{ACCOUNT_ID}:{logical}/{attr}"
        return self._ref(name)

    # --- resources ------------------------------------------------------------------------
    def _of_type(self, kind: str) -> dict[str, Any]:
        return {k: v for k, v in self.resources.items() if v.get("Type") == kind}

    def functions(self) -> dict[str, FunctionSpec]:
        glob = self.doc.get("Globals", {}).get("Function", {})
        specs: dict[str, FunctionSpec] = {}
        for logical_id, resource in self._of_type("AWS::Serverless::Function").items():
            props = {**glob, **resource.get("Properties", {})}
            env = {
                **glob.get("Environment", {}).get("Variables", {}),
                **resource.get("Properties", {}).get("Environment", {}).get("Variables", {}),
            }
            spec = FunctionSpec(
                logical_id=logical_id,
                name=str(self.resolve(props.get("FunctionName", logical_id))),
                code_uri=(self.path.parent / props["CodeUri"]).resolve(),
                handler=props["Handler"],
                runtime=props.get("Runtime", "python3.12"),
                timeout=int(self.resolve(props.get("Timeout", 3))),
                memory=int(props.get("MemorySize", 128)),
                environment={k: "" if v is None else str(v) for k, v in self.resolve(env).items()},
                invokes=invoke_targets(props.get("Policies")) | role_invoke_targets(self.role_statements(props)),
            )
            for event_name, event in (props.get("Events") or {}).items():
                ep = event.get("Properties", {})
                if event["Type"] == "Api":
                    auth = ep.get("Auth", {}).get("Authorizer")
                    spec.routes.append(ApiRoute(event_name, ep["Method"].upper(), ep["Path"],
                                                None if auth == "NONE" else (auth or "default")))
                elif event["Type"] in {"Schedule", "ScheduleV2"}:
                    schedule = self.resolve(ep.get("Schedule") or ep.get("ScheduleExpression"))
                    enabled = ep.get("Enabled", ep.get("State", "ENABLED") == "ENABLED")
                    specs_input = ep.get("Input")
                    spec.schedules.append(ScheduleEvent(event_name, str(schedule), bool(self.resolve(enabled)),
                                                        self.resolve(specs_input)))
                elif event["Type"] == "SQS":
                    queue = ep["Queue"]
                    logical = queue["Fn::GetAtt"][0] if isinstance(queue, dict) and "Fn::GetAtt" in queue else None
                    if logical is None:
                        raise ValueError(f"{logical_id}.{event_name}: the local runner needs Queue: !GetAtt X.Arn")
                    scaling = self.resolve(ep.get("ScalingConfig") or {})
                    spec.queues.append(SqsEvent(
                        event_name, logical, int(self.resolve(ep.get("BatchSize", 10))),
                        int(scaling["MaximumConcurrency"]) if scaling.get("MaximumConcurrency") else None,
                        "ReportBatchItemFailures" in (self.resolve(ep.get("FunctionResponseTypes")) or []),
                        int(self.resolve(ep.get("MaximumBatchingWindowInSeconds", 0))),
                        bool(self.resolve(ep.get("Enabled", True)))))
            specs[logical_id] = spec
        return specs

    def role_statements(self, props: dict[str, Any]) -> list[dict[str, Any]]:
        """The statements of the IAM role a function names (``Role: !GetAtt <Role>.Arn``), with the
        policies of conditions that hold; [] for a function without its own role resource."""
        role = props.get("Role")
        if not (isinstance(role, dict) and "Fn::GetAtt" in role):
            return []
        found = []
        for policy in self.resources[role["Fn::GetAtt"][0]]["Properties"].get("Policies", []):
            if isinstance(policy, dict) and "Fn::If" in policy:
                cond, yes, no = policy["Fn::If"]
                policy = yes if self.condition(cond) else no
            if isinstance(policy, dict) and "PolicyDocument" in policy:
                found += policy["PolicyDocument"].get("Statement", [])
        return found

    def layer_dirs(self) -> list[Path]:
        return [
            (self.path.parent / r["Properties"]["ContentUri"]).resolve()
            for r in self._of_type("AWS::Serverless::LayerVersion").values()
        ]

    def authorizers(self) -> tuple[str | None, dict[str, AuthorizerSpec]]:
        apis = self._of_type("AWS::Serverless::Api")
        default, found = None, {}
        for api in apis.values():
            auth = api.get("Properties", {}).get("Auth", {})
            default = auth.get("DefaultAuthorizer", default)
            for name, spec in auth.get("Authorizers", {}).items():
                logical = _function_of(spec["FunctionArn"])
                identity = spec.get("Identity", {})
                found[name] = AuthorizerSpec(name, logical, tuple(h.lower() for h in identity.get("Headers", [])),
                                             int(self.resolve(identity.get("ReauthorizeEvery", 300))))
        return default, found

    def stage(self) -> str:
        return str(self.parameters.get("Stage", "local"))

    def queues(self) -> list[QueueSpec]:
        """The SQS queues, dead-letter targets first (a redrive policy names an existing queue)."""
        found = []
        for logical, r in self._of_type("AWS::SQS::Queue").items():
            props = r.get("Properties", {})
            redrive = props.get("RedrivePolicy") or {}
            target = redrive.get("deadLetterTargetArn")
            dlq = target["Fn::GetAtt"][0] if isinstance(target, dict) and "Fn::GetAtt" in target else None
            attributes = {k: str(self.resolve(props[k])) for k in ("MessageRetentionPeriod", "DelaySeconds",
                                                                    "ReceiveMessageWaitTimeSeconds") if k in props}
            found.append(QueueSpec(logical, str(self.resolve(props.get("QueueName", logical))),
                                   int(self.resolve(props.get("VisibilityTimeout", 30))), dlq,
                                   int(self.resolve(redrive["maxReceiveCount"])) if dlq else None, attributes))
        return sorted(found, key=lambda q: q.dead_letter_queue is not None)

    def alarms(self) -> dict[str, dict[str, Any]]:
        """CloudWatch alarms by logical id, resolved (the local stack evaluates the SQS ones)."""
        return {logical: self.resolve(r["Properties"]) for logical, r in self._of_type("AWS::CloudWatch::Alarm").items()}

    def object_lock_buckets(self) -> list[tuple[str, int]]:
        """(name, default retention days) of the S3 buckets with Object Lock (the audit anchors)."""
        found = []
        for logical, r in self._of_type("AWS::S3::Bucket").items():
            props = self.resolve(r.get("Properties", {}))
            rule = (props.get("ObjectLockConfiguration") or {}).get("Rule", {}).get("DefaultRetention", {})
            if props.get("ObjectLockEnabled"):
                found.append((str(props.get("BucketName", logical)), int(rule.get("Days", 1))))
        return found

    def tables(self) -> list[TableSpec]:
        return [
            TableSpec(logical, str(self.resolve(r["Properties"].get("TableName", logical))),
                      self.resolve(r["Properties"]))
            for logical, r in self._of_type("AWS::DynamoDB::Table").items()
        ]


def _function_of(arn: Any) -> str:
    """The function an ARN reference names: ``!GetAtt F.Arn`` or its published alias ``!Ref F.Alias``
    (SnapStart; locally the same function)."""
    if isinstance(arn, dict) and "Fn::GetAtt" in arn:
        return str(arn["Fn::GetAtt"][0])
    if isinstance(arn, dict) and "Ref" in arn:
        return str(arn["Ref"]).removesuffix(".Alias")
    return str(arn)


def role_invoke_targets(statements: list[dict[str, Any]]) -> frozenset[str]:
    """The functions a role's ``lambda:InvokeFunction`` statements name by ``!GetAtt <Function>.Arn``."""
    found = set()
    for statement in statements:
        actions = statement.get("Action")
        if statement.get("Effect") != "Allow" or "lambda:InvokeFunction" not in (
                actions if isinstance(actions, list) else [actions]):
            continue
        resources = statement.get("Resource")
        for resource in resources if isinstance(resources, list) else [resources]:
            if isinstance(resource, dict) and "Fn::GetAtt" in resource:
                found.add(str(resource["Fn::GetAtt"][0]))
    return frozenset(found)


def invoke_targets(policies: Any) -> frozenset[str]:
    """The functions a function's ``Policies`` let it invoke: each ``LambdaInvokePolicy`` naming
    ``!Ref <Function>``. (A test checks the template grants ``lambda:InvokeFunction`` no other way.)"""
    found = set()
    for policy in policies if isinstance(policies, list) else []:
        if isinstance(policy, dict) and isinstance(policy.get("LambdaInvokePolicy"), dict):
            target = policy["LambdaInvokePolicy"].get("FunctionName")
            if isinstance(target, dict) and "Ref" in target:
                found.add(str(target["Ref"]))
    return frozenset(found)
