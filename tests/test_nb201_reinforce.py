"""REINFORCE must beat random search on the published NAS-Bench-201 landscape (the
12-epoch table bundled in the package: builtin:nb201-12epoch)."""

import importlib.util
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_benchmark():
    spec = importlib.util.spec_from_file_location("nb201_benchmark", ROOT / "benchmarks" / "nb201_reinforce_vs_random.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reinforce_beats_random_search_at_500_children() -> None:
    results = load_benchmark().compare(seeds=range(6), trials=500)  # the bundled table
    reinforce, random = statistics.mean(results["reinforce"]), statistics.mean(results["random"])
    print(f"mean best cifar10-val over 6 seeds: reinforce {reinforce:.5f}, random {random:.5f}")
    assert reinforce > random
    assert all(0.6 < value <= 0.85 for value in results["reinforce"] + results["random"])
