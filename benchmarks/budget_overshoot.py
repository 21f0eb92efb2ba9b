"""How far past spec.budget.gpuHours a search spends, with `inFlight: Elapsed` (the
default) and `inFlight: Expected`, at several parallelisms.

A simulation of the schedule, one-second steps, around the real decision function
(`kubenas.budget.budget_spent`, which the operator and the local runner both call before
each new child): 1-GPU children whose run times are drawn uniformly from
[mean - spread, mean + spread] seconds; each step the finished children are recorded,
then children start while fewer than `parallelism` are in flight and the budget is not
spent. Once it is, the running children finish. The figure is the final spend over the
budget. No cluster and no training: what it measures is the rule, not the meter.

    .venv/bin/python benchmarks/budget_overshoot.py [--budget-children 50 500] [--seeds 5]
"""

from __future__ import annotations

import argparse
import random
import statistics

from kubenas.budget import HOUR, Cost, Usage, budget_spent


def simulate(*, budget_gpu_hours: float, parallelism: int, mean_seconds: float = 600.0, spread: float = 300.0,
             expected: bool, seed: int = 0, max_children: int = 100_000) -> tuple[float, int]:
    """(GPU-hours spent when the last child finished, children run)."""
    rng = random.Random(seed)
    usage = Usage()
    running: list[tuple[float, float]] = []  # (start, duration)
    now, started = 0.0, 0
    while True:
        finished = [child for child in running if now - child[0] >= child[1]]
        for child in finished:
            running.remove(child)
            usage = usage.plus(Cost(gpu_seconds=child[1]))
        elapsed = [Cost(gpu_seconds=now - start) for start, _ in running]
        while len(running) < parallelism and started < max_children and budget_spent(
                gpu_hours=budget_gpu_hours, cpu_hours=None, usage=usage, running=sum(elapsed, Cost()),
                running_children=len(running), in_flight=elapsed if expected else None) is None:
            running.append((now, rng.uniform(mean_seconds - spread, mean_seconds + spread)))
            elapsed.append(Cost())
            started += 1
        if not running:
            return usage.spent.gpu_seconds / HOUR, usage.children
        now += 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-children", type=float, nargs="+", default=[50.0, 500.0],
                        help="budgets, in mean children's GPU-hours (default 50 and 500)")
    parser.add_argument("--mean-seconds", type=float, default=600.0)
    parser.add_argument("--spread", type=float, default=300.0)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--parallelism", type=int, nargs="+", default=[1, 4, 16, 64, 100])
    args = parser.parse_args()
    for children in args.budget_children:
        table(args, budget=children * args.mean_seconds / HOUR, children=children)


def table(args: argparse.Namespace, *, budget: float, children: float) -> None:
    print(f"\nbudget {budget:.3f} GPU-hours ({children:g} children of {args.mean_seconds:g} "
          f"± {args.spread:g} s), {args.seeds} seeds; spend / budget, mean (min-max)")
    print(f"{'parallelism':>11}  {'Elapsed':>22}  {'Expected':>22}")
    for parallelism in args.parallelism:
        cells = []
        for expected in (False, True):
            ratios = [simulate(budget_gpu_hours=budget, parallelism=parallelism, mean_seconds=args.mean_seconds,
                               spread=args.spread, expected=expected, seed=seed)[0] / budget
                      for seed in range(args.seeds)]
            cells.append(f"{statistics.mean(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
        print(f"{parallelism:>11}  {cells[0]:>22}  {cells[1]:>22}")


if __name__ == "__main__":
    main()
