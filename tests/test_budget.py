"""The budget arithmetic (kubenas.budget) and the operator's meter of it (metering), pure."""

from __future__ import annotations

import pytest

from kubenas import spec as specs
from kubenas.budget import (HOUR, Cost, Resources, Usage, budget_spent, cost_of, quantity, resources_of, run_seconds,
                            usage_status)
from kubenas.operator import metering
from tests.cluster_harness import search_manifest


@pytest.mark.parametrize(("value", "number"), [("500m", 0.5), ("2", 2.0), (4, 4.0), ("1.5", 1.5), ("1k", 1000.0),
                                               ("1Gi", 2.0**30), ("250u", 0.00025), (".5", 0.5), ("1e3", 1000.0)])
def test_quantities(value, number):
    assert quantity(value) == pytest.approx(number)


@pytest.mark.parametrize("value", ["", "one", "1x", True, "5 m", None])
def test_not_quantities(value):
    with pytest.raises(ValueError):
        quantity(value)


def test_resources_prefer_the_gpu_limit_and_the_cpu_request():
    container = {"resources": {"limits": {"nvidia.com/gpu": 2, "cpu": "8"}, "requests": {"cpu": "500m"}}}
    assert resources_of(container) == Resources(gpus=2.0, cpus=0.5)
    assert resources_of({"resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"cpu": "3"}}}) == \
        Resources(gpus=1.0, cpus=3.0)
    assert resources_of({}) == Resources(gpus=0.0, cpus=1.0)  # neither: one CPU, no GPU
    assert resources_of(None) == Resources(gpus=0.0, cpus=1.0)


def test_a_childs_cost_is_its_reservation_times_its_run_time():
    assert cost_of(Resources(gpus=2, cpus=4), 90.0) == Cost(gpu_seconds=180.0, cpu_seconds=360.0)
    assert cost_of(Resources(gpus=1, cpus=1), -5.0) == Cost()  # a skewed clock never refunds
    # Retries: each attempt's span counts; an attempt with no end does not.
    assert run_seconds([(100.0, 130.0), (140.0, 150.0), (160.0, None), (None, 170.0)]) == 40.0


def test_usage_sums_and_expects_the_rest_at_the_mean():
    usage = Usage.of([Cost(100.0, 400.0), Cost(300.0, 800.0)])
    assert usage.children == 2 and usage.spent == Cost(400.0, 1200.0)
    assert usage.mean() == Cost(200.0, 600.0)
    assert usage.expected_remaining(10) == Cost(2000.0, 6000.0)
    assert Usage().expected_remaining(10) == Cost()  # no child finished: nothing to expect from
    assert usage.expected_remaining(-1) == Cost()
    status = usage_status(usage=usage, running=Cost(HOUR, 0.0), remaining_children=18)
    assert status == {"gpuHours": round(400 / HOUR, 6), "cpuHours": round(1200 / HOUR, 6), "runningGpuHours": 1.0,
                      "runningCpuHours": 0.0, "expectedRemainingGpuHours": 1.0,
                      "expectedRemainingCpuHours": 3.0, "childrenMeasured": 2}


def test_the_budget_counts_the_running_childrens_elapsed_time():
    usage = Usage.of([Cost(1800.0, 0.0)])  # half a GPU-hour finished
    assert budget_spent(gpu_hours=1.0, cpu_hours=None, usage=usage, running=Cost(1799.0, 0.0)) is None
    message = budget_spent(gpu_hours=1.0, cpu_hours=None, usage=usage, running=Cost(1800.0, 0.0), running_children=3)
    assert message == ("1 of spec.budget.gpuHours=1 GPU-hours spent (0.5 by 1 finished children, 0.5 so far by "
                       "3 running)")
    # Each limit on its own; no limit, no end.
    assert budget_spent(gpu_hours=None, cpu_hours=None, usage=usage, running=Cost(10**9, 10**9)) is None
    assert "cpuHours=2" in budget_spent(gpu_hours=100.0, cpu_hours=2.0, usage=Usage.of([Cost(0.0, 7200.0)]),
                                        running=Cost())


def test_expected_counts_each_child_in_flight_at_least_at_the_mean_and_one_more_child():
    usage = Usage.of([Cost(100.0, 0.0), Cost(300.0, 0.0)])  # mean 200 GPU-seconds
    in_flight = [Cost(50.0, 0.0), Cost(500.0, 0.0), Cost()]  # young, long-running, not started yet
    # 400 spent + 200 + 500 + 200 in flight + 200 for the next child = 1500: exactly fits
    assert budget_spent(gpu_hours=1500 / HOUR, cpu_hours=None, usage=usage, running=Cost(550.0, 0.0),
                        in_flight=in_flight) is None
    message = budget_spent(gpu_hours=1499 / HOUR, cpu_hours=None, usage=usage, running=Cost(550.0, 0.0),
                           in_flight=in_flight)
    assert message == ("0.4167 GPU-hours expected with one more child, more than spec.budget.gpuHours=0.416389 "
                       "(0.1111 by 2 finished children, 0.25 expected of 3 in flight, 0.05556 per child)")
    # Elapsed, on the same figures, would start more: 400 + 550 is far from either budget.
    assert budget_spent(gpu_hours=1499 / HOUR, cpu_hours=None, usage=usage, running=Cost(550.0, 0.0)) is None
    # Before any child has finished there is no mean: Expected is Elapsed.
    assert budget_spent(gpu_hours=1.0, cpu_hours=None, usage=Usage(), running=Cost(3599.0, 0.0),
                        in_flight=[Cost(3599.0, 0.0)]) is None
    assert budget_spent(gpu_hours=1.0, cpu_hours=None, usage=Usage(), running=Cost(3600.0, 0.0),
                        in_flight=[Cost(3600.0, 0.0)]) is not None


def test_expected_never_starts_a_child_that_elapsed_would_not():
    """Its total is at least Elapsed's (each child in flight at least its elapsed cost,
    plus one more child): the issue's rule holds in both modes."""
    import random
    rng = random.Random(3)
    for _ in range(2000):
        usage = Usage.of([Cost(rng.uniform(0, 500), rng.uniform(0, 500)) for _ in range(rng.randint(0, 5))])
        in_flight = [Cost(rng.uniform(0, 800), rng.uniform(0, 800)) for _ in range(rng.randint(0, 6))]
        limits = {"gpu_hours": rng.uniform(0.01, 1.5), "cpu_hours": rng.choice([None, rng.uniform(0.01, 1.5)])}
        running = sum(in_flight, Cost())
        if budget_spent(**limits, usage=usage, running=running) is not None:
            assert budget_spent(**limits, usage=usage, running=running, in_flight=in_flight) is not None


def test_expected_ends_near_the_budget_where_elapsed_overshoots():
    """The schedule of benchmarks/budget_overshoot.py (the real decision function, 1-GPU
    children of 600 ± 300 s, a budget of 50 mean children), at parallelism 16."""
    from benchmarks.budget_overshoot import simulate
    budget = 50 * 600 / HOUR
    for seed in range(3):
        elapsed, _ = simulate(budget_gpu_hours=budget, parallelism=16, expected=False, seed=seed)
        expected, _ = simulate(budget_gpu_hours=budget, parallelism=16, expected=True, seed=seed)
        assert elapsed / budget > 1.12  # the children started last run on past the budget
        assert expected / budget < 1.1 and expected < elapsed


def test_the_meters_give_each_child_in_flights_elapsed_cost():
    meter = metering.SearchMeter()
    pod = {"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": 2, "cpu": "1"}}}]},
           "status": {"containerStatuses": [{"state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}
    meter.watch_pod(3, pod)
    start = metering.started("2026-01-01T00:00:00Z")
    assert meter.elapsed([3, 4], now=start + 10) == [Cost(20.0, 10.0), Cost()]  # child 4 has not started
    assert meter.running_cost(now=start + 10) == Cost(20.0, 10.0)


def test_the_spec_takes_a_budget():
    document = search_manifest("b", namespace="n", budget={"gpuHours": 0.5, "cpuHours": 12})
    budget = specs.parse_manifest(document).spec.budget
    assert (budget.gpu_hours, budget.cpu_hours) == (0.5, 12.0)
    assert specs.parse_manifest(search_manifest("b", namespace="n")).spec.budget == specs.Budget()
    assert budget.in_flight == "Elapsed"  # the rule, by default
    expected = search_manifest("b", namespace="n", budget={"gpuHours": 1, "inFlight": "Expected"})
    assert specs.parse_manifest(expected).spec.budget.in_flight == "Expected"
    for wrong in ({"gpuHours": 0}, {"cpuHours": -1}, {"gpuHour": 1}, {"gpuHours": 1, "inFlight": "Mean"}):
        with pytest.raises(specs.SpecError, match="budget"):
            specs.parse_manifest(search_manifest("b", namespace="n", budget=wrong))


def pod(*, gpus: int, running: str | None = None, started: str | None = None, finished: str | None = None) -> dict:
    state = {"running": {"startedAt": running}} if running else \
        {"terminated": {"startedAt": started, "finishedAt": finished, "exitCode": 0}}
    return {"metadata": {"name": "p"}, "spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": gpus}}}]},
            "status": {"containerStatuses": [{"state": state}]}}


def test_a_finished_childs_cost_from_its_job_and_pods():
    job = {"spec": {"template": {"spec": {"containers": [
        {"resources": {"limits": {"nvidia.com/gpu": 1}, "requests": {"cpu": "2"}}}]}}}}
    pods = [pod(gpus=1, started="2026-01-01T00:00:00Z", finished="2026-01-01T00:00:30Z"),
            pod(gpus=1, started="2026-01-01T00:01:00Z", finished="2026-01-01T00:01:10Z")]
    assert metering.child_cost(job, pods) == Cost(40.0, 80.0)
    # A container that never ran (the zero time as its start) costs nothing.
    assert metering.child_cost(job, [pod(gpus=1, started="1970-01-01T00:00:00Z",
                                         finished="2026-01-01T00:00:30Z")]) == Cost()



def test_a_child_evicted_from_a_lost_node_costs_its_time_until_the_eviction():
    """No terminated state (its kubelet is gone): it ran from its start to its DisruptionTarget."""
    job = {"spec": {"template": {"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": 2}}}]}}}}
    evicted = {"status": {
        "containerStatuses": [{"state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}],
        "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                        "lastTransitionTime": "2026-01-01T00:00:20Z"}]}}
    assert metering.child_cost(job, [evicted]) == Cost(40.0, 20.0)
    evicted["status"]["conditions"] = []  # still running, not taken away: not a finished attempt
    assert metering.child_cost(job, [evicted]) == Cost()


def test_the_meter_counts_running_children_and_each_verdict_once():
    meter = metering.SearchMeter()
    spent = meter.restore([{"status": {"phase": "Succeeded", "gpuSeconds": 10.0, "cpuSeconds": 20.0}},
                           {"status": {"phase": "Failed", "gpuSeconds": 5.0}},
                           {"status": {"phase": "Running", "gpuSeconds": 99.0}}])  # not finished: not counted
    assert spent == Cost(15.0, 20.0) and meter.usage.children == 2
    start = metering.results.timestamp("2026-01-01T00:00:00Z")
    meter.watch_pod(7, pod(gpus=2, running="2026-01-01T00:00:00Z"))
    assert meter.running_cost(start + 60) == Cost(120.0, 60.0)
    # Ended: counted to its end while its verdict is on its way.
    meter.watch_pod(7, pod(gpus=2, started="2026-01-01T00:00:00Z", finished="2026-01-01T00:01:30Z"))
    assert meter.running_cost(start + 1000) == Cost(180.0, 90.0)
    assert meter.record(7, Cost(180.0, 90.0)) == {"gpuSeconds": 180.0, "cpuSeconds": 90.0}
    assert meter.settle(7, told=True) == Cost(180.0, 90.0)
    assert meter.usage.spent == Cost(195.0, 110.0) and meter.usage.children == 3
    assert meter.running_cost(start + 1000) == Cost()
    # A verdict the engine had already (told again after a restart): in the restored sum, not added.
    meter.record(3, Cost(50.0, 50.0))
    assert meter.settle(3, told=False) is None
    assert meter.usage.spent == Cost(195.0, 110.0)


def test_the_cost_counters_resume_at_the_recorded_sum_once():
    from prometheus_client import REGISTRY

    from kubenas.metrics import SearchMetrics

    watched = SearchMetrics(namespace="budget-unit", search="resumed")
    labels = {"namespace": "budget-unit", "search": "resumed"}
    read = lambda: REGISTRY.get_sample_value("kubenas_child_gpu_seconds_total", labels)  # noqa: E731
    watched.cost_resumed(gpu_seconds=100.0, cpu_seconds=400.0)
    watched.cost(gpu_seconds=20.0, cpu_seconds=0.0)
    assert read() == 120.0
    watched.cost_resumed(gpu_seconds=120.0, cpu_seconds=400.0)  # a driver restarted in the same process
    assert read() == 120.0
    assert REGISTRY.get_sample_value("kubenas_child_cpu_seconds_total", labels) == 400.0
    watched.forget()
    assert read() is None


@pytest.mark.parametrize("in_flight, spent", [("Elapsed", False), ("Expected", True)])
def test_the_operator_judges_its_children_in_flight_as_spec_budget_in_flight_says(in_flight, spent):
    from kubenas.operator.driver import SearchDriver
    from kubenas.search import Search
    document = search_manifest("b", namespace="n", maxTrials=9, budget={"gpuHours": 290 / HOUR, "inFlight": in_flight})
    driver = SearchDriver(client=None, body={"metadata": {"name": "b", "namespace": "n", "uid": "u"}}, logger=None)
    driver.spec = specs.parse_manifest(document).spec
    driver.search = Search(driver.spec)
    driver.search.ask(), driver.search.ask()  # children 0 (running 10 s on 1 GPU) and 1 (not started)
    driver.meter.usage = Usage.of([Cost(100.0, 0.0), Cost(100.0, 0.0)])
    driver.meter.watch_pod(0, pod(gpus=1, running="2026-01-01T00:00:00Z"))
    now = metering.started("2026-01-01T00:00:10Z")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metering.time, "time", lambda: now)
        # Elapsed: 200 + 10 < 290. Expected: 200 + max(10, 100) + 100 (not started) + 100 (the next) > 290.
        assert (driver._budget_spent() is not None) == spent


def test_children_that_fit_counts_whole_children_at_the_mean():
    from kubenas.budget import children_that_fit
    usage = Usage.of([Cost(100.0, 10.0), Cost(300.0, 30.0)])  # mean 200 GPU-, 20 CPU-seconds
    in_flight = [Cost(50.0, 0.0), Cost()]  # each counts the mean: 400 committed
    fit = lambda gpu, cpu=None: children_that_fit(gpu_hours=gpu, cpu_hours=cpu, usage=usage,  # noqa: E731
                                                  in_flight=in_flight)
    assert fit(1399 / HOUR) == 2 and fit(1400 / HOUR) == 3  # 400 spent + 400 committed + k × 200
    assert fit(700 / HOUR) == 0  # already past: nothing fits
    assert fit(10.0, cpu=100 / HOUR) == 1  # the tighter limit decides: 40 + 40 + 1 × 20 <= 100
    assert fit(None) is None  # no limit
    assert children_that_fit(gpu_hours=1.0, cpu_hours=None, usage=Usage(), in_flight=[]) is None  # no mean yet


async def test_with_in_flight_expected_a_burst_starts_only_the_children_expected_to_fit():
    """Eight free places, room in the budget for three children at the mean: three Jobs."""
    import copy

    from tests.test_result_cache import JOB_SEARCH, driver_of
    body = copy.deepcopy(JOB_SEARCH)
    body["spec"].update(maxTrials=20, parallelism=8, cache={"enabled": False},
                        budget={"gpuHours": 1000 / HOUR, "inFlight": "Expected"})
    driver, api = driver_of(body)
    driver.meter.usage = Usage.of([Cost(350.0, 0.0), Cost(350.0, 0.0)])  # 700 spent, 350 per child at the mean
    assert driver._budget_room() == 0  # 700 + 350 > 1000
    driver.meter.usage = Usage.of([Cost(100.0, 0.0), Cost(100.0, 0.0)])  # 200 spent, 100 per child
    await driver._step()
    assert len(api.created["jobs"]) == 8  # 200 + 8 × 100 fits: the burst is not cut
    driver.search.in_flight.clear()  # (their verdicts aside) nothing in flight, 250 more spent:
    driver.meter.usage = Usage.of([Cost(150.0, 0.0), Cost(150.0, 0.0), Cost(150.0, 0.0)])  # 450, 150 per child
    await driver._step()
    assert len(api.created["jobs"]) == 8 + 3  # 450 + 3 × 150 = 900 fits, a fourth would pass 1000


def test_a_retried_childs_elapsed_cost_counts_every_attempt_whatever_order_the_watch_brings():
    meter = metering.SearchMeter()
    start = metering.results.timestamp("2026-01-01T00:00:00Z")
    first = pod(gpus=1, started="2026-01-01T00:00:00Z", finished="2026-01-01T00:00:30Z")
    second = pod(gpus=1, running="2026-01-01T00:01:00Z")
    first["metadata"]["name"], second["metadata"]["name"] = "child-7-a", "child-7-b"
    meter.watch_pod(7, second)
    meter.watch_pod(7, first)  # the failed attempt's pod, seen again (a relist) after the retry's
    assert meter.elapsed([7], now=start + 100) == [Cost(30.0 + 40.0, 30.0 + 40.0)]
