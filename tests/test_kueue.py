"""Kueue admission without a cluster: which queue a search's children go to, the Job
that gets (suspended, labelled), how a waiting Job reads (Queued), what the driver writes
to the child's NASTrial and the search's counters, and the pins `make tools` builds."""

from __future__ import annotations

import asyncio
import re

import pytest

from kubenas import spec as specs
from kubenas.localcluster import binaries
from kubenas.operator import children, queueing
from kubenas.operator.driver import SearchDriver
from kubenas.operator.status import search_status
from kubenas.operator.trainer_defaults import TrainerDefaults
from kubenas.search import Search
from tests.helpers import manifest
from tests.tools import ROOT

SEARCH = {"apiVersion": "kubenas.io/v1alpha1", "kind": "NeuralArchitectureSearch",
          "metadata": {"name": "digits", "namespace": "team-a", "uid": "search-uid"}}


def _job(*, queue: str | None = None, template_labels: dict | None = None, defaults: TrainerDefaults | None = None):
    document = manifest({"maxTrials": 4})
    if queue is not None:
        document["spec"]["trial"]["queueName"] = queue
    if template_labels is not None:
        document["spec"]["trial"]["template"].setdefault("metadata", {})["labels"] = template_labels
    spec = specs.parse_manifest(document).spec
    ticket = Search(spec).ask()
    trial = children.trial_object(search=SEARCH, ticket=ticket)
    trial["metadata"]["uid"] = "trial-uid"
    return children.job_object(trial=trial, ticket=ticket, spec=spec.trial, defaults=defaults)


def test_a_search_with_a_queue_makes_suspended_labelled_jobs():
    job = _job(queue="gpus")
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][queueing.QUEUE_LABEL] == "gpus"
    assert job["metadata"]["labels"]["kubenas.io/search"] == "digits"  # the operator's own labels stay


def test_without_a_queue_jobs_start_at_once():
    job = _job()
    assert "suspend" not in job["spec"]
    assert queueing.QUEUE_LABEL not in job["metadata"]["labels"]


def test_the_queue_comes_from_the_spec_then_the_template_label_then_the_operator_default():
    defaults = TrainerDefaults.model_validate({"queueName": "cluster-default"})
    assert _job(defaults=defaults)["metadata"]["labels"][queueing.QUEUE_LABEL] == "cluster-default"
    labelled = _job(template_labels={queueing.QUEUE_LABEL: "from-template"}, defaults=defaults)
    assert labelled["metadata"]["labels"][queueing.QUEUE_LABEL] == "from-template"
    assert labelled["spec"]["suspend"] is True
    named = _job(queue="from-spec", template_labels={queueing.QUEUE_LABEL: "from-template"}, defaults=defaults)
    assert named["metadata"]["labels"][queueing.QUEUE_LABEL] == "from-spec"


@pytest.mark.parametrize("name", ["Gpus", "-gpus", "a" * 64, "gpu queue"])
def test_a_queue_name_must_be_a_kubernetes_name(name):
    document = manifest({"maxTrials": 4})
    document["spec"]["trial"]["queueName"] = name
    with pytest.raises(specs.SpecError, match="queueName"):
        specs.parse_manifest(document)


def _suspended(suspend: bool, *, queue: str | None = "gpus", start: str | None = None) -> dict:
    labels = {queueing.QUEUE_LABEL: queue} if queue else {}
    conditions = [{"type": "Suspended", "status": "True" if suspend else "False", "message": "Job suspended"}]
    return {"metadata": {"name": "digits-0", "labels": labels, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"suspend": suspend}, "status": {"conditions": conditions, **({"startTime": start} if start else {})}}


def test_a_suspended_job_awaits_admission_and_says_from_which_queue():
    reason, message = queueing.awaiting_admission(_suspended(True))
    assert reason == "AwaitingAdmission" and "LocalQueue gpus" in message and "Job suspended" in message
    assert queueing.awaiting_admission(_suspended(True, queue=None))[0] == "JobSuspended"
    assert queueing.awaiting_admission(_suspended(False)) is None


class _Client:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict]] = []

    async def patch(self, _kind, *, namespace, name, patch, subresource=None):
        self.patches.append((name, patch["status"]))


def test_the_driver_marks_a_waiting_child_queued_once_then_admitted():
    client = _Client()
    driver = SearchDriver(client=client, body={"metadata": {**SEARCH["metadata"], "generation": 1}}, logger=None)
    driver.search = Search(specs.parse_manifest(manifest({"maxTrials": 4})).spec)
    driver.search.ask()

    async def events():
        assert await driver._queued(0, _suspended(True)) is True
        assert await driver._queued(0, _suspended(True)) is True  # the same wait: written once
        assert await driver._queued(0, _suspended(False, start="2026-01-01T00:00:42Z")) is False
        assert await driver._queued(0, _suspended(False, start="2026-01-01T00:00:42Z")) is False

    asyncio.run(events())
    assert [status["phase"] for _, status in client.patches] == ["Queued", "Pending"]
    queued, admitted = client.patches[0][1], client.patches[1][1]
    assert queued["reason"] == "AwaitingAdmission" and queued["queuedTime"] == "2026-01-01T00:00:00Z"
    assert admitted["reason"] == "Admitted" and admitted["admissionTime"] == "2026-01-01T00:00:42Z"
    assert driver.queued == set()


def test_queued_children_are_counted_apart_from_running_ones():
    search = Search(specs.parse_manifest(manifest({"maxTrials": 4})).spec)
    for _ in range(3):
        search.ask()
    trials = search_status(search=search, name="digits", queued=2)["trials"]
    assert (trials["running"], trials["queued"], trials["created"]) == (1, 2, 3)
    assert "queued" not in search_status(search=search, name="digits")["trials"]  # no queue: no counter


def test_make_tools_builds_the_kueue_the_code_expects():
    go_mod = (ROOT / "tools" / "kueue" / "go.mod").read_text()
    assert re.search(rf"^require sigs\.k8s\.io/kueue {re.escape(binaries.KUEUE_VERSION)}$", go_mod, re.M)
    assert "sigs.k8s.io/kueue/cmd/kueue" in (ROOT / "tools" / "kueue" / "tools.go").read_text()
    assert "sigs.k8s.io/kueue/cmd/kueue" in (ROOT / "tools" / "build.sh").read_text()


def test_the_charts_trainer_queue_name_becomes_the_operators_default_queue():
    import subprocess

    import yaml

    from tests.cluster_harness import tool

    def defaults(*values: str) -> dict:
        rendered = subprocess.run([tool("helm"), "template", "k", str(ROOT / "helm" / "kubenas"), *values],
                                  capture_output=True, text=True, check=True).stdout
        configmap = next(d for d in yaml.safe_load_all(rendered)
                         if d and d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-trainer-defaults"))
        return yaml.safe_load(configmap["data"]["trainer-defaults.yaml"])

    assert "queueName" not in defaults()  # empty by default: no Kueue
    chosen = TrainerDefaults.model_validate(defaults("--set", "trainer.queueName=gpus"))
    assert chosen.queue_name == "gpus"
    refused = subprocess.run([tool("helm"), "template", "k", str(ROOT / "helm" / "kubenas"),
                              "--set", "trainer.queueName=Not_A_Name"], capture_output=True, text=True)
    assert refused.returncode != 0 and "queueName" in refused.stderr
