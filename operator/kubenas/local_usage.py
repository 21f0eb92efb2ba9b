"""Local mode's GPU- and CPU-seconds and spec.budget (arithmetic in kubenas.budget).

A local child is a process on this machine, given `threads` CPUs by the runner
(OMP_NUM_THREADS = cores // parallelism): its CPU-seconds are its wall time times those
threads. The runner assigns no GPUs: a child's GPU-seconds are its wall time times the
template's `nvidia.com/gpu` (at least 1) when its result says it trained on `cuda`, else
0; so they are known once it finishes and a running child counts CPU-seconds only.
Table children are lookups: no cost. The sums come back on resume from trials.jsonl.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from kubenas import spec as specs
from kubenas.budget import Cost, Resources, Usage, budget_spent, children_that_fit, cost_of, usage_status
from kubenas.result_cache import gpus_of


def trained_on_gpu(result: dict) -> bool:
    return isinstance(result, dict) and str(result.get("device") or "").startswith("cuda")


class LocalMeter:
    def __init__(self, *, spec: specs.SearchSpec, threads: int, records: Iterable[dict] = ()) -> None:
        self.spec = spec
        if spec.trial.kind == "Tabular":
            self.resources = Resources(gpus=0.0, cpus=0.0)
        else:
            self.resources = Resources(gpus=max(1.0, gpus_of(spec.trial)), cpus=float(threads))
        self.usage = Usage.of(Cost.from_fields(record) for record in records)
        self.running: dict[int, float] = {}  # index -> start (monotonic)

    def started(self, index: int) -> None:
        self.running[index] = time.monotonic()

    def finished(self, index: int, result: dict, seconds: float | None) -> Cost:
        """A child's cost, added to the sum: the fields for its record."""
        self.running.pop(index, None)
        resources = self.resources if trained_on_gpu(result) else Resources(gpus=0.0, cpus=self.resources.cpus)
        cost = cost_of(resources, seconds or 0.0)
        self.usage = self.usage.plus(cost)
        return cost

    def elapsed(self) -> list[Cost]:
        """Each running child's cost so far (CPU only: a child's GPU use is known at its end)."""
        now = time.monotonic()
        return [Cost(0.0, self.resources.cpus * (now - start)) for start in self.running.values()]

    def running_cost(self) -> Cost:
        return sum(self.elapsed(), Cost())

    def spent(self) -> str | None:
        """spec.budget's verdict (see budget_spent)."""
        budget = self.spec.budget
        if not budget.limited:
            return None
        elapsed = self.elapsed()
        return budget_spent(gpu_hours=budget.gpu_hours, cpu_hours=budget.cpu_hours, usage=self.usage,
                            running=sum(elapsed, Cost()), running_children=len(self.running),
                            in_flight=elapsed if budget.in_flight == "Expected" else None)

    def room(self) -> int | None:
        """spec.budget.inFlight Expected: how many more children are expected to fit (None: no bound)."""
        budget = self.spec.budget
        if not budget.limited or budget.in_flight != "Expected":
            return None
        return children_that_fit(gpu_hours=budget.gpu_hours, cpu_hours=budget.cpu_hours, usage=self.usage,
                                 in_flight=self.elapsed())

    def status(self, *, remaining_children: int) -> dict:
        """As the operator's status.usage: for best.json."""
        return usage_status(usage=self.usage, running=self.running_cost(), remaining_children=remaining_children)

    def line(self, *, remaining_children: int) -> str:
        """For the live panel."""
        figures = self.status(remaining_children=remaining_children)
        limits = self.spec.budget
        of = lambda limit: "" if limit is None else f" of {limit:g}"  # noqa: E731
        return (f"{figures['cpuHours'] + figures['runningCpuHours']:.3f}{of(limits.cpu_hours)} CPU-h, "
                f"{figures['gpuHours']:.3f}{of(limits.gpu_hours)} GPU-h; rest ~{figures['expectedRemainingCpuHours']:.2f}"
                f" CPU-h, ~{figures['expectedRemainingGpuHours']:.2f} GPU-h")
