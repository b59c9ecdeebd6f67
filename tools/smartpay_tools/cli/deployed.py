"""A deployed stack, seen through its CloudFormation outputs (credentials: the usual AWS environment).

``smartpay invoke FN --stack NAME`` invokes a deployed function through the Lambda API, its name
taken from the stack's outputs (``<LogicalId>Name``), so nothing about a deployment is typed twice.
(``replay`` and ``disburse`` take the deployed URLs, the ``WebhookUrl``/``ApiUrl`` outputs, as ``--url``.)
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any


@dataclass
class DeployedStack:
    name: str
    outputs: dict[str, str]
    region: str | None = None

    @classmethod
    def load(cls, name: str, region: str | None = None, client: Any = None) -> DeployedStack:
        import boto3

        cfn = client or boto3.client("cloudformation", region_name=region)
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        return cls(name, outputs, region)

    def function_name(self, logical_id: str) -> str:
        key = f"{logical_id}Name"
        if key not in self.outputs:
            raise KeyError(f"stack {self.name} has no output {key}; outputs: {', '.join(sorted(self.outputs))}")
        return self.outputs[key]

    def invoke(self, logical_id: str, event: dict[str, Any], client: Any = None) -> tuple[bool, Any, str]:
        """Invoke synchronously; returns (ok, payload, last 4 KB of the log tail)."""
        import boto3

        lam = client or boto3.client("lambda", region_name=self.region)
        reply = lam.invoke(FunctionName=self.function_name(logical_id), InvocationType="RequestResponse",
                           LogType="Tail", Payload=json.dumps(event).encode())
        payload = json.loads(reply["Payload"].read() or b"null")
        logs = base64.b64decode(reply.get("LogResult", "")).decode(errors="replace")
        return "FunctionError" not in reply, payload, logs
