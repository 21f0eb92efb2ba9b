"""The ValidatingAdmissionPolicy shipped with the manifests, on the real API server: who
may not create Jobs in a namespace may not create (or re-spec) a search there, since the
operator would create the Jobs for them."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from tests.cluster_harness import Cluster, search_manifest

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "manifests" / "base" / "admission-policy.yaml"
NS = "vap"
RULES = {
    "searcher": [{"apiGroups": ["kubenas.io"], "resources": ["neuralarchitecturesearches"],
                  "verbs": ["create", "get", "list", "patch", "update"]}],
    "jobber": [{"apiGroups": ["kubenas.io"], "resources": ["neuralarchitecturesearches"],
                "verbs": ["create", "get", "list", "patch", "update"]},
               {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}],
}
RULES["reader"] = [*RULES["jobber"], {"apiGroups": ["kubenas.io"], "resources": ["nastrials"], "verbs": ["list"]}]


def _user(cluster: Cluster, name: str, tmp_path: Path) -> Path:
    for document in (
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NS}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name, "namespace": NS},
         "rules": RULES[name]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name, "namespace": NS},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NS}]},
    ):
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))
    return cluster.local.token_kubeconfig(tmp_path / f"{name}.kubeconfig", namespace=NS, service_account=name)


def _apply_as(cluster: Cluster, kubeconfig: Path, document: dict):
    return cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(document), kubeconfig=kubeconfig, check=False)


def test_only_users_who_may_create_jobs_may_create_searches(api_cluster: Cluster, tmp_path: Path):
    cluster = api_cluster
    cluster.kubectl("apply", "-f", str(POLICY))
    cluster.kubectl("create", "namespace", NS, check=False)
    searcher, jobber = _user(cluster, "searcher", tmp_path), _user(cluster, "jobber", tmp_path)

    # The policy takes effect once the API server has loaded it: retry the refusal briefly.
    deadline = time.monotonic() + 30
    while (refused := _apply_as(cluster, searcher, search_manifest("mine", namespace=NS))).returncode == 0:
        cluster.kubectl("delete", "nas", "mine", "-n", NS, "--wait=false")
        assert time.monotonic() < deadline, "the admission policy never refused a user who may not create Jobs"
        time.sleep(1)
    assert "kubenas-search-creator-may-create-jobs" in refused.stderr
    assert "may not create Jobs there" in refused.stderr
    assert f"system:serviceaccount:{NS}:searcher" in refused.stderr

    allowed = _apply_as(cluster, jobber, search_manifest("theirs", namespace=NS))
    assert allowed.returncode == 0, allowed.stderr

    # A spec change by the searcher is refused too; a change that leaves the spec alone is not.
    respec = _apply_as(cluster, searcher, search_manifest("theirs", namespace=NS, maxTrials=8))
    assert respec.returncode != 0 and "may not create Jobs there" in respec.stderr
    labelled = cluster.kubectl("label", "nas", "theirs", "-n", NS, "team=a", kubeconfig=searcher, check=False)
    assert labelled.returncode == 0, labelled.stderr

    # spec.cache.from copies other searches' results: only for who may list NASTrials.
    reusing = search_manifest("reuser", namespace=NS, cache={"from": ["theirs"]})
    refused = _apply_as(cluster, jobber, reusing)
    assert refused.returncode != 0 and "may not list NASTrials there" in refused.stderr, refused.stderr
    allowed = _apply_as(cluster, _user(cluster, "reader", tmp_path), reusing)
    assert allowed.returncode == 0, allowed.stderr
