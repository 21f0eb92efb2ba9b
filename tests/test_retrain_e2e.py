"""spec.retrain on real Kubernetes (kubenas.localcluster): the phase passes through
Retraining, each of the topK best children is retrained by one Job created once (an
operator killed mid-retraining adopts the Jobs it made), status.retrain is filled in
rank order, and a failing retraining is a named failure that does not fail the search."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.cluster_harness import NAS, Cluster, OperatorProcess, apply, search_manifest, wait_for

NS = "retrain"


@pytest.fixture(scope="module")
def cluster(shared_cluster: Cluster) -> Cluster:
    shared_cluster.namespace(NS)
    return shared_cluster


def retrain_manifest(name: str, *, retrain: dict) -> dict:
    """The harness's small fake-trainer search, its pods mounting an emptyDir at /models."""
    document = search_manifest(name, namespace=NS, maxTrials=4, retrain=retrain)
    pod = document["spec"]["trial"]["template"]["spec"]
    pod["volumes"] = [{"name": "models", "emptyDir": {}}]
    pod["containers"][0]["volumeMounts"] = [{"name": "models", "mountPath": "/models"}]
    return document


def status_of(cluster: Cluster, name: str) -> dict:
    return (cluster.get(f"{NAS.format(ns=NS)}/{name}") or {}).get("status") or {}


def retrain_jobs(cluster: Cluster, name: str) -> list[dict]:
    jobs = cluster.items(f"/apis/batch/v1/namespaces/{NS}/jobs",
                         labelSelector=f"kubenas.io/search={name},app.kubernetes.io/component=retrain")
    return sorted(jobs, key=lambda job: job["metadata"]["name"])


def job_creates(cluster: Cluster, prefix: str) -> list[tuple[str, int]]:
    """Every request to create a Job named `prefix...`, answered or refused (409 included)."""
    return sorted((event["objectRef"]["name"], event["responseStatus"]["code"]) for event in cluster.audit_events()
                  if event["verb"] == "create" and event.get("objectRef", {}).get("resource") == "jobs"
                  and event["objectRef"].get("namespace") == NS and event["stage"] == "ResponseComplete"
                  and (event["objectRef"].get("name") or "").startswith(prefix))


def test_the_api_server_refuses_retraining_a_table_search(cluster: Cluster):
    document = search_manifest("table-retrain", namespace=NS, retrain={"topK": 2})
    document["spec"].update(searchSpace={"type": "NB201Cell"}, trial={"kind": "Tabular", "tabular": {}})
    refused = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(document), check=False)
    assert refused.returncode != 0 and "retrain needs trial.kind Job" in refused.stderr
    del document["spec"]["retrain"]
    cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(document))  # the rest is fine


def test_retraining_the_best_children_survives_an_operator_kill(cluster: Cluster, tmp_path: Path):
    operator = OperatorProcess(cluster=cluster, namespace=NS, log=tmp_path / "operator.log").start()
    try:
        # Retrained children take 4 s (FAKE_SECONDS): long enough to see Retraining and to kill the operator.
        apply(cluster, retrain_manifest("best", retrain={
            "topK": 2, "modelDir": "/models",
            "template": {"args": ["--epochs", "300"], "env": [{"name": "FAKE_SECONDS", "value": "4"}]}}))
        apply(cluster, retrain_manifest("broken", retrain={
            "topK": 1, "template": {"env": [{"name": "FAKE_MODE", "value": "fail"}]}}))
        wait_for(lambda: status_of(cluster, "best").get("phase") == "Retraining" and len(retrain_jobs(cluster, "best")) == 2,
                 timeout=60, what=lambda: f"best to be Retraining with 2 Jobs: {status_of(cluster, 'best')}",
                 operator=operator)
        found = status_of(cluster, "best")
        assert found["trials"]["succeeded"] == 4
        running = {c["type"]: (c["status"], c["reason"]) for c in found["conditions"]}
        assert running["Running"] == ("True", "RetrainingBest")
        operator.kill()  # SIGKILL mid-retraining; its successor must adopt the Jobs, not make new ones
        operator = OperatorProcess(cluster=cluster, namespace=NS, log=tmp_path / "operator.log").start()
        for name in ("best", "broken"):
            wait_for(lambda: status_of(cluster, name).get("phase") == "Succeeded", timeout=60,
                     what=lambda: f"{name} to succeed: {status_of(cluster, name)}", operator=operator)
    finally:
        operator.stop()

    status = status_of(cluster, "best")
    top = status["top"]
    entries = status["retrain"]
    assert [(e["rank"], e["index"], e["trial"]) for e in entries] == [
        (1, top[0]["index"], top[0]["trial"]), (2, top[1]["index"], top[1]["trial"])]
    for entry in entries:
        assert entry["phase"] == "Succeeded" and entry["reason"] == "Succeeded"
        assert entry["job"] == f"best-retrain-{entry['rank']}"
        assert entry["modelPath"] == f"/models/best-retrain-{entry['rank']}.pt"  # written: else ModelNotSaved
        assert entry["testAccuracy"] == pytest.approx(entry["validationAccuracy"] - 0.01, abs=1e-5)  # the fake's
        assert entry["reward"] == pytest.approx(next(t["reward"] for t in top if t["index"] == entry["index"]))
    assert "test accuracy" in status["message"] and status["reason"] == "AllTrialsDone"
    # One Job per retrained child, asked for once although the operator died among them (its
    # successor found them: not even a refused second create).
    assert job_creates(cluster, "best-retrain-") == [("best-retrain-1", 201), ("best-retrain-2", 201)]
    jobs = retrain_jobs(cluster, "best")
    search_uid = cluster.get(f"{NAS.format(ns=NS)}/best")["metadata"]["uid"]
    for job, entry in zip(jobs, entries):
        assert job["metadata"]["ownerReferences"][0]["uid"] == search_uid
        assert job["metadata"]["annotations"]["kubenas.io/retrain-index"] == str(entry["index"])
        trainer = job["spec"]["template"]["spec"]["containers"][0]
        assert trainer["args"][-2:] == ["--epochs", "300"]
        assert {"name": "KUBENAS_EVALUATE_TEST", "value": "1"} in trainer["env"]
    reasons = [e["reason"] for e in cluster.items(f"/api/v1/namespaces/{NS}/events",
                                                  fieldSelector="involvedObject.name=best")]
    assert reasons.count("Retraining") == 1 and "AllTrialsDone" in reasons  # phase Retraining entered once
    # A retraining that fails is recorded with its reason; the search still ends well.
    broken = status_of(cluster, "broken")
    assert [(e["rank"], e["phase"], e["reason"], e.get("testAccuracy")) for e in broken["retrain"]] == [
        (1, "Failed", "InvalidArchitecture", None)]
    assert broken["phase"] == "Succeeded" and broken["trials"]["succeeded"] == 4
