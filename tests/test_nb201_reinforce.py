"""REINFORCE must beat random search on the published NAS-Bench-201 landscape."""

import importlib.util
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT.parent / "shared" / "benchmarks" / "nasbench201" / "nb201-12epoch.csv"

pytestmark = pytest.mark.skipif(
    not TABLE.exists(), reason=f"NAS-Bench-201 table not found at {TABLE} (it lives in ../shared, not in the repository)"
)


def load_benchmark():
    spec = importlib.util.spec_from_file_location("nb201_benchmark", ROOT / "benchmarks" / "nb201_reinforce_vs_random.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reinforce_beats_random_search_at_500_children() -> None:
    results = load_benchmark().compare(seeds=range(6), trials=500, table_path=TABLE)
    reinforce, random = statistics.mean(results["reinforce"]), statistics.mean(results["random"])
    print(f"mean best cifar10-val over 6 seeds: reinforce {reinforce:.5f}, random {random:.5f}")
    assert reinforce > random
    assert all(0.6 < value <= 0.85 for value in results["reinforce"] + results["random"])
