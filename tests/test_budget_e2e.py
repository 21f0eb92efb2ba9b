"""spec.budget on real Kubernetes (kubenas.localcluster; the process kubelet's node offers
8 nvidia.com/gpu): children requesting one GPU each, a GPU-hours budget that stops the
search after a few, its operator killed mid-child once; each NASTrial's gpuSeconds, the
search's status.usage, the metrics, and the same decision from a restarted operator."""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster_harness import (NAS, TRIALS, Cluster, OperatorProcess, apply, free_port, search_manifest,
                                   wait_for)

NS = "budget"
NAME = "gpu-budget"
CHILD_SECONDS = 3  # FAKE_SECONDS: whole seconds, as the kubelet's timestamps are
BUDGET_SECONDS = 10  # GPU-seconds: about three children of two at a time


@pytest.fixture(scope="module")
def cluster(shared_cluster: Cluster) -> Cluster:
    shared_cluster.namespace(NS)
    return shared_cluster


def start_operator(cluster: Cluster, log) -> OperatorProcess:
    port = free_port()
    process = OperatorProcess(cluster=cluster, namespace=NS, log=log,
                              args=["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]).start()
    process.metrics_url = f"http://127.0.0.1:{port}/metrics"
    return process


def cost_metrics(operator: OperatorProcess) -> dict[str, float]:
    try:
        text = urllib.request.urlopen(operator.metrics_url, timeout=5).read().decode()
    except OSError:
        return {}  # not serving yet
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.labels.get("search") == NAME and sample.name.startswith(("kubenas_child_gpu_seconds",
                                                                                "kubenas_child_cpu_seconds"))}


def found(cluster: Cluster) -> dict:
    return cluster.get(f"{NAS.format(ns=NS)}/{NAME}")


def trials(cluster: Cluster) -> list[dict]:
    return cluster.items(TRIALS.format(ns=NS), labelSelector=f"kubenas.io/search={NAME}")


def test_a_gpu_budget_ends_the_search_and_every_child_is_recorded(cluster, tmp_path):
    document = search_manifest(NAME, namespace=NS, env={"FAKE_SECONDS": str(CHILD_SECONDS)}, maxTrials=30,
                               parallelism=2, budget={"gpuHours": BUDGET_SECONDS / 3600})
    document["spec"]["trial"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"cpu": "1", "nvidia.com/gpu": 1}}
    operator = start_operator(cluster, tmp_path / "operator.log")
    try:
        apply(cluster, document)
        # The operator killed while the first children run: its successor adopts them.
        wait_for(lambda: any((t.get("status") or {}).get("phase") == "Running" for t in trials(cluster)),
                 timeout=60, what="a running child", operator=operator)
        operator.kill()
        operator = start_operator(cluster, tmp_path / "operator-1.log")
        wait_for(lambda: (found(cluster).get("status") or {}).get("phase") == "Succeeded", timeout=90,
                 what=lambda: f"Succeeded (status: {found(cluster).get('status')})", operator=operator)
        status = found(cluster)["status"]
        children = trials(cluster)
        # Stopped by the budget, with every child it created finished and recorded.
        assert status["reason"] == "BudgetExhausted"
        assert "spec.budget.gpuHours" in status["message"]
        assert 3 <= len(children) < 30 and status["trials"]["created"] == len(children)
        assert status["trials"]["running"] == 0
        seconds = [t["status"]["gpuSeconds"] for t in children]
        assert all(t["status"]["phase"] == "Succeeded" for t in children)
        assert all(s >= CHILD_SECONDS for s in seconds), seconds  # 1 GPU × at least the child's sleep
        assert [t["status"]["cpuSeconds"] for t in children] == seconds  # 1 CPU each
        assert sum(seconds) >= BUDGET_SECONDS
        # The status sums are the NASTrials' sums.
        usage = status["usage"]
        assert usage["gpuHours"] == pytest.approx(sum(seconds) / 3600, abs=1e-6)
        assert usage["cpuHours"] == pytest.approx(sum(seconds) / 3600, abs=1e-6)
        assert usage["childrenMeasured"] == len(children) and usage["runningGpuHours"] == 0
        assert usage["expectedRemainingGpuHours"] == pytest.approx(
            sum(seconds) / len(children) * (30 - len(children)) / 3600, abs=1e-5)
        reasons = {e["reason"] for e in cluster.items(f"/api/v1/namespaces/{NS}/events",
                                                     fieldSelector=f"involvedObject.name={NAME}")}
        assert "BudgetExhausted" in reasons
        metrics = cost_metrics(operator)
        assert metrics["kubenas_child_gpu_seconds_total"] == pytest.approx(sum(seconds), abs=0.01)
    finally:
        operator.stop()

    # A restarted operator sums the NASTrials again and comes to the same decision: no child.
    operator = start_operator(cluster, tmp_path / "operator-2.log")
    try:
        wait_for(lambda: cost_metrics(operator).get("kubenas_child_gpu_seconds_total"), timeout=60,
                 what="the restarted operator's cost counters", operator=operator)
        assert cost_metrics(operator)["kubenas_child_gpu_seconds_total"] == pytest.approx(sum(seconds), abs=0.01)
        time.sleep(3)  # a few of its steps
        assert len(trials(cluster)) == len(children)
        again = found(cluster)["status"]
        assert (again["phase"], again["reason"]) == ("Succeeded", "BudgetExhausted")
        assert again["usage"]["gpuHours"] == usage["gpuHours"]
    finally:
        operator.stop()
