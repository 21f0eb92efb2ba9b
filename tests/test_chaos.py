"""The chaos suite (benchmarks/chaos.py), a smaller schedule: every kind of fault once,
shorter network faults, fewer children. The full run is `python benchmarks/chaos.py`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kubenas.localcluster import binaries
from tests.cluster_harness import tool
from tests.tools import missing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

pytestmark = pytest.mark.timeout(900)


def test_nothing_is_lost_whatever_breaks(tmp_path: Path):
    tool("kube-apiserver")  # skips (or fails under KUBENAS_REQUIRE_TOOLS) without the tools
    try:
        binaries.find_toxiproxy()
    except binaries.BinaryNotFound as error:
        missing(str(error))
    from chaos import Schedule, print_report, run_suite

    schedule = Schedule(operator_kills=2, apiserver_restarts=1, etcd_kills=1, controller_manager_restarts=1,
                        latency_seconds=6.0, reset_seconds=3.0, blackhole_seconds=8.0, gap=(1.0, 3.0))
    outcomes, results, figures = run_suite(seed=3, children=16, in_flight=4, trainer_seconds=10.0,
                                           schedule=schedule, workdir=tmp_path)
    assert len(outcomes) == 8
    assert print_report(outcomes, results, figures), [r for r in results if not r[1]]
