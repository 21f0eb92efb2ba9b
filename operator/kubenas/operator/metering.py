"""The operator's meter of one search's GPU- and CPU-seconds (arithmetic in kubenas.budget).

Durable figures are the NASTrials': each finished child's `gpuSeconds` and `cpuSeconds`
are in its status, so a restarted operator sums them again (`restore`). Running
children's elapsed cost comes from the pod watch (their trainer container's
`startedAt`), which a restarted operator gets again by relisting: the same decision.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from kubenas.budget import Cost, Resources, Usage, cost_of, resources_of, run_seconds
from kubenas.operator import results

TERMINAL = ("Succeeded", "Failed")


def started(value: str | None) -> float | None:
    """A container start as unix seconds; the zero time (a container that never ran) is none."""
    return results.timestamp(value) or None


def trainer_resources(pod_spec: dict | None) -> Resources:
    """The reservation of a pod's (or pod template's) first container, the trainer."""
    containers = (pod_spec or {}).get("containers") or [{}]
    return resources_of(containers[0])


def attempts(pods: Iterable[dict]) -> list[tuple[float | None, float | None]]:
    """(start, end) of the trainer container of each pod that ran it to its end, or ran it
    until Kubernetes took the pod away (evicted from a lost node: no terminated state, so
    it ran until its DisruptionTarget condition)."""
    spans = []
    for pod in pods:
        state = results.terminated_state(pod)
        if state is not None:
            spans.append((started(state.get("startedAt")), results.timestamp(state.get("finishedAt"))))
        elif (taken := _disrupted_at(pod)) is not None and (start := _running_since(pod)) is not None:
            spans.append((start, taken))
    return spans


def _disrupted_at(pod: dict) -> float | None:
    taken = results.condition(pod, "DisruptionTarget")
    return None if taken is None else results.timestamp(taken.get("lastTransitionTime"))


def _running_since(pod: dict) -> float | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if (running := (container.get("state") or {}).get("running")) is not None:
            return started(running.get("startedAt"))
    return None


def child_cost(job: dict, pods: Iterable[dict]) -> Cost:
    """A finished child's cost: its Job template's reservation times its containers' run time."""
    template = ((job.get("spec") or {}).get("template") or {}).get("spec")
    return cost_of(trainer_resources(template), run_seconds(attempts(pods)))


def recorded_cost(trial: dict) -> Cost | None:
    """What a finished NASTrial records it cost (None: not finished)."""
    status = trial.get("status") or {}
    if status.get("phase") not in TERMINAL:
        return None
    return Cost.from_fields(status)


class SearchMeter:
    def __init__(self) -> None:
        self.usage = Usage()
        # index -> pod name -> (reservation, container start, its end once it ended and before
        # the verdict is in): each attempt of a child (a Job's retries) counts
        self.running: dict[int, dict[str, tuple[Resources, float, float | None]]] = {}
        self.recorded: dict[int, Cost] = {}  # recorded in the NASTrial, not yet told to the engine

    def restore(self, trials: Iterable[dict]) -> Cost:
        """The finished children's sum, from their NASTrials (a driver's start)."""
        self.usage = Usage.of(cost for trial in trials if (cost := recorded_cost(trial)) is not None)
        return self.usage.spent

    def watch_pod(self, index: int, pod: dict) -> None:
        """A child's pod as the watch sees it: running from its trainer container's start."""
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        state = (statuses[0].get("state") or {}) if statuses else {}
        running, ended = state.get("running") or {}, state.get("terminated") or {}
        start = started(running.get("startedAt") or ended.get("startedAt"))
        if start is not None:  # ended: counted to its end until its verdict is recorded
            end = results.timestamp(ended.get("finishedAt")) if ended else None
            self.running.setdefault(index, {})[(pod.get("metadata") or {}).get("name", "")] = (
                trainer_resources(pod.get("spec")), start, end)

    def record(self, index: int, cost: Cost) -> dict:
        """A child's cost, as its verdict is recorded: the fields for its NASTrial."""
        self.recorded[index] = cost
        return cost.fields()

    def settle(self, index: int, *, told: bool) -> Cost | None:
        """The child is done: its cost joins the sum if the engine took its verdict now
        (`told`; a verdict told again after a restart is in the restored sum already)."""
        self.running.pop(index, None)
        cost = self.recorded.pop(index, None)
        if told and cost is not None:
            self.usage = self.usage.plus(cost)
            return cost
        return None

    def running_cost(self, now: float | None = None) -> Cost:
        """The running children's cost so far."""
        return sum(self.elapsed(self.running, now), Cost())

    def elapsed(self, indices: Iterable[int], now: float | None = None) -> list[Cost]:
        """Each child's cost so far (none for one not started): spec.budget.inFlight Expected."""
        now = time.time() if now is None else now
        return [sum((cost_of(resources, (end or now) - start)
                     for resources, start, end in self.running.get(index, {}).values()), Cost())
                for index in indices]
