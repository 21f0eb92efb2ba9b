"""GPU- and CPU-hours: what each child costs, what the search has spent, what the rest
is expected to cost, and whether `spec.budget` is spent. Pure arithmetic, shared by the
operator and the local runner.

A child's cost is what it reserved times how long its trainer ran: GPUs (the trainer
container's `nvidia.com/gpu` limit, else its request, else 0) and CPUs (its cpu request,
else its limit, else 1: a container with neither still occupies a core's worth of
scheduling) times the seconds from its container's start to its finish.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_CPUS = 1.0  # a container that states no cpu
HOUR = 3600.0
BUDGET_EXHAUSTED = "BudgetExhausted"  # the reason a search stops for spec.budget

_SUFFIXES = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
             "E": 1e18, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


def quantity(value: Any) -> float:
    """A Kubernetes quantity (`500m`, `2`, `1.5`, 4) as a number; ValueError if it is none."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        raise ValueError(f"not a quantity: {value!r}")
    return float(match.group(1)) * _SUFFIXES[match.group(2) or ""]


@dataclass(frozen=True)
class Resources:
    """What one child reserves while it runs."""

    gpus: float = 0.0
    cpus: float = DEFAULT_CPUS


def resources_of(container: Mapping[str, Any] | None) -> Resources:
    """The trainer container's reservation, from its `resources` (a pod's or a template's)."""
    resources = (container or {}).get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    gpus = limits.get(GPU_RESOURCE, requests.get(GPU_RESOURCE, 0))  # extended resources: request == limit
    cpus = requests.get("cpu", limits.get("cpu"))
    return Resources(gpus=quantity(gpus), cpus=DEFAULT_CPUS if cpus is None else quantity(cpus))


@dataclass(frozen=True)
class Cost:
    """GPU- and CPU-seconds (of one child, or summed)."""

    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.gpu_seconds + other.gpu_seconds, self.cpu_seconds + other.cpu_seconds)

    def scaled(self, factor: float) -> Cost:
        return Cost(self.gpu_seconds * factor, self.cpu_seconds * factor)

    def fields(self) -> dict:
        """As a NASTrial's status and a trials.jsonl record keep it."""
        return {"gpuSeconds": round(self.gpu_seconds, 3), "cpuSeconds": round(self.cpu_seconds, 3)}

    @classmethod
    def from_fields(cls, record: Mapping[str, Any]) -> Cost:
        return cls(float(record.get("gpuSeconds") or 0.0), float(record.get("cpuSeconds") or 0.0))


def cost_of(resources: Resources, seconds: float) -> Cost:
    """A child that held `resources` for `seconds` (negative spans, from skewed clocks, count 0)."""
    seconds = max(0.0, seconds)
    return Cost(resources.gpus * seconds, resources.cpus * seconds)


def run_seconds(intervals: Iterable[tuple[float | None, float | None]]) -> float:
    """The run time of a child's containers: the sum of their (start, end) spans, each
    attempt (a Job's retries) included; spans missing an end are not counted."""
    return sum(max(0.0, end - start) for start, end in intervals if start is not None and end is not None)


@dataclass(frozen=True)
class Usage:
    """What the finished children cost, and how many they were."""

    spent: Cost = Cost()
    children: int = 0

    def plus(self, cost: Cost) -> Usage:
        return Usage(self.spent + cost, self.children + 1)

    @classmethod
    def of(cls, costs: Iterable[Cost]) -> Usage:
        usage = cls()
        for cost in costs:
            usage = usage.plus(cost)
        return usage

    def mean(self) -> Cost:
        return self.spent.scaled(1 / self.children) if self.children else Cost()

    def expected_remaining(self, remaining_children: int) -> Cost:
        """The children not finished yet (those running included, whole) at the mean so far."""
        return self.mean().scaled(max(0, remaining_children))


def _hours(seconds: float) -> str:
    return f"{seconds / HOUR:.4g}"


def _committed(usage: Usage, in_flight: Sequence[Cost]) -> Cost:
    """inFlight Expected: the children in flight, each at the larger of its cost so far and the mean."""
    mean = usage.mean()
    return Cost(sum(max(c.gpu_seconds, mean.gpu_seconds) for c in in_flight),
                sum(max(c.cpu_seconds, mean.cpu_seconds) for c in in_flight))


def children_that_fit(*, gpu_hours: float | None, cpu_hours: float | None, usage: Usage,
                      in_flight: Sequence[Cost]) -> int | None:
    """inFlight Expected: how many more children at the mean fit beside the finished ones
    and those in flight (`in_flight`: each one's cost so far, 0 for one not started).
    None: no bound (no child has finished to give a mean, no limit, or children cost nothing)."""
    if not usage.children:
        return None
    mean, total = usage.mean(), usage.spent + _committed(usage, in_flight)
    bounds = []
    for limit, spent, per_child in ((gpu_hours, total.gpu_seconds, mean.gpu_seconds),
                                    (cpu_hours, total.cpu_seconds, mean.cpu_seconds)):
        if limit is None:
            continue
        room = limit * HOUR - spent
        if room < 0:
            bounds.append(0)
        elif per_child > 0:
            bounds.append(math.floor(room / per_child))
    return min(bounds, default=None)


def budget_spent(*, gpu_hours: float | None, cpu_hours: float | None, usage: Usage, running: Cost,
                 running_children: int = 0, in_flight: Sequence[Cost] | None = None) -> str | None:
    """None while the budget lasts, else a message stating the figures.

    `inFlight: Elapsed` (`in_flight` None, the default): the budget is spent once the
    finished children's cost plus the running children's elapsed cost (`running`) reaches
    a limit. `inFlight: Expected` (`in_flight`: each child in flight's elapsed cost, 0 for
    one not started): once some child has finished, each child in flight counts at the
    larger of its elapsed cost and the mean finished child's, and the budget is spent when
    not one more child at the mean fits (`children_that_fit`, which also bounds how many
    start at once). Before any child has finished there is no mean: as Elapsed."""
    if in_flight is not None and usage.children:
        fit = children_that_fit(gpu_hours=gpu_hours, cpu_hours=cpu_hours, usage=usage, in_flight=in_flight)
        if fit is None or fit >= 1:
            return None
        mean, committed = usage.mean(), _committed(usage, in_flight)
        total = usage.spent + committed + mean
        for unit, limit, spent, finished, expected, next_child in (
                ("GPU", gpu_hours, total.gpu_seconds, usage.spent.gpu_seconds, committed.gpu_seconds,
                 mean.gpu_seconds),
                ("CPU", cpu_hours, total.cpu_seconds, usage.spent.cpu_seconds, committed.cpu_seconds,
                 mean.cpu_seconds)):
            if limit is not None and spent > limit * HOUR:
                return (f"{_hours(spent)} {unit}-hours expected with one more child, more than spec.budget."
                        f"{unit.lower()}Hours={limit:g} ({_hours(finished)} by {usage.children} finished children, "
                        f"{_hours(expected)} expected of {len(in_flight)} in flight, {_hours(next_child)} per child)")
    total = usage.spent + running
    for unit, limit, spent, finished, elapsed in (
            ("GPU", gpu_hours, total.gpu_seconds, usage.spent.gpu_seconds, running.gpu_seconds),
            ("CPU", cpu_hours, total.cpu_seconds, usage.spent.cpu_seconds, running.cpu_seconds)):
        if limit is not None and spent >= limit * HOUR:
            return (f"{_hours(spent)} of spec.budget.{unit.lower()}Hours={limit:g} {unit}-hours spent "
                    f"({_hours(finished)} by {usage.children} finished children, {_hours(elapsed)} so far by "
                    f"{running_children} running)")
    return None


def usage_status(*, usage: Usage, running: Cost, remaining_children: int) -> dict:
    """The search status' `usage`: hours, rounded for reading."""
    expected = usage.expected_remaining(remaining_children)
    hours = lambda seconds: round(seconds / HOUR, 6)  # noqa: E731
    return {
        "gpuHours": hours(usage.spent.gpu_seconds),
        "cpuHours": hours(usage.spent.cpu_seconds),
        "runningGpuHours": hours(running.gpu_seconds),
        "runningCpuHours": hours(running.cpu_seconds),
        "expectedRemainingGpuHours": hours(expected.gpu_seconds),
        "expectedRemainingCpuHours": hours(expected.cpu_seconds),
        "childrenMeasured": usage.children,
    }
