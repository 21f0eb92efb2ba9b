"""REINFORCE against random search on the NAS-Bench-201 12-epoch table.

Runs the engine exactly as `kubenas search examples/nb201-tabular.yaml` does (same
spec, FIFO completion with `parallelism` children in flight), over fixed seeds, and
prints the mean best validation accuracy (cifar10-val) each strategy reaches.

    .venv/bin/python benchmarks/nb201_reinforce_vs_random.py [--seeds 10] [--trials 500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import yaml

from kubenas import spec as specs
from kubenas.evaluators import TabularEvaluator
from kubenas.search import Search

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "nb201-tabular.yaml"
TABLE = specs.DEFAULT_TABLE  # the table bundled in the package (kubenas/data, MIT, see its NOTICE)


def search_spec(*, strategy: str, seed: int, trials: int, table: str | Path) -> specs.SearchSpec:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["spec"].update(seed=seed, maxTrials=trials)
    document["spec"]["controller"]["strategy"] = strategy
    document["spec"]["trial"]["tabular"]["path"] = str(table)
    return specs.parse_manifest(document, source=str(EXAMPLE)).spec


def accuracies_by_index(spec: specs.SearchSpec, table: dict[str, float]) -> dict[int, float]:
    """Each child's table accuracy in one search, `parallelism` children in flight,
    finishing in FIFO order."""
    search = Search(spec)
    accuracies: dict[int, float] = {}
    queue = []
    while not search.finished:
        while len(queue) < spec.parallelism and (ticket := search.ask()) is not None:
            queue.append(ticket)
        ticket = queue.pop(0)
        accuracies[ticket.index] = table[ticket.architecture["cell"]]
        search.tell(ticket.index, {"status": "Succeeded", "validationAccuracy": [accuracies[ticket.index]]})
    return accuracies


def best_accuracy(spec: specs.SearchSpec, table: dict[str, float]) -> float:
    """Best validation accuracy found by one search, children finishing in FIFO order."""
    return max(accuracies_by_index(spec, table).values())


def compare(*, seeds: range, trials: int, table_path: str | Path = TABLE) -> dict[str, list[float]]:
    table = None
    results: dict[str, list[float]] = {}
    for strategy in ("reinforce", "random"):
        for seed in seeds:
            spec = search_spec(strategy=strategy, seed=seed, trials=trials, table=table_path)
            table = table or TabularEvaluator(spec.trial.tabular).table
            results.setdefault(strategy, []).append(best_accuracy(spec, table))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--table", default=TABLE, help="builtin:NAME or a CSV file (default: %(default)s)")
    args = parser.parse_args()
    if not args.table.startswith(specs.BUILTIN_PREFIX) and not Path(args.table).exists():
        print(f"table not found: {args.table}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    results = compare(seeds=range(args.seeds), trials=args.trials, table_path=args.table)
    seconds = time.perf_counter() - started
    table = TabularEvaluator(specs.Tabular(path=args.table)).table
    optimum = max(table.values())
    print(f"NAS-Bench-201 (12-epoch, cifar10-val), {args.trials} children, seeds 0..{args.seeds - 1}; "
          f"best cell in the table: {optimum:.5f}")
    for strategy, values in results.items():
        print(f"  {strategy:9s} mean best val acc {statistics.mean(values):.5f} ± {statistics.stdev(values):.5f} "
              f"(min {min(values):.5f}, max {max(values):.5f}); regret {optimum - statistics.mean(values):.5f}")
    print("  per seed: " + "; ".join(f"{s}: {r:.4f} vs {q:.4f}" for s, (r, q) in enumerate(zip(results['reinforce'], results['random']))))
    print(f"  wall time {seconds:.1f}s for {2 * args.seeds} searches ({2 * args.seeds * args.trials / seconds:.0f} children/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
