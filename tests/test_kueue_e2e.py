"""Kueue admission end to end: the real Kueue controller manager (built by `make tools`
from its pinned Go module, its webhooks on loopback) on the real control plane, a
ClusterQueue holding 2 `nvidia.com/gpu`, and a search of 1-GPU children with
parallelism 6. Kueue, not the operator, decides how many run: never more than 2."""

from __future__ import annotations

import datetime
import os

import pytest

from kubenas.localcluster import binaries
from kubenas.localcluster.kueue import Kueue
from tests.cluster_harness import NAS, TRIALS, Cluster, OperatorProcess, apply, search_manifest, wait_for
from tests.tools import missing

NS = "queued"
GPUS = 2  # the ClusterQueue's nominal quota
MAX_TRIALS, PARALLELISM = 8, 6
SECONDS, DEADLINE = 4, 10  # each child sleeps this long; activeDeadlineSeconds


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    try:
        binaries.find_kueue()
    except binaries.BinaryNotFound as error:
        missing(str(error))
    if os.geteuid() != 0:
        missing("Kueue runs in a mount namespace of its own (its metrics certificate's path is fixed): that needs root")
    cluster = Cluster(workdir=tmp_path_factory.mktemp("cluster")).start()
    kueue = Kueue(cluster.local)
    try:
        kueue.start()
        cluster.install_crds()
        cluster.namespace(NS)
        for document in (
            {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "gpu-nodes"}},
            {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": "gpus"},
             "spec": {"namespaceSelector": {}, "resourceGroups": [{
                 "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                 "flavors": [{"name": "gpu-nodes", "resources": [
                     {"name": "cpu", "nominalQuota": "16"}, {"name": "memory", "nominalQuota": "16Gi"},
                     {"name": "nvidia.com/gpu", "nominalQuota": GPUS}]}]}]}},
            {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": "gpus", "namespace": NS},
             "spec": {"clusterQueue": "gpus"}},
        ):
            apply(cluster, document)
        yield cluster
    finally:
        kueue.stop()
        cluster.stop()


def _time(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals [start, end) open at once (an end before a start at equal times)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                   key=lambda edge: (edge[0], edge[1]))
    peak = open_now = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


def test_kueues_webhook_suspends_a_queued_job(cluster):
    """The mutating webhook answers on loopback: a Job naming a queue is made suspended."""
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "probe", "namespace": NS, "labels": {"kueue.x-k8s.io/queue-name": "gpus"}},
           "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "c", "image": "busybox", "command": ["true"]}]}}}}
    created = cluster.request("POST", f"/apis/batch/v1/namespaces/{NS}/jobs", job, params={"dryRun": "All"})
    assert created["spec"]["suspend"] is True


def test_kueue_admits_children_within_the_gpu_quota(cluster, tmp_path):
    operator = OperatorProcess(cluster=cluster, namespace=NS, log=tmp_path / "operator.log").start()
    manifest = search_manifest("queued", namespace=NS, env={"FAKE_SECONDS": str(SECONDS)},
                               maxTrials=MAX_TRIALS, parallelism=PARALLELISM)
    manifest["spec"]["trial"]["queueName"] = "gpus"
    manifest["spec"]["trial"]["activeDeadlineSeconds"] = DEADLINE
    manifest["spec"]["trial"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"cpu": "1", "nvidia.com/gpu": "1"}}
    try:
        apply(cluster, manifest)
        most_queued, most_running_pods, phases_seen, restarted = 0, 0, set(), False
        kueue_said = set()  # queued NASTrials' messages, from Kueue's Workloads

        def done() -> bool:  # samples the search, its NASTrials and pods on the way
            nonlocal most_queued, most_running_pods, restarted
            status = (cluster.get(f"{NAS.format(ns=NS)}/queued") or {}).get("status") or {}
            most_queued = max(most_queued, (status.get("trials") or {}).get("queued") or 0)
            if most_queued >= PARALLELISM - GPUS and not restarted:  # children wait for Kueue: kill the operator
                operator.kill()
                operator.start()
                restarted = True
            trial_statuses = [t.get("status") or {} for t in cluster.items(TRIALS.format(ns=NS))]
            phases_seen.update(t.get("phase") for t in trial_statuses)
            kueue_said.update(t["message"] for t in trial_statuses
                              if t.get("phase") == "Queued" and str(t.get("message")).startswith("Kueue: "))
            pods = cluster.items(f"/api/v1/namespaces/{NS}/pods")
            most_running_pods = max(most_running_pods, sum(p["status"].get("phase") == "Running" for p in pods))
            return status.get("phase") in ("Succeeded", "Failed")

        wait_for(done, timeout=150, interval=0.3, what="the search to finish", operator=operator)
    finally:
        operator.stop()
    search = cluster.get(f"{NAS.format(ns=NS)}/queued")
    children = cluster.items(TRIALS.format(ns=NS))
    assert search["status"]["phase"] == "Succeeded", search["status"]
    assert restarted  # the operator was SIGKILLed while children were queued, and the search went on
    assert len(children) == MAX_TRIALS and all(t["status"]["phase"] == "Succeeded" for t in children)
    jobs = cluster.items(f"/apis/batch/v1/namespaces/{NS}/jobs", labelSelector="kubenas.io/search=queued")
    assert len(jobs) == MAX_TRIALS  # one Job per child, none made twice across the restart
    assert search["status"]["trials"]["queued"] == 0

    # Never more than the quota's 2 GPUs in use: from the trainers' own start and end times.
    pods = [p for p in cluster.items(f"/api/v1/namespaces/{NS}/pods") if p["metadata"]["name"].startswith("queued-")]
    runs = []
    for pod in pods:
        ended = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        runs.append((_time(ended["startedAt"]), _time(ended["finishedAt"])))
    peak = peak_overlap(runs)
    print(f"\nKueue: peak {peak} children running at once (sampled: {most_running_pods}), "
          f"at most {most_queued} queued, quota {GPUS} GPUs, parallelism {PARALLELISM}")
    assert len(runs) == MAX_TRIALS
    assert peak == GPUS and most_running_pods <= GPUS  # the quota is used, never exceeded

    # The waits showed: NASTrials were Queued, the search counted them, and each child
    # records when it was admitted.
    assert "Queued" in phases_seen and most_queued >= PARALLELISM - GPUS
    # and why, in Kueue's words (its Workloads, listed by the operator under its RBAC)
    assert any("insufficient unused quota for nvidia.com/gpu" in said for said in kueue_said), kueue_said
    print(f"Kueue: a queued child said {sorted(kueue_said)[0]!r}")
    waits = {t["metadata"]["name"]: _time(t["status"]["admissionTime"]) - _time(t["status"]["queuedTime"])
             for t in children}
    assert max(waits.values()) >= SECONDS, waits  # the later children waited for a GPU

    # The deadline counts from admission: Kueue's unsuspending sets the Job's startTime,
    # so a child that waited longer than activeDeadlineSeconds still succeeded.
    jobs = {j["metadata"]["name"]: j for j in cluster.items(f"/apis/batch/v1/namespaces/{NS}/jobs")}
    lifetimes = {name: _time(job["status"]["completionTime"]) - _time(job["metadata"]["creationTimestamp"])
                 for name, job in jobs.items()}
    assert max(lifetimes.values()) > DEADLINE, lifetimes
    print(f"Kueue: admission waits {min(waits.values()):.0f}-{max(waits.values()):.0f} s; Jobs' creation to "
          f"completion up to {max(lifetimes.values()):.0f} s with activeDeadlineSeconds {DEADLINE}")
    for name, job in jobs.items():
        assert _time(job["status"]["startTime"]) >= _time(job["metadata"]["creationTimestamp"]) + waits[name] - 1


def test_a_queue_that_does_not_exist_is_inadmissible_until_it_is_made(cluster, tmp_path):
    """A typo in queueName: the child says so in Kueue's words, the search warns once, and
    the child runs as soon as the LocalQueue exists."""
    operator = OperatorProcess(cluster=cluster, namespace=NS, log=tmp_path / "operator.log").start()
    manifest = search_manifest("typo", namespace=NS, env={"FAKE_SECONDS": "1"}, maxTrials=2, parallelism=2)
    manifest["spec"]["trial"]["queueName"] = "gpus-typo"
    manifest["spec"]["trial"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"cpu": "1", "nvidia.com/gpu": "1"}}
    try:
        apply(cluster, manifest)
        waiting = wait_for(lambda: [t["status"] for t in cluster.items(TRIALS.format(ns=NS))
                                    if t["spec"]["search"] == "typo" and (t.get("status") or {}).get("reason")
                                    == "Inadmissible"] or None,
                           timeout=60, what="a NASTrial saying its queue is inadmissible", operator=operator)
        assert waiting[0]["phase"] == "Queued"
        assert waiting[0]["message"] == "Kueue: LocalQueue gpus-typo doesn't exist", waiting[0]
        warned = wait_for(lambda: [e for e in cluster.items(f"/api/v1/namespaces/{NS}/events")
                                   if e["reason"] == "ChildrenInadmissible"
                                   and e["involvedObject"]["name"] == "typo"] or None,
                          timeout=30, what="a ChildrenInadmissible Event", operator=operator)
        assert warned[0]["type"] == "Warning" and "gpus-typo" in warned[0]["message"]
        assert (cluster.get(f"{NAS.format(ns=NS)}/typo")["status"]["phase"]) == "Running"  # it waits, not fails
        apply(cluster, {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                        "metadata": {"name": "gpus-typo", "namespace": NS}, "spec": {"clusterQueue": "gpus"}})
        wait_for(lambda: (cluster.get(f"{NAS.format(ns=NS)}/typo")["status"].get("phase") == "Succeeded"),
                 timeout=90, what="the search to succeed once its queue exists", operator=operator)
    finally:
        operator.stop()
    warnings = [e for e in cluster.items(f"/api/v1/namespaces/{NS}/events")
                if e["reason"] == "ChildrenInadmissible" and e["involvedObject"]["name"] == "typo"]
    assert len(warnings) == 1 and warnings[0].get("count", 1) == 1  # said once, not per child or per list
