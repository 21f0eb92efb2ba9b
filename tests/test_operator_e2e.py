"""The operator end to end on real Kubernetes (kubenas.localcluster: kube-apiserver,
kube-controller-manager, kube-scheduler, etcd, and the process kubelet running each pod
as a local process), kubectl, and `kubenas operator` processes that authenticate as
their ServiceAccount, so the API server's RBAC judges every call they make."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kubenas.operator import failpoints
from kubenas.search import Search
from kubenas import spec as specs
from tests.cluster_harness import (CRDS, NAS, OPERATOR_ACCOUNT, TRIALS, Cluster, OperatorProcess, apply, free_port,
                                   search_manifest, tool, wait_for)
from tests.manifest_checks import kustomize

NS = "e2e"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(workdir=tmp_path_factory.mktemp("cluster")).start()
    cluster.install_crds()
    for namespace in (NS, "restart", "straight"):
        cluster.namespace(namespace)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator's --tabular-dir: the only place its Tabular searches read CSV files."""
    return tmp_path_factory.mktemp("tables")


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tables: Path, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    process = OperatorProcess(cluster=cluster, namespace=NS, log=tmp_path_factory.mktemp("operator") / "log",
                              args=["--metrics-port", str(port), "--metrics-host", "127.0.0.1",
                                    "--tabular-dir", str(tables)]).start()
    process.metrics_url = f"http://127.0.0.1:{port}/metrics"
    yield process
    process.stop()


def scrape(operator: OperatorProcess, name: str, namespace: str = NS) -> dict[tuple[str, str], float]:
    """The operator's metrics of one search: {(metric, reason or phase or ""): value}."""
    text = urllib.request.urlopen(operator.metrics_url, timeout=10).read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("search") == name and sample.labels.get("namespace") == namespace:
                extra = sample.labels.get("reason") or sample.labels.get("phase") or ""
                found[(sample.name, extra)] = sample.value
    return found


def search(cluster: Cluster, name: str, namespace: str = NS) -> dict:
    return cluster.get(f"{NAS.format(ns=namespace)}/{name}")


def trials(cluster: Cluster, name: str, namespace: str = NS) -> list[dict]:
    found = cluster.items(TRIALS.format(ns=namespace), labelSelector=f"kubenas.io/search={name}")
    return sorted(found, key=lambda t: t["spec"]["index"])


def phase(cluster: Cluster, name: str, namespace: str = NS) -> str | None:
    return ((search(cluster, name, namespace) or {}).get("status") or {}).get("phase")


def wait_phase(cluster, name, wanted, *, operator, namespace=NS, timeout=90.0) -> dict:
    wait_for(lambda: phase(cluster, name, namespace) == wanted, timeout=timeout,
             what=f"{namespace}/{name} to be {wanted} (is {phase(cluster, name, namespace)})", operator=operator)
    return search(cluster, name, namespace)


def wait_phase_then_stop(cluster, name, wanted, *, operator, **options) -> dict:
    """wait_phase, then stop the operator (whatever the wait's outcome)."""
    try:
        return wait_phase(cluster, name, wanted, operator=operator, **options)
    finally:
        operator.stop()


def condition(status: dict, kind: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_search_with_the_real_trainer_records_every_child(cluster, operator):
    apply(cluster, search_manifest("digits", namespace=NS, trainer="real"))
    found = wait_phase(cluster, "digits", "Succeeded", operator=operator, timeout=180)
    status = found["status"]
    children = trials(cluster, "digits")
    assert [t["spec"]["index"] for t in children] == [0, 1, 2, 3]
    assert all(t["status"]["phase"] == "Succeeded" for t in children)
    assert all(t["status"]["result"]["dataset"] == "digits" for t in children)
    best = max(children, key=lambda t: t["status"]["reward"])
    assert status["best"]["trial"] == best["metadata"]["name"]
    assert status["best"]["reward"] == pytest.approx(best["status"]["reward"])
    assert status["trials"] == {"created": 4, "running": 0, "succeeded": 4, "failed": 0}
    assert status["progress"] == "4/4"
    assert status["controller"]["policyUpdates"] == 2  # 4 results, a batch of 2
    assert status["observedGeneration"] == found["metadata"]["generation"]
    assert condition(status, "Succeeded")["status"] == "True"
    assert condition(status, "Running")["status"] == "False"
    # The durable policy: owned by the search, at the last update's version.
    policy = cluster.get(f"/api/v1/namespaces/{NS}/configmaps/digits-policy")
    assert policy["metadata"]["ownerReferences"][0]["uid"] == found["metadata"]["uid"]
    assert policy["data"]["policyVersion"] == "2"
    spec = specs.parse_manifest(search_manifest("digits", namespace=NS, trainer="real")).spec
    restored = Search.restore(spec, base64.b64decode(policy["binaryData"]["checkpoint.pt"]))
    assert restored.controller.version == 2
    # Children are Jobs owned by their trials, with the conventions.
    jobs = cluster.items(f"/apis/batch/v1/namespaces/{NS}/jobs", labelSelector="kubenas.io/search=digits")
    assert sorted(j["metadata"]["name"] for j in jobs) == [f"digits-{i}" for i in range(4)]
    pod_spec = jobs[0]["spec"]["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"
    reasons = {e["reason"] for e in cluster.items(f"/api/v1/namespaces/{NS}/events",
                                                 fieldSelector="involvedObject.name=digits")}
    assert {"Started", "PolicyUpdated", "AllTrialsDone"} <= reasons

    # kubectl: printer columns, describe, and raising maxTrials continues a finished search.
    table = cluster.kubectl("get", "nas", "-n", NS).stdout
    assert table.split("\n")[0].split() == ["NAME", "PHASE", "DONE", "RUNNING", "FAILED", "BEST", "REWARD", "AGE"]
    assert "digits" in table and "Succeeded" in table and "4/4" in table
    assert "Index" in cluster.kubectl("get", "nastrials", "-n", NS).stdout.title()
    described = cluster.kubectl("describe", "nas", "digits", "-n", NS).stdout
    assert "AllTrialsDone" in described and "Events:" in described
    cluster.kubectl("patch", "nas", "digits", "-n", NS, "--type=merge", "-p", '{"spec": {"maxTrials": 6}}')
    wait_for(lambda: (search(cluster, "digits")["status"].get("trials") or {}).get("succeeded") == 6
             and phase(cluster, "digits") == "Succeeded", timeout=60,
             what=lambda: f"6 children after raising maxTrials: {search(cluster, 'digits')}",
             operator=operator)
    assert search(cluster, "digits")["status"]["controller"]["policyUpdates"] == 3

    # Deleting the search deletes its trials, jobs, pods and policy through owner references.
    # The garbage collector watches a new CRD's objects from its next discovery sync (every
    # 30 s), so children made before that may wait for it.
    cluster.kubectl("delete", "nas", "digits", "-n", NS, "--timeout=60s")
    wait_for(lambda: not trials(cluster, "digits")
             and not cluster.items(f"/apis/batch/v1/namespaces/{NS}/jobs", labelSelector="kubenas.io/search=digits")
             and not cluster.items(f"/api/v1/namespaces/{NS}/pods", labelSelector="kubenas.io/search=digits")
             and cluster.get(f"/api/v1/namespaces/{NS}/configmaps/digits-policy") is None,
             timeout=120, what=lambda: "the search's children to be garbage-collected; left: " + ", ".join(
                 f"{kind} {o['metadata']['name']} (finalizers {o['metadata'].get('finalizers')})"
                 for kind, path in (("trial", TRIALS.format(ns=NS)), ("job", f"/apis/batch/v1/namespaces/{NS}/jobs"),
                                    ("pod", f"/api/v1/namespaces/{NS}/pods"), ("configmap", f"/api/v1/namespaces/{NS}/configmaps"))
                 for o in cluster.items(path, labelSelector="kubenas.io/search=digits")), operator=operator)


def test_suspend_stops_new_children_and_resume_finishes(cluster, operator):
    apply(cluster, search_manifest("pausing", namespace=NS, env={"FAKE_SECONDS": "1.5"}, maxTrials=6))
    wait_for(lambda: len(trials(cluster, "pausing")) >= 2, timeout=30, what="first children", operator=operator)
    cluster.merge_patch(f"{NAS.format(ns=NS)}/pausing", {"spec": {"suspend": True}})
    found = wait_phase(cluster, "pausing", "Suspended", operator=operator)
    assert condition(found["status"], "Suspended")["status"] == "True"
    # Running children finish and are recorded; no new one is created.
    wait_for(lambda: (search(cluster, "pausing")["status"]["trials"]["running"] == 0), timeout=30,
             what="running children to finish", operator=operator)
    created = len(trials(cluster, "pausing"))
    assert created < 6
    # Held over time, not once: across status writes and the driver's idle wake-ups (5 s).
    counts = []
    for _ in range(14):
        counts.append(len(trials(cluster, "pausing")))
        time.sleep(0.5)
    assert counts == [created] * len(counts) and phase(cluster, "pausing") == "Suspended"
    assert all(t["status"]["phase"] == "Succeeded" for t in trials(cluster, "pausing"))
    cluster.merge_patch(f"{NAS.format(ns=NS)}/pausing", {"spec": {"suspend": False}})
    wait_phase(cluster, "pausing", "Succeeded", operator=operator, timeout=60)
    assert len(trials(cluster, "pausing")) == 6


@pytest.mark.parametrize("mode, reason", [("exit1", "Error"), ("noresult", "MissingResult"),
                                          ("failodd", "InvalidArchitecture"), ("huge", "MalformedResult"),
                                          ("truncated", "MalformedResult")])
def test_failing_children_are_recorded_and_the_search_goes_on(cluster, operator, mode, reason):
    name = f"failing-{mode}"
    apply(cluster, search_manifest(name, namespace=NS, env={"FAKE_MODE": mode}))
    found = wait_phase(cluster, name, "Succeeded", operator=operator)
    children = trials(cluster, name)
    failed = [t for t in children if t["status"]["phase"] == "Failed"]
    assert failed and all(t["status"]["reason"] == reason for t in failed)
    assert found["status"]["trials"]["failed"] == len(failed)
    if mode == "exit1":
        assert failed[0]["status"]["exitCode"] == 1
    # The metrics say the same as the NASTrials.
    wait_for(lambda: scrape(operator, name).get(("kubenas_search_phase", "Succeeded")) == 1, timeout=10,
             what=lambda: f"the search's phase metric: {scrape(operator, name)}", operator=operator)
    seen = scrape(operator, name)
    assert seen[("kubenas_children_created_total", "")] == len(children) == 4
    assert seen[("kubenas_children_failed_total", reason)] == len(failed)
    assert seen[("kubenas_children_succeeded_total", "")] == len(children) - len(failed)
    assert seen.get(("kubenas_child_reward_count", ""), 0) == len(children) - len(failed)
    assert seen[("kubenas_child_duration_seconds_count", "")] == len(children)
    assert seen[("kubenas_child_result_delay_seconds_count", "")] == len(children)
    assert seen[("kubenas_children", "Succeeded")] == len(children) - len(failed)
    assert seen[("kubenas_children_running", "")] == 0
    assert seen[("kubenas_policy_updates_total", "")] == found["status"]["controller"]["policyUpdates"]
    events = cluster.items(f"/api/v1/namespaces/{NS}/events", fieldSelector=f"involvedObject.name={failed[0]['metadata']['name']}")
    assert any(e["reason"] == reason and e["type"] == "Warning" for e in events)


def test_max_failed_trials_fails_the_search(cluster, operator):
    apply(cluster, search_manifest("doomed", namespace=NS, env={"FAKE_MODE": "exit1"}, maxTrials=8,
                                   maxFailedTrials=1))
    found = wait_phase(cluster, "doomed", "Failed", operator=operator)
    failed = condition(found["status"], "Failed")
    assert failed["status"] == "True" and failed["reason"] == "MaxFailedTrialsReached"
    assert "maxFailedTrials=1" in failed["message"]
    wait_for(lambda: search(cluster, "doomed")["status"]["trials"]["running"] == 0, timeout=30,
             what="children in flight to be recorded", operator=operator)
    assert len(trials(cluster, "doomed")) < 8
    seen = scrape(operator, "doomed")
    assert seen[("kubenas_search_phase", "Failed")] == 1 and seen[("kubenas_search_phase", "Running")] == 0
    assert seen[("kubenas_children_failed_total", "Error")] == len(trials(cluster, "doomed"))


def test_a_spec_violating_the_schema_is_rejected_naming_the_field(cluster):
    document = search_manifest("bad", namespace=NS, controller={"batchSize": 0})
    done = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(document), check=False)
    assert done.returncode != 0
    assert "spec.controller.batchSize" in done.stderr
    assert search(cluster, "bad") is None


def test_what_the_schema_cannot_say_fails_with_a_condition(cluster, operator):
    # A CEL rule of the CRD: the real API server refuses this at apply time.
    document = search_manifest("impossible", namespace=NS)
    document["spec"]["searchSpace"]["macroCNN"]["depth"].update(initialLayers=4, maxLayers=2)
    refused = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(document), check=False)
    assert refused.returncode != 0 and "maxLayers is below initialLayers" in refused.stderr
    # A per-item rule the schema does not carry (filter sizes must be odd): the operator's.
    document = search_manifest("impossible", namespace=NS)
    document["spec"]["searchSpace"]["macroCNN"]["filterHeights"] = [2, 3]
    apply(cluster, document)
    found = wait_phase(cluster, "impossible", "Failed", operator=operator, timeout=30)
    failed = condition(found["status"], "Failed")
    assert failed["reason"] == "InvalidSpec" and "filterHeights" in failed["message"], failed
    assert not trials(cluster, "impossible")


def test_children_never_run_as_the_operators_service_account(cluster, operator):
    """The operator here runs as its ServiceAccount in NS; a template naming that account
    (a way to its RBAC rights) is refused, and children otherwise get no API token."""
    document = search_manifest("deputy", namespace=NS)
    document["spec"]["trial"]["template"]["spec"]["serviceAccountName"] = OPERATOR_ACCOUNT
    apply(cluster, document)
    found = wait_phase(cluster, "deputy", "Failed", operator=operator, timeout=30)
    assert found["status"]["reason"] == "InvalidSpec"
    assert "operator's own service account" in found["status"]["message"]
    assert not trials(cluster, "deputy")
    assert not cluster.items(f"/apis/batch/v1/namespaces/{NS}/jobs", labelSelector="kubenas.io/search=deputy")


def test_a_child_past_its_memory_limit_fails_oom_killed(cluster, operator):
    from kubenas.localcluster.sandbox import MemoryCgroup

    probe = MemoryCgroup.create(f"kubenas-probe-{os.getpid()}", 64 * 2**20)
    if probe is None:
        pytest.skip("this machine offers the kubelet no writable memory cgroup: memory limits are not enforced")
    probe.remove()
    document = search_manifest("hungry", namespace=NS, env={"FAKE_MODE": "oom"}, maxTrials=1, parallelism=1)
    document["spec"]["trial"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"memory": "128Mi"}}
    apply(cluster, document)
    wait_phase(cluster, "hungry", "Succeeded", operator=operator, timeout=60)
    child = trials(cluster, "hungry")[0]
    assert child["status"]["phase"] == "Failed" and child["status"]["reason"] == "OOMKilled", child["status"]
    assert child["status"]["exitCode"] == 137


def test_an_unschedulable_child_waits_and_the_search_says_so(cluster, operator):
    """A child asking for more GPUs than any node has: Pending, reason Unschedulable, in
    its NASTrial; after spec.trial.unschedulableAfterSeconds the search's condition
    ChildrenUnschedulable and a Warning Event. It is not failed."""
    document = search_manifest("greedy", namespace=NS, maxTrials=1, parallelism=1)
    document["spec"]["trial"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"cpu": "1", "nvidia.com/gpu": "64"}}
    document["spec"]["trial"]["unschedulableAfterSeconds"] = 3
    apply(cluster, document)
    wait_for(lambda: ((trials(cluster, "greedy") or [{}])[0].get("status") or {}).get("reason") == "Unschedulable",
             timeout=60, what="the child's Unschedulable reason", operator=operator)
    child = trials(cluster, "greedy")[0]["status"]
    assert child["phase"] == "Pending" and "nvidia.com/gpu" in child["message"], child

    def stuck():
        conditions = (search(cluster, "greedy").get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "ChildrenUnschedulable" and c["status"] == "True"), None)

    found = wait_for(stuck, timeout=30, what="the search's ChildrenUnschedulable condition", operator=operator)
    assert "greedy-0 has waited" in found["message"] and "nvidia.com/gpu" in found["message"]
    assert phase(cluster, "greedy") == "Running"  # still waiting, not failed
    events = cluster.items(f"/api/v1/namespaces/{NS}/events", fieldSelector="involvedObject.name=greedy")
    assert any(e["reason"] == "ChildrenUnschedulable" and e["type"] == "Warning" for e in events)
    cluster.kubectl("delete", "nas", "greedy", "-n", NS, "--wait=false")


def test_a_template_that_pod_security_refuses_fails_the_search_quoting_it(cluster, operator):
    """The namespace enforces Pod Security "restricted"; a privileged trainer's pod is
    refused at creation. The search must not hang: it fails, quoting the admission."""
    document = search_manifest("privileged", namespace=NS, maxTrials=2, parallelism=1)
    document["spec"]["trial"]["template"]["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    apply(cluster, document)
    found = wait_phase(cluster, "privileged", "Failed", operator=operator, timeout=60)
    assert found["status"]["reason"] == "PodSecurity"
    assert "violates PodSecurity" in found["status"]["message"] and "privileged" in found["status"]["message"]
    cluster.kubectl("delete", "nas", "privileged", "-n", NS, "--wait=false")


def test_a_child_over_quota_waits_pending_and_runs_when_quota_frees(cluster, tmp_path: Path):
    """The child waits longer than its deadline for quota: its deadline is its pod's, so
    the wait spends none of it, and it succeeds once quota frees."""
    namespace = cluster.namespace("quota")
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "pods", "namespace": namespace},
             "spec": {"hard": {"pods": "0"}}}
    apply(cluster, quota)
    operator = OperatorProcess(cluster=cluster, namespace=namespace, log=tmp_path / "operator.log").start()
    try:
        document = search_manifest("queued", namespace=namespace, maxTrials=2, parallelism=1,
                                   env={"FAKE_SECONDS": "1"})
        document["spec"]["trial"]["activeDeadlineSeconds"] = DEADLINE = 6
        apply(cluster, document)
        created = time.monotonic()
        wait_for(lambda: ((trials(cluster, "queued", namespace) or [{}])[0].get("status") or {}).get("reason")
                 == "QuotaExceeded", timeout=60, what="the child's QuotaExceeded reason", operator=operator)
        child = trials(cluster, "queued", namespace)[0]["status"]
        assert child["phase"] == "Pending" and "exceeded quota" in child["message"], child
        time.sleep(3)
        assert phase(cluster, "queued", namespace) == "Running"  # waiting, not failed
        assert len(trials(cluster, "queued", namespace)) == 1
        wait_for(lambda: time.monotonic() - created > DEADLINE + 2, timeout=30, what="the deadline to pass")
        quota["spec"]["hard"]["pods"] = "10"
        apply(cluster, quota)
        found = wait_phase(cluster, "queued", "Succeeded", operator=operator, namespace=namespace, timeout=120)
        assert found["status"]["trials"]["failed"] == 0, [t["status"] for t in trials(cluster, "queued", namespace)]
    finally:
        operator.stop()


def _architectures(cluster, name, namespace) -> list:
    return [t["spec"]["architecture"] for t in trials(cluster, name, namespace)]


EXACT = dict(maxTrials=10, parallelism=1, env={"FAKE_SECONDS": "0.3"})


@pytest.fixture(scope="module")
def straight(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference: search `exact` (EXACT) run straight through in namespace "straight".
    With one child at a time and deterministic results, its children are a function of
    the seed."""
    log = tmp_path_factory.mktemp("straight") / "operator.log"
    operator = OperatorProcess(cluster=cluster, namespace="straight", log=log).start()
    try:
        apply(cluster, search_manifest("exact", namespace="straight", **EXACT))
        wait_phase(cluster, "exact", "Succeeded", operator=operator, namespace="straight", timeout=120)
    finally:
        operator.stop()
    return {"architectures": _architectures(cluster, "exact", "straight"),
            "status": search(cluster, "exact", "straight")["status"]}


def _assert_exactly_the_straight_run(cluster: Cluster, namespace: str, found: dict, straight: dict) -> None:
    children = trials(cluster, "exact", namespace)
    assert [t["spec"]["index"] for t in children] == list(range(10))
    assert _architectures(cluster, "exact", namespace) == straight["architectures"]
    jobs = cluster.items(f"/apis/batch/v1/namespaces/{namespace}/jobs", labelSelector="kubenas.io/search=exact")
    assert len(jobs) == 10
    pods = cluster.items(f"/api/v1/namespaces/{namespace}/pods", labelSelector="kubenas.io/search=exact")
    assert len(pods) == 10  # no child ran twice
    assert found["status"]["trials"] == {"created": 10, "running": 0, "succeeded": 10, "failed": 0}
    assert found["status"]["controller"]["policyUpdates"] == 5
    assert found["status"]["best"] == straight["status"]["best"]
    policy = cluster.get(f"/api/v1/namespaces/{namespace}/configmaps/exact-policy")
    spec = specs.parse_manifest(search_manifest("exact", namespace=namespace, **EXACT)).spec
    restored = Search.restore(spec, base64.b64decode(policy["binaryData"]["checkpoint.pt"]))
    assert restored.controller.version == 5 and restored.counters.succeeded == 10


@pytest.mark.parametrize("name", failpoints.NAMES)
def test_a_crash_at_each_failpoint_changes_nothing(cluster, straight, tmp_path: Path, name: str):
    """The operator dies (os._exit, like SIGKILL) at a named risky place, the third time
    it passes it; restarted, it produces exactly the children of the uninterrupted run."""
    namespace = f"fp-{name}"
    cluster.namespace(namespace)
    log = tmp_path / "operator.log"
    doomed = OperatorProcess(cluster=cluster, namespace=namespace, log=log,
                             env={"KUBENAS_FAILPOINTS": f"{name}@3"}).start()
    apply(cluster, search_manifest("exact", namespace=namespace, **EXACT))
    wait_for(lambda: doomed.process.poll() is not None, timeout=90, what=f"the failpoint {name}", operator=doomed)
    assert doomed.process.returncode == failpoints.EXIT_CODE, doomed.tail()
    assert f"failpoint {name}" in log.read_text()
    operator = OperatorProcess(cluster=cluster, namespace=namespace, log=log, kubeconfig=doomed.kubeconfig).start()
    found = wait_phase_then_stop(cluster, "exact", "Succeeded", operator=operator, namespace=namespace, timeout=120)
    _assert_exactly_the_straight_run(cluster, namespace, found, straight)


def test_a_trial_that_does_not_match_the_replay_fails_the_search(cluster, tmp_path: Path):
    """A NASTrial made after the checkpoint whose architecture the restored controller
    does not sample (changed by hand here) is not adopted: ReplayMismatch, no new child."""
    namespace = cluster.namespace("replay")
    log = tmp_path / "operator.log"
    # The third NASTrial (index 2) is created after the checkpoint of the first update (m = 2).
    doomed = OperatorProcess(cluster=cluster, namespace=namespace, log=log,
                             env={"KUBENAS_FAILPOINTS": "after-trial-created@3"}).start()
    apply(cluster, search_manifest("exact", namespace=namespace, **EXACT))
    wait_for(lambda: doomed.process.poll() is not None, timeout=90, what="the failpoint", operator=doomed)
    path = f"{TRIALS.format(ns=namespace)}/exact-2"
    tampered = cluster.get(path)["spec"]["architecture"]
    tampered["layers"][0]["filterHeight"] = 3 if tampered["layers"][0]["filterHeight"] == 1 else 1
    cluster.merge_patch(path, {"spec": {"architecture": tampered}})
    operator = OperatorProcess(cluster=cluster, namespace=namespace, log=log, kubeconfig=doomed.kubeconfig).start()
    found = wait_phase_then_stop(cluster, "exact", "Failed", operator=operator, namespace=namespace, timeout=60)
    assert found["status"]["reason"] == "ReplayMismatch"
    assert "exact-2 does not match" in found["status"]["message"]
    assert len(trials(cluster, "exact", namespace)) == 3


def test_a_spec_changed_while_the_operator_was_down_fails_with_checkpoint_mismatch(cluster, tmp_path: Path):
    """The running operator refuses such a change (SpecRejected); made while it is down,
    the restarted operator finds a checkpoint of another search and says so."""
    namespace = cluster.namespace("mismatch")
    log = tmp_path / "operator.log"
    operator = OperatorProcess(cluster=cluster, namespace=namespace, log=log).start()
    apply(cluster, search_manifest("exact", namespace=namespace, **EXACT))
    wait_for(lambda: len(trials(cluster, "exact", namespace)) >= 3, timeout=60, what="3 children", operator=operator)
    operator.kill()
    cluster.merge_patch(f"{NAS.format(ns=namespace)}/exact", {"spec": {"reward": {"power": 1.0}}})
    operator.start()
    found = wait_phase_then_stop(cluster, "exact", "Failed", operator=operator, namespace=namespace, timeout=60)
    assert found["status"]["reason"] == "CheckpointMismatch"
    assert "another search space, controller, reward or seed" in found["status"]["message"]


def test_operator_killed_mid_search_continues_exactly(cluster, straight, tmp_path: Path):
    """A search whose operator is SIGKILLed twice samples exactly the children of one
    that ran straight through, each once."""
    spec = EXACT
    operator = OperatorProcess(cluster=cluster, namespace="restart", log=tmp_path / "restart.log").start()
    apply(cluster, search_manifest("exact", namespace="restart", **spec))
    for kill_after in (3, 7):
        wait_for(lambda: len(trials(cluster, "exact", "restart")) >= kill_after, timeout=60,
                 what=f"{kill_after} children", operator=operator)
        operator.kill()
        operator.start()
    found = wait_phase_then_stop(cluster, "exact", "Succeeded", operator=operator, namespace="restart", timeout=120)
    _assert_exactly_the_straight_run(cluster, "restart", found, straight)


def test_real_children_running_while_the_operator_is_down_are_collected(cluster, tmp_path: Path):
    """SIGKILL the operator while real trainers run: the Jobs finish without it, and
    the restarted operator records them; nothing runs twice, nothing is missing."""
    namespace = "restart"
    operator = OperatorProcess(cluster=cluster, namespace=namespace, log=tmp_path / "operator.log").start()
    apply(cluster, search_manifest("real-restart", namespace=namespace, trainer="real", maxTrials=6))
    pods = f"/api/v1/namespaces/{namespace}/pods"
    wait_for(lambda: any(p["status"].get("phase") == "Running"
                         for p in cluster.items(pods, labelSelector="kubenas.io/search=real-restart")),
             timeout=60, what="a running child", operator=operator)
    operator.kill()
    wait_for(lambda: any(p["status"].get("phase") == "Succeeded"
                         for p in cluster.items(pods, labelSelector="kubenas.io/search=real-restart")),
             timeout=60, what="a child to finish while the operator is down")
    operator.start()
    found = wait_phase_then_stop(cluster, "real-restart", "Succeeded", operator=operator, namespace=namespace, timeout=120)
    children = trials(cluster, "real-restart", namespace)
    assert [t["spec"]["index"] for t in children] == list(range(6))
    assert all(t["status"]["phase"] == "Succeeded" for t in children)
    assert len(cluster.items(pods, labelSelector="kubenas.io/search=real-restart")) == 6
    assert found["status"]["controller"]["policyUpdates"] == 3
    reasons = [e["reason"] for e in cluster.items(f"/api/v1/namespaces/{namespace}/events",
                                                  fieldSelector="involvedObject.name=real-restart")]
    assert "Resumed" in reasons


def test_kubectl_against_kubenas_dev_cluster(tmp_path: Path):
    """The `kubenas dev-cluster` command, as a person runs it, with kubectl."""

    kubeconfig = tmp_path / "kubeconfig"
    server = subprocess.Popen([sys.executable, "-m", "kubenas.cli", "dev-cluster", "--kubeconfig", str(kubeconfig),
                               "--workdir", str(tmp_path / "nodes")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not kubeconfig.exists() and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.1)
        assert kubeconfig.exists(), "dev-cluster wrote no kubeconfig"

        def kubectl(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
            return subprocess.run([tool("kubectl"), "--kubeconfig", str(kubeconfig), *args], capture_output=True,
                                  text=True, timeout=60, input=input)

        assert kubectl("apply", "-f", str(CRDS)).returncode == 0
        assert kubectl("wait", "--for=condition=Established", "crd/neuralarchitecturesearches.kubenas.io").returncode == 0
        document = search_manifest("by-hand", namespace="default")
        created = kubectl("apply", "-f", "-", input=yaml.safe_dump(document))
        assert created.returncode == 0 and "created" in created.stdout, created.stderr
        listed = kubectl("get", "nas")
        assert listed.stdout.split("\n")[0].split() == ["NAME", "PHASE", "DONE", "RUNNING", "FAILED", "BEST",
                                                        "REWARD", "AGE"]
        assert "by-hand" in listed.stdout
        described = kubectl("describe", "nas", "by-hand")
        assert "Max Trials:" in described.stdout and "Name:         by-hand" in described.stdout
        explained = kubectl("explain", "nas.spec.controller.batchSize")
        assert "policy update" in explained.stdout.lower() or "children per" in explained.stdout.lower()
        deleted = kubectl("delete", "nas", "by-hand", "--timeout=30s")
        assert deleted.returncode == 0 and "deleted" in deleted.stdout
        assert "NotFound" in kubectl("get", "nas", "by-hand").stderr
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert "kubectl" in output  # it told the person how to use it


def test_fixing_an_invalid_spec_retries_it(cluster, operator):
    document = search_manifest("fixable", namespace=NS)
    document["spec"]["searchSpace"]["macroCNN"]["filterHeights"] = [1, 2]  # even sizes: pydantic, not the schema
    apply(cluster, document)
    failed = condition(wait_phase(cluster, "fixable", "Failed", operator=operator)["status"], "Failed")
    assert failed["reason"] == "InvalidSpec" and "filterHeights" in failed["message"]
    cluster.merge_patch(f"{NAS.format(ns=NS)}/fixable", {"spec": {"searchSpace": {"macroCNN": {"filterHeights": [1, 3]}}}})
    found = wait_phase(cluster, "fixable", "Succeeded", operator=operator)
    assert found["status"]["trials"]["succeeded"] == 4
    assert condition(found["status"], "Failed")["status"] == "False"


def test_fixed_fields_cannot_change_but_the_rest_is_taken(cluster, operator):
    apply(cluster, search_manifest("steady", namespace=NS, suspend=True))
    wait_phase(cluster, "steady", "Suspended", operator=operator)
    cluster.merge_patch(f"{NAS.format(ns=NS)}/steady",
                        {"spec": {"controller": {"lstmSize": 64}, "maxTrials": 2, "suspend": False}})
    found = wait_phase(cluster, "steady", "Succeeded", operator=operator)
    assert found["status"]["trials"]["created"] == 2  # maxTrials and suspend were taken
    events = cluster.items(f"/api/v1/namespaces/{NS}/events", fieldSelector="involvedObject.name=steady")
    rejected = [e for e in events if e["reason"] == "SpecRejected"]
    assert rejected and rejected[0]["type"] == "Warning" and "controller" in rejected[0]["message"]


def test_raising_max_failed_trials_continues_a_failed_search(cluster, operator):
    apply(cluster, search_manifest("second-chance", namespace=NS, env={"FAKE_MODE": "failodd"}, maxFailedTrials=0))
    wait_phase(cluster, "second-chance", "Failed", operator=operator)
    cluster.merge_patch(f"{NAS.format(ns=NS)}/second-chance", {"spec": {"maxFailedTrials": 10}})
    found = wait_phase(cluster, "second-chance", "Succeeded", operator=operator)
    assert found["status"]["trials"]["created"] == 4
    reasons = {e["reason"] for e in cluster.items(f"/api/v1/namespaces/{NS}/events",
                                                  fieldSelector="involvedObject.name=second-chance")}
    assert {"MaxFailedTrialsReached", "Continued", "AllTrialsDone"} <= reasons


def test_a_deleted_job_fails_its_child_and_the_search_goes_on(cluster, operator):
    apply(cluster, search_manifest("interrupted", namespace=NS, env={"FAKE_SECONDS": "30"}, maxTrials=1,
                                   parallelism=1))
    wait_for(lambda: cluster.get(f"/apis/batch/v1/namespaces/{NS}/jobs/interrupted-0"), timeout=30,
             what="the child's Job", operator=operator)
    cluster.kubectl("delete", "job", "interrupted-0", "-n", NS, "--wait=false")
    found = wait_phase(cluster, "interrupted", "Succeeded", operator=operator)
    child = trials(cluster, "interrupted")[0]
    assert child["status"]["phase"] == "Failed" and child["status"]["reason"] == "JobDeleted"
    assert found["status"]["trials"]["failed"] == 1


def test_tabular_children_need_no_jobs(cluster, operator, tables: Path):
    import itertools

    from kubenas_trainer.architecture import NB201_OPERATIONS, cell_string

    table = tables / "table.csv"
    rows = ["cellstr,cifar10-val"] + [
        f"{cell_string(edges)},{50 + 10 * edges.count('nor_conv_3x3'):.1f}"
        for edges in itertools.product(NB201_OPERATIONS, repeat=6)]
    table.write_text("\n".join(rows) + "\n")
    document = search_manifest("table", namespace=NS, maxTrials=40, parallelism=8)
    document["spec"]["searchSpace"] = {"type": "NB201Cell"}
    document["spec"]["trial"] = {"kind": "Tabular", "tabular": {"path": "table.csv"}}  # relative to --tabular-dir
    apply(cluster, document)
    found = wait_phase(cluster, "table", "Succeeded", operator=operator)
    assert found["status"]["trials"]["succeeded"] == 40
    assert found["status"]["controller"]["policyUpdates"] == 20
    assert not cluster.items(f"/apis/batch/v1/namespaces/{NS}/jobs", labelSelector="kubenas.io/search=table")
    best = max(trials(cluster, "table"), key=lambda t: t["status"]["reward"])
    assert found["status"]["best"]["index"] == best["spec"]["index"]


SECRET = "SECRET-TOKEN-abc123xyz"


def test_a_search_cannot_make_the_operator_read_files_for_it(cluster, operator, tables: Path, tmp_path: Path):
    """The confused deputy: a Tabular path naming the operator's token (here a stand-in
    holding one line), /etc/passwd, a `..` way out of --tabular-dir and a symlink out of
    it. Each search fails InvalidSpec, and no status, Event or log line quotes the file."""
    token = tmp_path / "fake-token"
    token.write_text(SECRET + "\n")
    (tables / "escape.csv").symlink_to(token)
    attempts = {"steal-token": str(token), "steal-passwd": "/etc/passwd",
                "steal-dotdot": "../" * len(tables.parts) + str(token.relative_to(token.anchor)),
                "steal-symlink": "escape.csv"}
    for name, path in attempts.items():
        document = search_manifest(name, namespace=NS, maxTrials=4)
        document["spec"]["searchSpace"] = {"type": "NB201Cell"}
        document["spec"]["trial"] = {"kind": "Tabular", "tabular": {"path": path}}
        apply(cluster, document)
    for name in attempts:
        found = wait_phase(cluster, name, "Failed", operator=operator)
        assert found["status"]["reason"] == "InvalidSpec", found["status"]
        assert "outside the operator's table directory" in found["status"]["message"], found["status"]["message"]
        assert not trials(cluster, name)
        shown = cluster.kubectl("get", "nas", name, "-n", NS, "-o", "yaml").stdout
        events = cluster.kubectl("get", "events", "-n", NS, "--field-selector", f"involvedObject.name={name}",
                                 "-o", "yaml").stdout
        for text in (shown, events):
            assert SECRET not in text and "root:x:0:0" not in text
    assert SECRET not in operator.log.read_text() and "root:x:0:0" not in operator.log.read_text()
    for name in attempts:
        cluster.kubectl("delete", "nas", name, "-n", NS, "--wait=false")


def test_a_child_past_its_deadline_fails_with_deadline_exceeded(cluster, operator):
    document = search_manifest("slow", namespace=NS, env={"FAKE_SECONDS": "30"}, maxTrials=1, parallelism=1)
    document["spec"]["trial"]["activeDeadlineSeconds"] = 1
    apply(cluster, document)
    found = wait_phase(cluster, "slow", "Succeeded", operator=operator, timeout=30)
    child = trials(cluster, "slow")[0]
    assert child["status"]["phase"] == "Failed" and child["status"]["reason"] == "DeadlineExceeded"
    assert "activeDeadlineSeconds=1" in child["status"]["message"]
    assert found["status"]["trials"]["failed"] == 1


@pytest.fixture(scope="module")
def operator_calls(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> set[tuple[str, str, str]]:
    """(verb, group, resource) of every call the operator's ServiceAccount made — kopf's
    and kubenas' own client's — in a search that runs, is interrupted by a killed operator
    and resumes, read from the API server's audit log. Each call was judged by the real
    RBAC authorizer: a missing permission is a 403 (also asserted here)."""
    namespace = cluster.namespace("rbac")
    log = tmp_path_factory.mktemp("rbac") / "operator.log"
    operator = OperatorProcess(cluster=cluster, namespace=namespace, log=log).start()
    apply(cluster, search_manifest("audited", namespace=namespace, env={"FAKE_MODE": "failodd", "FAKE_SECONDS": "1"},
                                   maxTrials=6))
    wait_for(lambda: len(trials(cluster, "audited", namespace)) >= 2, timeout=30, what="first children",
             operator=operator)
    operator.kill()
    operator = OperatorProcess(cluster=cluster, namespace=namespace, log=log, kubeconfig=operator.kubeconfig).start()
    wait_phase(cluster, "audited", "Succeeded", operator=operator, namespace=namespace)
    operator.stop()
    user = f"system:serviceaccount:{namespace}:{OPERATOR_ACCOUNT}"
    events = [e for e in cluster.audit_events() if e["user"]["username"] == user and "objectRef" in e]
    denied = [(e["verb"], e["requestURI"]) for e in events if e.get("responseStatus", {}).get("code") == 403]
    assert denied == [], f"the API server refused the operator: {denied}"
    calls = set()
    for event in events:
        ref = event["objectRef"]
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        calls.add((event["verb"], ref.get("apiGroup", ""), resource))
    return calls


@pytest.mark.parametrize("overlay, kind", [("manifests", "Role"), ("manifests/cluster-wide", "ClusterRole")])
def test_the_operator_calls_only_what_its_rbac_role_grants(operator_calls, overlay, kind):
    """Every call the operator made is granted by the shipped Role (and ClusterRole), and
    nothing granted goes unused: least privilege that is also enough."""
    roles = [d for d in kustomize(Path(__file__).parent.parent / overlay) if d["kind"] == kind]
    assert len(roles) == 1, f"{overlay} should hold one {kind}"
    granted = {(verb, group, resource) for rule in roles[0]["rules"] for verb in rule["verbs"]
               for group in rule["apiGroups"] for resource in rule["resources"]}
    assert {("create", "batch", "jobs"), ("patch", "kubenas.io", "nastrials/status"),
            ("watch", "kubenas.io", "neuralarchitecturesearches")} <= operator_calls  # the log saw them
    assert operator_calls - granted == set(), f"the operator needs more than its {kind} grants"
    rarely = {("get", "kubenas.io", "nastrials"),  # a create meeting a NASTrial made before a restart (409)
              ("list", "", "events"),  # a Job that cannot create its pod (quota, Pod Security)
              ("list", "kueue.x-k8s.io", "workloads")}  # children queued by Kueue
    if kind == "ClusterRole":  # kopf's scanning of new CRDs and namespaces: cluster-wide operators only
        rarely |= {(verb, group, resource) for verb in ("list", "watch")
                   for group, resource in (("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces"))}
    assert granted - operator_calls - rarely == set(), f"the {kind} grants what the operator never calls"
