"""Kueue admission without a cluster: which queue a search's children go to, the Job
that gets (suspended, labelled), how a waiting Job reads (Queued), what the driver writes
to the child's NASTrial and the search's counters, and the pins `make tools` builds."""

from __future__ import annotations

import asyncio
import re

import pytest

from kubenas import spec as specs
from kubenas.localcluster import binaries
from kubenas.operator import children, queueing, workloads
from kubenas.operator.driver import SearchDriver
from kubenas.operator.kube import ApiError
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


def _workload(job: str, *, reserved: str = "False", reason: str = "Pending", message: str | None = None) -> dict:
    message = message or ("couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu "
                          "in flavor gpu, 1 more needed")
    return {"metadata": {"name": f"job-{job}-1a2b3", "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": "job-uid", "controller": True}]},
            "status": {"conditions": [{"type": "QuotaReserved", "status": reserved, "reason": reason,
                                       "message": message}]}}


def test_kueues_workload_says_why_a_child_waits():
    reason, message = workloads.verdict(_workload("digits-0"))
    assert reason == "AwaitingAdmission" and message.startswith("Kueue: couldn't assign flavors") and "1 more" in message
    reason, message = workloads.verdict(_workload("digits-0", reason="Inadmissible",
                                                  message="LocalQueue nope doesn't exist"))
    assert (reason, message) == ("Inadmissible", "Kueue: LocalQueue nope doesn't exist")
    assert workloads.verdict(_workload("digits-0", reserved="True", reason="QuotaReserved")) is None  # admitted next
    assert workloads.verdict({"metadata": {"name": "fresh"}}) is None  # Kueue has not looked at it yet
    assert workloads.job_of(_workload("digits-3")) == "digits-3"
    assert workloads.job_of({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p"}]}}) is None


class _WorkloadClient:
    """Lists Workloads as a Kueue of the given versions would (or refuses: `refuse`)."""

    def __init__(self, items: list[dict], *, versions=("v1beta2",), refuse: int | None = None) -> None:
        self.items, self.versions, self.refuse = items, versions, refuse
        self.lists: list[str] = []
        self.patches: list[tuple[str, dict]] = []

    async def list(self, resource, *, namespace, label_selector, field_selector=None):
        self.lists.append(resource.version)
        if self.refuse:
            raise ApiError(self.refuse, "Forbidden", "workloads is forbidden")
        if resource.version not in self.versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return self.items

    async def patch(self, _kind, *, namespace, name, patch, subresource=None):
        self.patches.append((name, patch["status"]))


def test_workloads_are_listed_at_most_every_few_seconds_and_an_older_kueues_version_is_found():
    clock = [100.0]
    client = _WorkloadClient([_workload("digits-0"), _workload("other-7")], versions=("v1beta1",))
    verdicts = workloads.KueueVerdicts(logger=None, clock=lambda: clock[0])
    assert verdicts.due()
    found = asyncio.run(verdicts.read(client, namespace="team-a", jobs={"digits-0", "digits-1"}))
    assert list(found) == ["digits-0"]  # not another search's Job, nor a child without a Workload yet
    assert client.lists == ["v1beta2", "v1beta1"]
    clock[0] += workloads.LIST_EVERY - 0.1
    assert not verdicts.due()
    clock[0] += 0.1
    assert verdicts.due()
    asyncio.run(verdicts.read(client, namespace="team-a", jobs={"digits-0"}))
    assert client.lists == ["v1beta2", "v1beta1", "v1beta1"]  # the version found is kept


@pytest.mark.parametrize("refused", [403, 404])
def test_without_rbac_on_workloads_or_without_kueue_the_operator_stops_asking(refused, caplog):
    import logging
    client = _WorkloadClient([_workload("digits-0")], refuse=refused)
    verdicts = workloads.KueueVerdicts(logger=logging.getLogger("test"), clock=lambda: 0.0)
    with caplog.at_level(logging.INFO):
        assert asyncio.run(verdicts.read(client, namespace="team-a", jobs={"digits-0"})) == {}
    assert not verdicts.due() and "cannot be read" in caplog.text


def test_the_driver_copies_kueues_reason_into_the_queued_childs_trial_once(monkeypatch):
    import logging
    events = []
    monkeypatch.setattr("kopf.event", lambda body, **kwargs: events.append(kwargs))
    inadmissible = _workload("digits-1", reason="Inadmissible", message="LocalQueue nope doesn't exist")
    client = _WorkloadClient([_workload("digits-0"), inadmissible])
    driver = SearchDriver(client=client, body={"metadata": {**SEARCH["metadata"], "generation": 1}},
                          logger=logging.getLogger("test"))
    clock = [0.0]
    driver.kueue.clock = lambda: clock[0]
    driver.queued = {0, 1}

    async def look(times: int):
        for _ in range(times):
            clock[0] += workloads.LIST_EVERY
            await driver._inspect_queued()

    asyncio.run(look(3))
    assert len(client.lists) == 3
    assert sorted((name, status["reason"]) for name, status in client.patches) == [
        ("digits-0", "AwaitingAdmission"), ("digits-1", "Inadmissible")]  # each written once, not every list
    assert all(status["phase"] == "Queued" and status["message"].startswith("Kueue: ") for _, status in client.patches)
    assert [(e["reason"], e["type"]) for e in events] == [("ChildrenInadmissible", "Warning")]
    assert "LocalQueue nope doesn't exist" in events[0]["message"]
    driver.queued = set()
    asyncio.run(look(2))
    assert len(client.lists) == 3  # nothing queued: no list


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


def test_a_job_waits_from_its_suspension_else_its_creation():
    job = _suspended(True)
    assert queueing.waiting_since(job) == "2026-01-01T00:00:00Z"  # no transition time: its creation
    job["status"]["conditions"][0]["lastTransitionTime"] = "2026-01-01T00:05:00Z"  # evicted by Kueue, waits again
    assert queueing.waiting_since(job) == "2026-01-01T00:05:00Z"
