"""REINFORCE, regularized evolution and random search on the NAS-Bench-201 12-epoch table.

Each strategy runs the `examples/nb201-tabular.yaml` search (REINFORCE with its settings:
lr 0.01, m 8; evolution with the spec's defaults, P 20, S 5; random), FIFO completion
with `parallelism` children in flight, for each budget and seeds 0..N-1, and prints the
mean and standard deviation of the best child's cifar10-val and the regret to the
table's best cell.

    .venv/bin/python benchmarks/nb201_strategies.py [--seeds 20] [--budgets 100 500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nb201_reinforce_vs_random import TABLE, best_accuracy, search_spec  # noqa: E402

from kubenas import spec as specs  # noqa: E402
from kubenas.evaluators import TabularEvaluator  # noqa: E402

STRATEGIES = ("reinforce", "evolution", "random")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--table", default=TABLE, help="builtin:NAME or a CSV file (default: %(default)s)")
    args = parser.parse_args()
    if not args.table.startswith(specs.BUILTIN_PREFIX) and not Path(args.table).exists():
        print(f"table not found: {args.table}", file=sys.stderr)
        return 1
    table = TabularEvaluator(specs.Tabular(path=args.table)).table
    optimum = max(table.values())
    print(f"NAS-Bench-201 (12-epoch, cifar10-val), seeds 0..{args.seeds - 1}; best cell in the table: {optimum:.5f}")
    print(f"{'children':>8s}  {'strategy':9s}  {'mean best':>9s}  {'std':>7s}  {'regret':>7s}  {'optimum hit':>11s}  {'s':>5s}")
    for budget in args.budgets:
        for strategy in args.strategies:
            started = time.perf_counter()
            best = [
                best_accuracy(search_spec(strategy=strategy, seed=seed, trials=budget, table=args.table), table)
                for seed in range(args.seeds)
            ]
            seconds = time.perf_counter() - started
            mean = statistics.mean(best)
            std = statistics.stdev(best) if len(best) > 1 else 0.0
            hits = sum(value >= optimum for value in best)
            print(f"{budget:8d}  {strategy:9s}  {mean:9.5f}  {std:7.5f}  {optimum - mean:7.5f}  "
                  f"{hits:4d}/{len(best):<6d}  {seconds:5.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
