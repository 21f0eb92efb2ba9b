"""Cache hit rate of the NB201 Tabular example (examples/nb201-tabular.yaml) over its 500
children, run by the local runner exactly as `kubenas search` runs it (8 children in
flight), per strategy and seed.

A hit is a child whose identical twin had already finished when it was asked; twins
asked while their twin was still in flight are looked up again (a table child never
waits), so hits <= repeats (children minus distinct architectures).

    .venv/bin/python benchmarks/cache_hits.py [--seeds 3] [--trials 500] [--strategies reinforce random evolution]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from kubenas import spec as specs
from kubenas.local import run_search
from kubenas.progress import Progress

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "nb201-tabular.yaml"


def run_once(*, strategy: str, seed: int, trials: int, runs_dir: Path) -> dict:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["name"] = f"{strategy}-{seed}"
    document["spec"].update(seed=seed, maxTrials=trials)
    document["spec"]["controller"]["strategy"] = strategy
    manifest = specs.parse_manifest(document, source=str(EXAMPLE))
    started = time.monotonic()
    result = asyncio.run(run_search(manifest, document, runs_dir=runs_dir,
                                    progress=Progress(name=document["metadata"]["name"], stream=io.StringIO(),
                                                      live=False)))
    lines = [json.loads(line) for line in result.run.trials_file.read_text().splitlines()]
    distinct = len({json.dumps(r["architecture"], sort_keys=True) for r in lines})
    return {"hits": result.cache.hits, "children": len(lines), "distinct": distinct,
            "best": max(r["validationAccuracy"] or 0 for r in lines), "seconds": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--strategies", nargs="+", default=["reinforce", "random", "evolution"])
    args = parser.parse_args()
    print(f"{'strategy':<10} {'seed':>4} {'hits':>5} {'hit rate':>8} {'repeats':>7} {'distinct':>8} {'best acc':>8}")
    with tempfile.TemporaryDirectory() as directory:
        for strategy in args.strategies:
            rates = []
            for seed in range(args.seeds):
                found = run_once(strategy=strategy, seed=seed, trials=args.trials, runs_dir=Path(directory))
                rate = found["hits"] / found["children"]
                rates.append(rate)
                print(f"{strategy:<10} {seed:>4} {found['hits']:>5} {rate:>8.1%} "
                      f"{found['children'] - found['distinct']:>7} {found['distinct']:>8} {found['best']:>8.4f}",
                      flush=True)
            print(f"{strategy:<10} mean hit rate {statistics.mean(rates):.1%} over {args.seeds} seeds", flush=True)


if __name__ == "__main__":
    main()
