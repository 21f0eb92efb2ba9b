"""spec.budget in local mode: CPU-seconds of local children (wall time × their threads),
the search ending Succeeded/BudgetExhausted, the figures in trials.jsonl and best.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kubenas import spec as specs
from kubenas.budget import HOUR, Cost
from kubenas.local_usage import LocalMeter
from tests.test_local import job_manifest, records, run

CHILD_SECONDS = 0.4  # FAKE_SECONDS: each child's wall time is at least this


def threads() -> int:
    return max(1, os.cpu_count() or 1)  # parallelism 1: the runner gives a child every core


def test_a_cpu_budget_stops_new_children_and_resume_with_more_continues(tmp_path: Path) -> None:
    budget = 2.5 * CHILD_SECONDS * threads() / HOUR  # spent by the third child at the latest
    document = job_manifest(maxTrials=20, parallelism=1, env={"FAKE_SECONDS": str(CHILD_SECONDS)},
                            budget={"cpuHours": budget})
    result = run(document, tmp_path)
    assert (result.phase, result.reason) == ("Succeeded", "BudgetExhausted")
    lines = records(tmp_path / "runs" / "fake")
    created = result.search.counters.created
    assert 1 <= created <= 3 and not result.search.in_flight  # every child started finished and is recorded
    assert sorted(r["index"] for r in lines) == list(range(created))
    for record in lines:
        assert record["cpuSeconds"] == pytest.approx(record["seconds"] * threads(), abs=0.01)
        assert record["cpuSeconds"] >= CHILD_SECONDS * threads() and record["gpuSeconds"] == 0  # no cuda
    spent = [r["cpuSeconds"] for r in sorted(lines, key=lambda r: r["index"])]
    assert sum(spent) >= budget * HOUR  # spent…
    assert sum(spent[:-1]) < budget * HOUR  # …by the last child started, not before it started
    usage = json.loads((tmp_path / "runs" / "fake" / "best.json").read_text())["usage"]
    assert usage["cpuHours"] == pytest.approx(sum(spent) / HOUR, abs=1e-6)
    assert usage["childrenMeasured"] == created
    assert usage["expectedRemainingCpuHours"] == pytest.approx(sum(spent) / created * (20 - created) / HOUR, abs=1e-5)
    assert result.usage == usage

    # The sums come back from trials.jsonl: a larger budget continues the search from them.
    document["spec"]["budget"]["cpuHours"] = budget * 2
    again = run(document, tmp_path, resume=True)
    assert (again.phase, again.reason) == ("Succeeded", "BudgetExhausted")
    lines = records(tmp_path / "runs" / "fake")
    assert again.search.counters.created > created and len(lines) == again.search.counters.created
    total = sum(r["cpuSeconds"] for r in lines)
    assert total >= 2 * budget * HOUR
    assert again.usage["cpuHours"] == pytest.approx(total / HOUR, abs=1e-6)


def test_without_a_budget_the_search_runs_to_max_trials(tmp_path: Path) -> None:
    result = run(job_manifest(maxTrials=3, parallelism=1), tmp_path)
    assert (result.phase, result.reason) == ("Succeeded", None)
    assert result.usage["childrenMeasured"] == 3 and result.usage["cpuHours"] > 0


def test_local_gpu_seconds_count_children_that_trained_on_cuda() -> None:
    document = job_manifest(maxTrials=3)
    document["spec"]["trial"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": 2}}
    meter = LocalMeter(spec=specs.parse_manifest(document).spec, threads=4,
                       records=[{"gpuSeconds": 5.0, "cpuSeconds": 1.0}])
    assert meter.finished(0, {"device": "cuda:0"}, 10.0) == Cost(20.0, 40.0)
    assert meter.finished(1, {"device": "cpu"}, 10.0) == Cost(0.0, 40.0)
    assert meter.usage.spent == Cost(25.0, 81.0) and meter.usage.children == 3
    assert meter.spent() is None  # no budget


@pytest.mark.parametrize("in_flight, spent", [("Elapsed", False), ("Expected", True)])
def test_local_mode_counts_children_in_flight_as_spec_budget_in_flight_says(in_flight, spent) -> None:
    import time
    # Two finished children of 100 CPU-seconds; one running for 10 s on 4 threads (40 CPU-seconds).
    document = job_manifest(maxTrials=9, budget={"cpuHours": 290 / HOUR, "inFlight": in_flight})
    meter = LocalMeter(spec=specs.parse_manifest(document).spec, threads=4,
                       records=[{"cpuSeconds": 100.0}, {"cpuSeconds": 100.0}])
    meter.running[2] = time.monotonic() - 10.0
    # Elapsed: 200 + 40 < 290. Expected: 200 + max(40, 100) + 100 for the next child > 290.
    assert (meter.spent() is not None) == spent


def test_the_live_panel_shows_the_compute_line() -> None:
    import io

    from rich.console import Console

    from kubenas.progress import Progress
    from kubenas.search import Search

    document = job_manifest(maxTrials=10, budget={"cpuHours": 2})
    spec = specs.parse_manifest(document).spec
    meter = LocalMeter(spec=spec, threads=2, records=[{"gpuSeconds": 0.0, "cpuSeconds": 360.0}])
    progress = Progress(name="fake", stream=io.StringIO(), live=False)
    progress.usage = meter.line(remaining_children=9)
    screen = io.StringIO()
    Console(file=screen, width=120).print(progress._panel(Search(spec), running=0))
    assert "compute" in screen.getvalue()
    assert "0.100 of 2 CPU-h, 0.000 GPU-h; rest ~0.90 CPU-h, ~0.00 GPU-h" in screen.getvalue()


def test_the_local_meter_takes_a_template_whose_quantities_it_cannot_read() -> None:
    """The schema does not parse quantities; a local search without a budget must not fail on one."""
    document = job_manifest(maxTrials=3)
    document["spec"]["trial"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "2 cores"}}
    meter = LocalMeter(spec=specs.parse_manifest(document).spec, threads=2)
    assert meter.resources.gpus == 1.0 and meter.spent() is None
