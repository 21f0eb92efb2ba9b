"""`kubenas operator --trainer-defaults`: what children's pods leave unset, filled in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubenas import spec as specs
from kubenas.operator import children, results
from kubenas.operator.trainer_defaults import TrainerDefaults, TrainerDefaultsError
from kubenas.search import Search
from tests.cluster_harness import Cluster
from tests.manifest_checks import admit_pod, pod_security_namespace

ROOT = Path(__file__).resolve().parent.parent
SEARCH = {"apiVersion": "kubenas.io/v1alpha1", "kind": "NeuralArchitectureSearch",
          "metadata": {"name": "paper", "namespace": "team-a", "uid": "search-uid"}}
DEFAULTS = TrainerDefaults.model_validate({
    "image": "ghcr.io/kubenas/trainer:0.1.0",
    "imagePullPolicy": "IfNotPresent",
    "resources": {"limits": {"nvidia.com/gpu": 1}},
    "nodeSelector": {"gpu": "h100"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
})


def restricted_refusal(cluster: Cluster, pod: dict) -> str:
    """'' if the real PodSecurity admission, enforcing "restricted", admits a pod with this
    spec (a dry-run create); else the API server's message."""
    answer = admit_pod(cluster, pod, namespace=pod_security_namespace(cluster), name="trainer")
    assert answer.code in (201, 403), f"{answer.code}: {answer.message}"
    return answer.message if answer.refused else ""


def job_for(document: dict, defaults: TrainerDefaults | None) -> dict:
    spec = specs.parse_manifest(document).spec
    ticket = Search(spec).ask()
    trial = children.trial_object(search=SEARCH, ticket=ticket)
    trial["metadata"]["uid"] = "trial-uid"
    return children.job_object(trial=trial, ticket=ticket, spec=spec.trial, defaults=defaults)


def minimal_search() -> dict:
    """A search that says only what to train: the cluster's defaults say where and how."""
    return {"apiVersion": "kubenas.io/v1alpha1", "kind": "NeuralArchitectureSearch", "metadata": {"name": "paper"},
            "spec": {"trial": {"template": {"spec": {"containers": [
                {"name": "trainer", "args": ["--dataset", "digits"]}]}}}}}


def test_defaults_fill_what_the_template_leaves_unset(api_cluster: Cluster) -> None:
    pod = job_for(minimal_search(), DEFAULTS)["spec"]["template"]["spec"]
    trainer = pod["containers"][0]
    assert trainer["image"] == "ghcr.io/kubenas/trainer:0.1.0"
    assert trainer["imagePullPolicy"] == "IfNotPresent"
    assert trainer["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["securityContext"]["runAsUser"] == 65532
    assert trainer["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert restricted_refusal(api_cluster, pod) == ""  # what the defaults are for
    without = job_for(minimal_search(), None)["spec"]["template"]["spec"]
    without["containers"][0]["image"] = "ghcr.io/kubenas/trainer:0.1.0"
    assert 'violates PodSecurity "restricted:latest"' in restricted_refusal(api_cluster, without)


def test_a_search_keeps_its_own_values() -> None:
    document = minimal_search()
    trainer = document["spec"]["trial"]["template"]["spec"]["containers"][0]
    trainer.update(image="registry.example/mine:2", resources={"limits": {"cpu": "2"}})
    document["spec"]["trial"]["template"]["spec"]["tolerations"] = [{"key": "spot", "operator": "Exists"}]
    pod = job_for(document, DEFAULTS)["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/mine:2"
    assert pod["containers"][0]["resources"] == {"limits": {"cpu": "2"}}
    assert pod["tolerations"] == [{"key": "spot", "operator": "Exists"}]
    assert pod["nodeSelector"] == {"gpu": "h100"}  # unset by the search: the default


def test_without_defaults_the_template_is_taken_as_it_is() -> None:
    pod = job_for(minimal_search(), None)["spec"]["template"]["spec"]
    assert "image" not in pod["containers"][0] and "tolerations" not in pod


def test_the_shipped_defaults_make_the_paper_example_restricted(api_cluster: Cluster, tmp_path: Path) -> None:
    """manifests/' trainer defaults + examples/cifar10-paper.yaml: a pod that asks for one
    GPU and that the API server's PodSecurity admission, enforcing "restricted", admits;
    without the defaults' runAsNonRoot it is refused."""
    configmaps = [d for file in sorted((ROOT / "manifests").rglob("*.yaml")) for d in yaml.safe_load_all(file.read_text())
                  if d and d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "kubenas-trainer-defaults"]
    assert len(configmaps) == 1, "manifests/ should hold the kubenas-trainer-defaults ConfigMap once"
    path = tmp_path / "trainer-defaults.yaml"
    path.write_text(configmaps[0]["data"]["trainer-defaults.yaml"])
    example = yaml.safe_load((ROOT / "examples" / "cifar10-paper.yaml").read_text())
    defaults = TrainerDefaults.load(path)
    pod = job_for(example, defaults)["spec"]["template"]["spec"]
    assert restricted_refusal(api_cluster, pod) == ""
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    root = defaults.model_copy(update={"pod_security_context": {
        key: value for key, value in defaults.pod_security_context.items() if key != "runAsNonRoot"}})
    refusal = restricted_refusal(api_cluster, job_for(example, root)["spec"]["template"]["spec"])
    assert 'violates PodSecurity "restricted:latest": runAsNonRoot != true' in refusal, refusal


@pytest.mark.parametrize("content, named", [
    ("image: [1, 2]", "image"),
    ("tolerations: {key: x}", "tolerations"),
    ("gpus: 1", "gpus"),
])
def test_a_broken_defaults_file_is_named(tmp_path: Path, content: str, named: str) -> None:
    path = tmp_path / "defaults.yaml"
    path.write_text(content)
    with pytest.raises(TrainerDefaultsError, match=named):
        TrainerDefaults.load(path)


def test_the_operator_refuses_to_start_with_a_broken_defaults_file(tmp_path: Path) -> None:
    path = tmp_path / "defaults.yaml"
    path.write_text("resources: 7\n")
    done = subprocess.run([sys.executable, "-m", "kubenas.cli", "operator", "--trainer-defaults", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--trainer-defaults" in done.stderr and "resources" in done.stderr


def test_child_times_come_from_the_trainer_container() -> None:
    job = {"status": {"startTime": "2026-11-27T10:00:00Z", "completionTime": "2026-11-27T10:05:00Z",
                      "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-27T10:05:00Z"}]}}
    pod = {"metadata": {"name": "p"}, "status": {"containerStatuses": [{"state": {"terminated": {
        "exitCode": 0, "startedAt": "2026-11-27T10:00:30Z", "finishedAt": "2026-11-27T10:04:30Z"}}}]}}
    start, end = results.child_times(job, [pod])
    assert end - start == 240  # the container's 4 minutes, not the Job's 5
    start, end = results.child_times(job, [])  # no pod left (deleted): the Job's own times
    assert end - start == 300
    failed = {"status": {"startTime": "2026-11-27T10:00:00Z", "conditions": [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "lastTransitionTime": "2026-11-27T10:01:00Z"}]}}
    assert results.child_times(failed, []) == (results.timestamp("2026-11-27T10:00:00Z"),
                                               results.timestamp("2026-11-27T10:01:00Z"))
