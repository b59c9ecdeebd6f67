"""The template's EventBridge schedules, run by the local stack (``smartpay serve``).

Each ``Schedule`` event of a function in template.yaml fires that function with the event
EventBridge sends (``detail-type: Scheduled Event``), or the event's ``Input`` when it has one,
at the template's rate. ``rate(...)`` expressions are supported (the template uses them); a
``cron(...)`` schedule is refused with a clear message rather than silently ignored. For demos
the rate can be overridden (``--schedule-rate "rate(1 minute)"`` or seconds).

Like EventBridge, a firing does not wait for the previous invocation: the function itself
decides what an overlap means (reconciliation answers ``stopped: busy`` for a split in use).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from smartpay_tools.local.template import ACCOUNT_ID, FunctionSpec, ScheduleEvent

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float:
    """Seconds between firings of an EventBridge ``rate(...)`` expression (or a plain number)."""
    text = expression.strip()
    match = _RATE.match(text)
    if match:
        value, unit = int(match.group(1)), match.group(2).rstrip("s")
        if (value == 1) != (not match.group(2).endswith("s")):
            raise ValueError(f"{expression!r}: EventBridge wants 'rate(1 {unit})' and 'rate(N {unit}s)'")
        seconds = float(value * _UNIT_SECONDS[unit])
    else:
        try:
            seconds = float(text)
        except ValueError:
            raise ValueError(f"unsupported schedule {expression!r}: use rate(N minute[s]|hour[s]|day[s]) "
                             "or a number of seconds (cron expressions are not run locally)") from None
    if seconds <= 0:
        raise ValueError(f"schedule {expression!r} must be positive")
    return seconds


def scheduled_event(rule: str, region: str, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """The event EventBridge sends a scheduled target."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": ACCOUNT_ID, "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "region": region,
            "resources": [f"arn:aws:events:{region}:{ACCOUNT_ID}:rule/{rule}"], "detail": detail or {}}


@dataclass
class Firing:
    logical_id: str
    schedule: str
    at: datetime
    ok: bool
    result: Any


@dataclass
class Scheduler:
    """Fires every enabled schedule of ``functions`` through ``invoke(logical_id, event)``."""

    functions: dict[str, FunctionSpec]
    invoke: Callable[[str, dict[str, Any]], Any]
    region: str = "af-south-1"
    rate_override: str | None = None
    on_fire: Callable[[Firing], None] | None = None
    fired: list[Firing] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def schedules(self) -> list[tuple[str, ScheduleEvent, float]]:
        found = []
        for logical_id, spec in sorted(self.functions.items()):
            for schedule in spec.schedules:
                if schedule.enabled:
                    found.append((logical_id, schedule, rate_seconds(self.rate_override or schedule.schedule)))
        return found

    def start(self) -> Scheduler:
        for logical_id, schedule, every in self.schedules():
            thread = threading.Thread(target=self._loop, args=(logical_id, schedule, every), daemon=True,
                                      name=f"schedule-{logical_id}-{schedule.event_name}")
            thread.start()
            self._threads.append(thread)
        return self

    def _loop(self, logical_id: str, schedule: ScheduleEvent, every: float) -> None:
        while not self._stop.wait(every):
            threading.Thread(target=self.fire, args=(logical_id, schedule), daemon=True).start()

    def fire(self, logical_id: str, schedule: ScheduleEvent) -> Firing:
        """One firing now (also what ``smartpay serve`` does at each tick)."""
        if schedule.input:
            event = json.loads(schedule.input) if isinstance(schedule.input, str) else dict(schedule.input)
        else:
            event = scheduled_event(f"{logical_id}-{schedule.event_name}", self.region)
        try:
            firing = Firing(logical_id, schedule.schedule, datetime.now(UTC), True, self.invoke(logical_id, event))
        except Exception as exc:  # reported, and the schedule keeps firing (as EventBridge does)
            firing = Firing(logical_id, schedule.schedule, datetime.now(UTC), False, str(exc))
        self.fired.append(firing)
        if self.on_fire:
            self.on_fire(firing)
        return firing

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
