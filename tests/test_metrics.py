"""Prometheus metrics: the per-search metrics, local mode's /metrics (`kubenas search
--metrics-port`, checked by promtool), the API client's retries and their counter."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from kubenas import metrics
from kubenas.controller import UpdateStats
from kubenas.operator.kube import ApiError, KubeClient
from tests import tools
from tests.cluster_harness import free_port
from tests.test_local import job_manifest

KUBENAS = [sys.executable, "-m", "kubenas.cli"]


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def test_search_metrics_follow_children_and_updates() -> None:
    watched = metrics.SearchMetrics(namespace="ns1", search="unit")
    labels = {"namespace": "ns1", "search": "unit"}
    assert value("kubenas_children_created_total", **labels) == 0  # present before the first child
    assert abs(value("kubenas_child_last_finished_timestamp_seconds", **labels) - time.time()) < 5
    for _ in range(3):
        watched.created()
    watched.finished(reason=None, reward=0.81, duration=12.0, delay=0.3)
    watched.finished(reason="OOMKilled", reward=None, duration=3.0, delay=None)
    watched.finished(reason="JobDeleted", reward=None, duration=None, delay=None)
    watched.policy_updated(UpdateStats(version=1, baseline=0.4, advantage_baseline=0.0, mean_reward=0.81, loss=-0.2,
                                       entropy=4.5, grad_norm=1.0))
    watched.children(pending=1, running=2, succeeded=1, failed=2, best=0.81)
    watched.phase("Running")

    assert value("kubenas_children_created_total", **labels) == 3
    assert value("kubenas_children_succeeded_total", **labels) == 1
    assert value("kubenas_children_failed_total", **labels, reason="OOMKilled") == 1
    assert value("kubenas_children_failed_total", **labels, reason="JobDeleted") == 1
    assert value("kubenas_child_reward_count", **labels) == 1
    assert value("kubenas_child_reward_sum", **labels) == 0.81
    assert value("kubenas_child_reward_bucket", **labels, le="0.8") == 0
    assert value("kubenas_child_reward_bucket", **labels, le="0.85") == 1
    assert value("kubenas_child_duration_seconds_count", **labels) == 2  # the deleted Job has no duration
    assert value("kubenas_child_duration_seconds_sum", **labels) == 15.0
    assert value("kubenas_child_result_delay_seconds_count", **labels) == 1
    assert value("kubenas_policy_updates_total", **labels) == 1
    assert (value("kubenas_policy_baseline", **labels), value("kubenas_policy_entropy", **labels),
            value("kubenas_policy_loss", **labels)) == (0.4, 4.5, -0.2)
    assert value("kubenas_children_running", **labels) == 2
    assert [value("kubenas_children", **labels, phase=p) for p in metrics.CHILD_PHASES] == [1, 2, 1, 2]
    assert value("kubenas_best_reward", **labels) == 0.81
    assert [value("kubenas_search_phase", **labels, phase=p) for p in metrics.SEARCH_PHASES] == [0, 1, 0, 0, 0, 0]

    watched.phase("Failed")
    assert value("kubenas_search_phase", **labels, phase="Failed") == 1
    assert value("kubenas_search_phase", **labels, phase="Running") == 0

    watched.forget()  # the search was deleted: none of its series stay
    text = metrics_text()
    assert 'search="unit"' not in text


def test_cost_counters_resume_at_the_recorded_sum_never_twice() -> None:
    labels = {"namespace": "ns1", "search": "resumed"}
    first = metrics.SearchMetrics(namespace="ns1", search="resumed")
    assert value("kubenas_child_gpu_seconds_total", **labels) == 0  # present before the first child
    assert value("kubenas_cache_saved_gpu_seconds_total", **labels) == 0
    first.cost_resumed(gpu_seconds=120.0, cpu_seconds=480.0)  # a restarted operator: the NASTrials' sum
    first.cost(gpu_seconds=10.0, cpu_seconds=40.0)
    # A driver restarted in the same process resumes at a sum it has partly counted already.
    metrics.SearchMetrics(namespace="ns1", search="resumed").cost_resumed(gpu_seconds=130.0, cpu_seconds=500.0)
    assert value("kubenas_child_gpu_seconds_total", **labels) == 130.0
    assert value("kubenas_child_cpu_seconds_total", **labels) == 520.0  # never lowered
    first.forget()


def metrics_text() -> str:
    from prometheus_client import generate_latest
    return generate_latest(REGISTRY).decode()


def test_local_search_serves_metrics_that_promtool_accepts(tmp_path: Path) -> None:
    """`kubenas search --metrics-port`: a live scrape while children run, then values
    that agree with the run's own record."""
    promtool = tools.executable("promtool")
    port = free_port()
    document = job_manifest(name="metered", env={"FAKE_MODE": "failodd", "FAKE_SECONDS": "0.4"}, maxTrials=6,
                            parallelism=1)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(document))
    process = subprocess.Popen([*KUBENAS, "search", str(path), "--runs-dir", str(tmp_path / "runs"), "--no-live",
                                "--metrics-port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        live = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                time.sleep(0.1)
                continue
            seen = samples(text)
            labels = frozenset({"namespace": "local", "search": "metered"}.items())
            if seen.get(("kubenas_children_succeeded_total", labels), 0) >= 1:
                live = text
                break
            time.sleep(0.1)
        assert live is not None, f"no live scrape with a finished child: {process.communicate(timeout=60)[0]!r}"
        checked = subprocess.run([promtool, "check", "metrics"], input=live, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        seen = samples(live)
        labels = {"namespace": "local", "search": "metered"}
        key = lambda name, **more: (name, frozenset({**labels, **more}.items()))  # noqa: E731
        assert seen[key("kubenas_children_created_total")] >= 1
        assert seen[key("kubenas_child_duration_seconds_count")] >= 1
        assert seen[key("kubenas_child_duration_seconds_sum")] >= 0.4  # FAKE_SECONDS per child
        assert seen[key("kubenas_search_phase", phase="Running")] == 1
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output
    finally:
        if process.poll() is None:
            process.kill()


def test_local_search_metrics_agree_with_the_run(tmp_path: Path) -> None:
    """In process (the registry stays readable after the search): counters, the reward
    histogram and the policy gauges equal what the run recorded."""
    from tests.test_local import run

    document = job_manifest(name="counted", env={"FAKE_MODE": "failodd"}, maxTrials=8, parallelism=2,
                            controller={"batchSize": 2, "failedTrials": "zeroReward"})
    result = run(document, tmp_path)
    labels = {"namespace": "local", "search": "counted"}
    counters = result.search.counters
    assert value("kubenas_children_created_total", **labels) == counters.created == 8
    assert value("kubenas_children_succeeded_total", **labels) == counters.succeeded == 4
    assert value("kubenas_children_failed_total", **labels, reason="InvalidArchitecture") == counters.failed == 4
    assert value("kubenas_child_reward_count", **labels) == 4
    best = result.search.best
    assert value("kubenas_best_reward", **labels) == best.reward
    assert value("kubenas_policy_updates_total", **labels) == result.search.controller.version == 4
    assert value("kubenas_policy_entropy", **labels) == result.search.last_update.entropy
    assert value("kubenas_search_phase", **labels, phase="Succeeded") == 1
    assert value("kubenas_children_running", **labels) == 0


async def serve(handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


async def test_transient_api_errors_are_retried_and_counted() -> None:
    answers = [web.json_response({"reason": "ServiceUnavailable", "message": "etcd"}, status=503),
               web.json_response({"reason": "TooManyRequests", "message": "slow"}, status=429,
                                 headers={"Retry-After": "0"}),
               web.json_response({"kind": "ConfigMap", "metadata": {"name": "x"}})]
    calls = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(request.method)
        return answers.pop(0)

    runner, url = await serve(handler)
    before = {cause: value("kubenas_operator_api_retries_total", reason=cause) or 0 for cause in ("503", "429")}
    client = KubeClient.connect(server=url)
    client.retry_delays = (0.0, 0.0, 0.0)
    try:
        answer = await client.request("POST", "/api/v1/namespaces/a/configmaps", body={})
    finally:
        await client.close()
        await runner.cleanup()
    assert answer["metadata"]["name"] == "x" and calls == ["POST"] * 3
    assert value("kubenas_operator_api_retries_total", reason="503") == before["503"] + 1
    assert value("kubenas_operator_api_retries_total", reason="429") == before["429"] + 1


async def test_errors_that_retrying_cannot_fix_are_raised_at_once() -> None:
    calls = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.json_response({"reason": "Invalid", "message": "spec.x: Required value"}, status=422)

    runner, url = await serve(handler)
    client = KubeClient.connect(server=url)
    client.retry_delays = (0.0, 0.0)
    try:
        try:
            await client.request("POST", "/apis/batch/v1/namespaces/a/jobs", body={})
        except ApiError as error:
            assert (error.status, error.reason, error.message) == (422, "Invalid", "spec.x: Required value")
        else:
            raise AssertionError("a 422 was not raised")
    finally:
        await client.close()
        await runner.cleanup()
    assert len(calls) == 1


async def test_a_server_that_stays_away_ends_in_an_error_after_the_retries() -> None:
    before = value("kubenas_operator_api_retries_total", reason="connection") or 0
    client = KubeClient.connect(server=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    client.retry_delays = (0.0, 0.0)
    try:
        try:
            await client.get(metrics_resource(), namespace="a", name="b")
        except ApiError as error:
            assert error.status == 503 and "Connect" in error.message
        else:
            raise AssertionError("no error without a server")
    finally:
        await client.close()
    assert value("kubenas_operator_api_retries_total", reason="connection") == before + 2


def metrics_resource():
    from kubenas.operator import names
    return names.CONFIGMAPS
