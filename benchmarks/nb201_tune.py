"""Tune the REINFORCE controller on the NAS-Bench-201 12-epoch table against regularized
evolution and random search.

Sweeps the knobs of `examples/nb201-tabular.yaml` (controller learningRate, batchSize m,
baselineDecay, entropyWeight; reward power; optionally gradClipNorm, initRange,
lstmSize), everything else as in the example (parallelism 8, FIFO completion). Each
candidate is first screened on a few seeds, then the best ones are confirmed on more.
One search of max(budgets) children gives every smaller budget too (the first N
children of a longer search are exactly those of an N-child search: sampling and
updates do not depend on maxTrials), so budgets cost nothing extra.

Baselines (evolution with the spec's defaults P 20, S 5, and random) run on the same
seeds. Candidates are sorted by their worst margin over budgets, where the margin at a
budget is REINFORCE's mean best cifar10-val minus the better baseline's.

    .venv/bin/python benchmarks/nb201_tune.py                        # the default grid
    .venv/bin/python benchmarks/nb201_tune.py --random 60 --lr 0.01 0.03 0.1 --batch 2 4 8
    .venv/bin/python benchmarks/nb201_tune.py --config lr=0.05,m=4,power=10 --screen-seeds 0
    .venv/bin/python benchmarks/nb201_tune.py --cache /tmp/nb201_tune.jsonl   # resume / reuse runs

Knob names in --config: lr, m, power, decay, entropy, clip, init, lstm.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nb201_reinforce_vs_random import EXAMPLE, TABLE, accuracies_by_index  # noqa: E402

from kubenas import spec as specs  # noqa: E402
from kubenas.evaluators import TabularEvaluator  # noqa: E402

# knob -> (section of spec, field, type)
KNOBS = {
    "lr": ("controller", "learningRate", float),
    "m": ("controller", "batchSize", int),
    "power": ("reward", "power", float),
    "decay": ("controller", "baselineDecay", float),
    "entropy": ("controller", "entropyWeight", float),
    "clip": ("controller", "gradClipNorm", float),
    "init": ("controller", "initRange", float),
    "lstm": ("controller", "lstmSize", int),
}
BASELINES = ("evolution", "random")


def example_document(table: str) -> dict:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["spec"]["trial"]["tabular"]["path"] = str(table)
    return document


def make_spec(base: dict, *, strategy: str, seed: int, trials: int, knobs: dict) -> specs.SearchSpec:
    document = copy.deepcopy(base)
    spec = document["spec"]
    spec.update(seed=seed, maxTrials=trials)
    spec["controller"]["strategy"] = strategy
    for name, value in knobs.items():
        section, field, _ = KNOBS[name]
        spec.setdefault(section, {})[field] = value
    return specs.parse_manifest(document, source=str(EXAMPLE)).spec


def best_per_budget(spec: specs.SearchSpec, table: dict[str, float], budgets: list[int]) -> list[float]:
    """Best cifar10-val among the first N children, for each N in budgets, of one search
    run as `nb201_reinforce_vs_random.best_accuracy` runs it (FIFO, parallelism in flight)."""
    accuracies = accuracies_by_index(spec, table)
    return [max(accuracies[i] for i in range(budget)) for budget in budgets]


def key_of(strategy: str, knobs: dict) -> str:
    return json.dumps({"strategy": strategy, **dict(sorted(knobs.items()))}, sort_keys=True)


def label_of(knobs: dict) -> str:
    return ",".join(f"{name}={value:g}" if isinstance(value, (int, float)) else f"{name}={value}" for name, value in knobs.items())


class Runner:
    """Runs searches, memoised by (strategy, knobs, seed, largest budget), optionally in a JSONL cache."""

    def __init__(self, *, table_path: str, budgets: list[int], cache: Path | None) -> None:
        self.base = example_document(table_path)
        self.table = TabularEvaluator(specs.Tabular(path=table_path)).table
        self.budgets = budgets
        self.trials = max(budgets)
        self.cache_path = cache
        self.memo: dict[tuple[str, int, int], dict[int, float]] = {}
        if cache is not None and cache.exists():
            for line in cache.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.memo[(record["key"], record["seed"], record["trials"])] = {
                        int(b): v for b, v in record["best"].items()
                    }
        self.searches = 0

    def best(self, strategy: str, knobs: dict, seed: int) -> list[float]:
        key = key_of(strategy, knobs)
        for (k, s, trials), best in self.memo.items():
            if k == key and s == seed and trials >= self.trials and all(b in best for b in self.budgets):
                return [best[b] for b in self.budgets]
        spec = make_spec(self.base, strategy=strategy, seed=seed, trials=self.trials, knobs=knobs)
        values = best_per_budget(spec, self.table, self.budgets)
        self.searches += 1
        record = dict(zip(self.budgets, values))
        self.memo[(key, seed, self.trials)] = record
        if self.cache_path is not None:
            with self.cache_path.open("a") as handle:
                handle.write(json.dumps({"key": key, "seed": seed, "trials": self.trials, "best": record}) + "\n")
        return values

    def evaluate(self, strategy: str, knobs: dict, seeds: int) -> list[list[float]]:
        """Per budget, the best accuracy of each seed 0..seeds-1."""
        per_seed = [self.best(strategy, knobs, seed) for seed in range(seeds)]
        return [list(column) for column in zip(*per_seed)]


def stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def candidates(args: argparse.Namespace) -> list[dict]:
    if args.config:
        out = []
        for text in args.config:
            knobs = {}
            for part in text.split(","):
                name, _, value = part.partition("=")
                name = name.strip()
                if name not in KNOBS:
                    raise SystemExit(f"unknown knob {name!r} in --config (known: {', '.join(KNOBS)})")
                knobs[name] = KNOBS[name][2](value)
            out.append(knobs)
        return out
    axes = {
        "lr": args.lr, "m": args.batch, "power": args.power, "decay": args.decay,
        "entropy": args.entropy, "clip": args.clip, "init": args.init_range, "lstm": args.lstm_size,
    }
    axes = {name: values for name, values in axes.items() if values}
    grid = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    if args.random and args.random < len(grid):
        grid = random.Random(args.sample_seed).sample(grid, args.random)
    return grid


def report(title: str, runner: Runner, rows: list[tuple[dict, list[list[float]]]], baselines: dict, optimum: float,
           seeds: int) -> list[tuple[float, dict]]:
    budgets = runner.budgets
    bar = {b: max(stats(baselines[s][i])[0] for s in BASELINES) for i, b in enumerate(budgets)}
    print(f"\n== {title}: {seeds} seeds (0..{seeds - 1}); best cell {optimum:.5f}")
    for strategy in BASELINES:
        cells = "  ".join(f"{b}: {m:.5f} ± {s:.5f}" for b, (m, s) in zip(budgets, map(stats, baselines[strategy])))
        print(f"   baseline {strategy:9s} {cells}")
    scored = []
    for knobs, columns in rows:
        margins = [stats(column)[0] - bar[b] for b, column in zip(budgets, columns)]
        scored.append((min(margins), knobs, columns, margins))
    scored.sort(key=lambda row: -row[0])
    header = "  ".join(f"{'mean@' + str(b):>9s} {'std':>7s} {'margin':>8s}" for b in budgets)
    print(f"   {'rank':>4s}  {'worst':>8s}  {header}  settings")
    for rank, (worst, knobs, columns, margins) in enumerate(scored, 1):
        cells = "  ".join(f"{stats(c)[0]:9.5f} {stats(c)[1]:7.5f} {m:+8.5f}" for c, m in zip(columns, margins))
        print(f"   {rank:4d}  {worst:+8.5f}  {cells}  {label_of(knobs)}")
    sys.stdout.flush()
    return [(worst, knobs) for worst, knobs, _, _ in scored]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--screen-seeds", type=int, default=8, help="seeds of the screening pass (0: skip it)")
    parser.add_argument("--confirm-seeds", type=int, default=20, help="seeds of the confirmation pass")
    parser.add_argument("--top", type=int, default=6, help="candidates confirmed after screening")
    parser.add_argument("--lr", type=float, nargs="*", default=[0.01, 0.03, 0.1])
    parser.add_argument("--batch", type=int, nargs="*", default=[2, 4, 8])
    parser.add_argument("--power", type=float, nargs="*", default=[1, 10, 30])
    parser.add_argument("--decay", type=float, nargs="*", default=[0.5, 0.9])
    parser.add_argument("--entropy", type=float, nargs="*", default=[0.0])
    parser.add_argument("--clip", type=float, nargs="*", default=[])
    parser.add_argument("--init-range", type=float, nargs="*", default=[])
    parser.add_argument("--lstm-size", type=int, nargs="*", default=[])
    parser.add_argument("--random", type=int, default=0, help="sample this many grid points instead of all")
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--config", action="append", help="explicit candidate, e.g. lr=0.05,m=4,power=10 (repeatable)")
    parser.add_argument("--cache", type=Path, help="JSONL file of finished searches, read and appended")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--table", default=TABLE, help="builtin:NAME or a CSV file (default: %(default)s)")
    args = parser.parse_args()
    if not args.table.startswith(specs.BUILTIN_PREFIX) and not Path(args.table).exists():
        print(f"table not found: {args.table}", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    budgets = sorted(set(args.budgets))
    runner = Runner(table_path=args.table, budgets=budgets, cache=args.cache)
    optimum = max(runner.table.values())
    pool = candidates(args)
    started = time.perf_counter()
    print(f"{len(pool)} candidates; budgets {budgets}; screen {args.screen_seeds} seeds, confirm top {args.top} "
          f"on {args.confirm_seeds}")
    if args.screen_seeds > 0 and len(pool) > args.top:
        baselines = {s: runner.evaluate(s, {}, args.screen_seeds) for s in BASELINES}
        rows = []
        for n, knobs in enumerate(pool, 1):
            rows.append((knobs, runner.evaluate("reinforce", knobs, args.screen_seeds)))
            if n % 10 == 0:
                print(f"   ... {n}/{len(pool)} screened, {time.perf_counter() - started:.0f}s", file=sys.stderr)
        ranked = report("screen", runner, rows, baselines, optimum, args.screen_seeds)
        pool = [knobs for _, knobs in ranked[: args.top]]
    baselines = {s: runner.evaluate(s, {}, args.confirm_seeds) for s in BASELINES}
    rows = [(knobs, runner.evaluate("reinforce", knobs, args.confirm_seeds)) for knobs in pool]
    ranked = report("confirm", runner, rows, baselines, optimum, args.confirm_seeds)
    if ranked:
        worst, knobs = ranked[0]
        verdict = "beats" if worst > 0 else "does not beat"
        print(f"\nbest: {label_of(knobs)} {verdict} both baselines at every budget (worst margin {worst:+.5f})")
    print(f"{runner.searches} searches run, {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
