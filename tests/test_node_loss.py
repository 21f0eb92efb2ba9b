"""A node lost under a running child, on real Kubernetes with two process kubelets.

One of two nodes going away is a partial disruption: the node lifecycle controller marks
it unreachable and taints it NoExecute, and the taint eviction controller evicts its pods
once their toleration runs out (2 s here; the controller manager watches nodes every
second with a 16 s grace period instead of 50 s, so the test takes seconds, not minutes).
The evicted pod stays Terminating until its kubelet returns, so the Job says FailureTarget
first: the operator fails the child NodeLost from that at once, naming the node."""

from __future__ import annotations

import time

import pytest

from kubenas.localcluster import NodeOptions
from tests.cluster_harness import Cluster, OperatorProcess, apply, search_manifest, wait_for
from tests.test_operator_e2e import phase, trials, wait_phase

NS = "nodes"
LOST, SPARE = "gpu-a", "gpu-b"
EVICT_AFTER_SECONDS = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(workdir=tmp_path_factory.mktemp("cluster"), node=NodeOptions(name=LOST),
                      extra_nodes=[NodeOptions(name=SPARE)],
                      controller_manager_args=["--node-monitor-grace-period=16s", "--node-monitor-period=1s"]).start()
    cluster.install_crds()
    cluster.namespace(NS)
    yield cluster
    cluster.stop()


@pytest.fixture
def operator(cluster: Cluster, tmp_path: pytest.TempPathFactory):
    process = OperatorProcess(cluster=cluster, namespace=NS, log=tmp_path / "operator.log").start()
    yield process
    process.stop()


def _node_tainted(cluster: Cluster, name: str) -> bool:
    node = cluster.get(f"/api/v1/nodes/{name}")
    return any(taint["key"] == "node.kubernetes.io/unreachable" for taint in node["spec"].get("taints") or [])


def test_a_child_on_a_lost_node_is_evicted_fails_node_lost_and_the_search_goes_on(cluster, operator):
    document = search_manifest("lost", namespace=NS, env={"FAKE_SECONDS": "3"}, maxTrials=3, parallelism=1)
    pod = document["spec"]["trial"]["template"]["spec"]
    pod["nodeSelector"] = {"kubernetes.io/hostname": LOST}  # every child on the node that will be lost
    pod["tolerations"] = [{"key": key, "operator": "Exists", "effect": "NoExecute",
                           "tolerationSeconds": EVICT_AFTER_SECONDS}
                          for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")]
    apply(cluster, document)
    pods = f"/api/v1/namespaces/{NS}/pods"
    wait_for(lambda: any(p["status"].get("phase") == "Running"
                         for p in cluster.items(pods, labelSelector="kubenas.io/search=lost")),
             timeout=60, what="the first child running", operator=operator)
    kubelet = cluster.local.components["kubelet"]
    kubelet.kill()  # the node is gone: no lease, no status; its processes die with it
    lost_at = time.monotonic()

    def first_child_failed():
        found = trials(cluster, "lost", NS)
        return found and found[0]["status"].get("phase") == "Failed"

    wait_for(first_child_failed, timeout=90, what="the first child failed", operator=operator)
    waited = time.monotonic() - lost_at
    first = trials(cluster, "lost", NS)[0]["status"]
    assert first["reason"] == "NodeLost" and LOST in first["message"], first
    assert "DeletionByTaintManager" in first["message"]
    assert first["cpuSeconds"] > 0  # it ran until the eviction: that time is spent, and counted
    assert _node_tainted(cluster, LOST) and not _node_tainted(cluster, SPARE)
    evicted = cluster.items(pods, labelSelector="kubenas.io/search=lost,kubenas.io/trial-index=0")
    assert evicted and all(p["metadata"].get("deletionTimestamp") for p in evicted)  # Terminating: nobody confirms
    # The search goes on: the next child waits for its node, it does not fail.
    wait_for(lambda: len(trials(cluster, "lost", NS)) == 2, timeout=30, what="the second child", operator=operator)
    time.sleep(3)
    assert phase(cluster, "lost", NS) == "Running"
    assert trials(cluster, "lost", NS)[1]["status"].get("phase") != "Failed"
    kubelet.start()  # the node comes back
    found = wait_phase(cluster, "lost", "Succeeded", operator=operator, namespace=NS, timeout=120)
    children = trials(cluster, "lost", NS)
    assert [t["status"]["phase"] for t in children] == ["Failed", "Succeeded", "Succeeded"]
    assert found["status"]["trials"]["failed"] == 1
    print(f"node lost -> child failed NodeLost after {waited:.1f} s")
