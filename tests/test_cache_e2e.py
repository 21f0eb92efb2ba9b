"""The result cache on real Kubernetes (kubenas.localcluster and the process kubelet):
identical children run one Job, the others wait for it or reuse its result; an operator
killed while twins wait finishes the search the same way; a second search reuses the
first's children through `spec.cache.from` (and says which named search does not exist)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubenas.operator import failpoints
from tests.cluster_harness import TRIALS, NAS, Cluster, OperatorProcess, apply, free_port, search_manifest, wait_for

NS = "cache"
# Two architectures in all (one layer of 8 or 16 1x1 filters): repeats are certain.
TWO_ARCHITECTURES = {"type": "MacroCNN", "macroCNN": {
    "filterHeights": [1], "filterWidths": [1], "numFilters": [8, 16], "skipConnections": False,
    "depth": {"initialLayers": 1, "increment": 0, "everyTrials": 100, "maxLayers": 1}, "imageSize": [8, 8]}}


@pytest.fixture(scope="module")
def cluster(shared_cluster: Cluster) -> Cluster:
    shared_cluster.namespace(NS)
    return shared_cluster


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    process = OperatorProcess(cluster=cluster, namespace=NS, log=tmp_path_factory.mktemp("operator") / "log",
                              args=["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]).start()
    process.metrics_url = f"http://127.0.0.1:{port}/metrics"
    yield process
    process.stop()


def manifest(name: str, ns: str = NS, **spec) -> dict:
    cache = {"enabled": True, **spec.pop("cache", {})}  # the harness turns it off
    return search_manifest(name, namespace=ns, env={"FAKE_SECONDS": "2"}, searchSpace=TWO_ARCHITECTURES,
                           cache=cache, **spec)


def status_of(cluster: Cluster, name: str, ns: str = NS) -> dict:
    return (cluster.get(f"{NAS.format(ns=ns)}/{name}") or {}).get("status") or {}


def trials_of(cluster: Cluster, name: str, ns: str = NS) -> list[dict]:
    found = cluster.items(TRIALS.format(ns=ns), labelSelector=f"kubenas.io/search={name}")
    return sorted(found, key=lambda t: t["spec"]["index"])


def jobs_of(cluster: Cluster, name: str, ns: str = NS) -> list[str]:
    return sorted(j["metadata"]["name"] for j in cluster.items(f"/apis/batch/v1/namespaces/{ns}/jobs",
                                                                labelSelector=f"kubenas.io/search={name}"))


def pods_of(cluster: Cluster, name: str, ns: str = NS) -> int:
    return len(cluster.items(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"kubenas.io/search={name}"))


def scrape(operator: OperatorProcess, name: str) -> dict[str, float]:
    text = urllib.request.urlopen(operator.metrics_url, timeout=10).read().decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.labels.get("search") == name and sample.labels.get("namespace") == NS}


def wait_succeeded(cluster: Cluster, name: str, operator: OperatorProcess, timeout: float = 90, ns: str = NS) -> dict:
    wait_for(lambda: status_of(cluster, name, ns).get("phase") == "Succeeded", timeout=timeout,
             what=lambda: f"{name} to succeed: {status_of(cluster, name, ns)}", operator=operator)
    return status_of(cluster, name, ns)


def check_reuse(cluster: Cluster, name: str, *, trials: int, known: dict[str, dict] | None = None,
                ns: str = NS) -> list[dict]:
    """Every child succeeded; each child that reused a result names a real trained child
    (of this search or of `known`) with the same architecture and reward; one Job and
    one pod per trained child; cacheHits counts the reused ones."""
    children = trials_of(cluster, name, ns)
    assert [t["spec"]["index"] for t in children] == list(range(trials))
    assert all(t["status"]["phase"] == "Succeeded" for t in children)
    by_name = {t["metadata"]["name"]: t for t in children} | (known or {})
    trained = [t for t in children if not t["status"].get("cachedFrom")]
    reused = [t for t in children if t["status"].get("cachedFrom")]
    for child in reused:
        source = by_name[child["status"]["cachedFrom"]]
        assert not source["status"].get("cachedFrom") and source["status"]["phase"] == "Succeeded"
        assert source["spec"]["architecture"] == child["spec"]["architecture"]
        assert child["status"]["reward"] == source["status"]["reward"]
        assert child["status"]["result"] == source["status"]["result"]
        assert child["status"]["savedSeconds"] >= 1  # the fake trainer sleeps 2 s
    # Trained twins only where a twin was not known yet: one Job per architecture.
    architectures = {str(t["spec"]["architecture"]) for t in trained}
    assert len(trained) == len(architectures)
    assert jobs_of(cluster, name, ns) == sorted(t["metadata"]["name"] for t in trained)
    assert pods_of(cluster, name, ns) == len(trained)  # no child ran twice
    status = status_of(cluster, name, ns)
    assert status["trials"]["succeeded"] == trials
    assert status["cacheHits"] == len(reused)
    assert status["cacheSavedSeconds"] == pytest.approx(sum(t["status"]["savedSeconds"] for t in reused), abs=0.01)
    return children


@pytest.fixture(scope="module")
def twins(cluster: Cluster, operator: OperatorProcess) -> dict:
    """Search `twins`, 8 children of 2 architectures, its operator killed while a child
    waits for its running twin (the restarted one rebuilds the cache from the NASTrials
    and the Job still running)."""
    apply(cluster, manifest("twins", maxTrials=8, parallelism=2))
    wait_for(lambda: any((t.get("status") or {}).get("reason") == "WaitingForIdentical"
                         for t in trials_of(cluster, "twins")),
             timeout=60, what="a child waiting for its twin", operator=operator)
    operator.kill()
    operator.start()
    return wait_succeeded(cluster, "twins", operator)


def test_identical_children_share_one_job_even_across_an_operator_restart(cluster, operator, twins):
    children = check_reuse(cluster, "twins", trials=8)
    architectures = {str(t["spec"]["architecture"]) for t in children}
    assert twins["cacheHits"] == 8 - len(architectures) >= 6
    assert twins["controller"]["policyUpdates"] == 4  # every result, reused or not, reached the policy
    # The restarted operator's counter: the hits it recorded itself (those after the restart).
    wait_for(lambda: scrape(operator, "twins").get("kubenas_cache_hits_total", 0) >= 1, timeout=15,
             what=lambda: f"kubenas_cache_hits_total: {scrape(operator, 'twins')}", operator=operator)
    assert scrape(operator, "twins")["kubenas_cache_hits_total"] <= twins["cacheHits"]


def test_a_second_search_reuses_the_first_ones_children(cluster, operator, twins):
    first = {t["metadata"]["name"]: t for t in trials_of(cluster, "twins")}
    apply(cluster, manifest("reuser", maxTrials=4, parallelism=2, cache={"from": ["twins", "nosuch"]}))
    status = wait_succeeded(cluster, "reuser", operator)
    children = check_reuse(cluster, "reuser", trials=4, known=first)
    known = {str(t["spec"]["architecture"]) for t in first.values()}
    from_first = [t for t in children if t["status"].get("cachedFrom", "").startswith("twins-")]
    assert len(from_first) == sum(str(t["spec"]["architecture"]) in known for t in children) > 0
    assert status["cacheHits"] == 4 - len(jobs_of(cluster, "reuser"))
    wait_for(lambda: scrape(operator, "reuser").get("kubenas_cache_hits_total") == status["cacheHits"], timeout=15,
             what=lambda: f"kubenas_cache_hits_total: {scrape(operator, 'reuser')}", operator=operator)
    missing = wait_for(lambda: [e for e in cluster.items(f"/api/v1/namespaces/{NS}/events",
                                                         fieldSelector="involvedObject.name=reuser")
                                if e["reason"] == "CacheSourceNotFound"],
                       timeout=15, what="the CacheSourceNotFound Event", operator=operator)
    assert missing[0]["type"] == "Warning" and "nosuch" in missing[0]["message"]


@pytest.mark.parametrize("name", ["after-trial-created", "after-result-recorded"])
def test_a_crash_between_a_hit_and_its_telling_changes_nothing(cluster, tmp_path: Path, name: str):
    """The operator dies (os._exit) at a failpoint the fourth time it passes it (a child
    created with no Job yet, or a verdict, reused or not, recorded but not told);
    restarted, each architecture still has one Job and every reuse is counted once."""
    namespace = cluster.namespace(f"cache-{name}")
    doomed = OperatorProcess(cluster=cluster, namespace=namespace, log=tmp_path / "operator.log",
                             env={"KUBENAS_FAILPOINTS": f"{name}@4"}).start()
    apply(cluster, manifest("twins", ns=namespace, maxTrials=8, parallelism=2))
    wait_for(lambda: doomed.process.poll() is not None, timeout=60, what=f"the failpoint {name}", operator=doomed)
    assert doomed.process.returncode == failpoints.EXIT_CODE, doomed.tail()
    operator = OperatorProcess(cluster=cluster, namespace=namespace, log=tmp_path / "operator.log",
                               kubeconfig=doomed.kubeconfig).start()
    try:
        status = wait_succeeded(cluster, "twins", operator, ns=namespace)
    finally:
        operator.stop()
    children = check_reuse(cluster, "twins", trials=8, ns=namespace)
    assert status["cacheHits"] == 8 - len({str(t["spec"]["architecture"]) for t in children})
    assert status["controller"]["policyUpdates"] == 4
