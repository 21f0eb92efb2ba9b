"""The raw manifests (`kubectl apply -k manifests/` and `manifests/cluster-wide`): they
render with the kubectl `make tools` builds, pass the Kubernetes schemas strictly, the
examples are admitted by a real API server serving the CRDs, the operator pod is admitted
by the real PodSecurity admission enforcing "restricted", RBAC is exactly the documented
list, the Deployment's pieces agree with each other and with the operator's command line,
and a real cluster (tests/conftest.py's `api_cluster`) takes the whole install."""

from __future__ import annotations

import copy
import re
import time
import urllib.parse
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kubenas import cli
from kubenas.operator.trainer_defaults import TrainerDefaults
from tests.cluster_harness import Cluster
from tests.manifest_checks import (CLUSTER_WIDE_EXTRA_RULES, DOCUMENTED_RULES, KUBERNETES_VERSION, ManifestError,
                                   builtin_errors, check_restricted, custom_errors, documents, kustomize,
                                   restricted_errors, validate_builtin, validate_custom)

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
CRDS = MANIFESTS / "crds"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
NAMESPACE = "kubenas-system"
NAME = "kubenas-operator"
BUILDS = {"namespaced": MANIFESTS, "cluster-wide": MANIFESTS / "cluster-wide"}

LABELS = {"app.kubernetes.io/name": "kubenas", "app.kubernetes.io/component": "operator",
          "app.kubernetes.io/part-of": "kubenas"}


CHECKS = "manifest-checks"  # where custom resources are dry-run created


@pytest.fixture(scope="module")
def cluster(api_cluster: Cluster) -> Cluster:
    api_cluster.namespace(CHECKS)
    return api_cluster


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {build: kustomize(directory) for build, directory in BUILDS.items()}


def only(docs: list[dict], kind: str, name: str = NAME) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind}/{name}"
    return found[0]


def rule_table(role: dict) -> dict[tuple[str, str], set[str]]:
    """(group, resource) -> verbs; a rule naming several groups/resources counts for each."""
    table: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table


# -- rendering and schemas ------------------------------------------------------------------


def test_kubernetes_version_is_one_kubernetes_validate_has():
    latest = kubernetes_validate.latest_version()
    assert tuple(map(int, KUBERNETES_VERSION.split("."))) <= tuple(map(int, latest.split(".")[:2]))


@pytest.mark.parametrize("build", BUILDS)
def test_every_object_passes_the_strict_kubernetes_schemas(rendered, build):
    unknown = validate_builtin(rendered[build])
    assert unknown == []  # nothing here is a custom resource: every kind was checked


def test_the_builtin_check_is_strict_and_lists_every_error(rendered):
    deployment = only(rendered["namespaced"], "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}  # a typo: an unknown field
    broken["spec"]["replicas"] = "1"
    errors, unknown = builtin_errors([broken, {"apiVersion": "kubenas.io/v1alpha1", "kind": "NASTrial",
                                               "metadata": {"name": "t"}}])
    assert len(errors) == 2 and any("securityContex" in error for error in errors), errors
    assert [doc["kind"] for doc in unknown] == ["NASTrial"]  # returned for validate_custom, not passed
    with pytest.raises(ManifestError, match="2 problem"):
        validate_builtin([broken])


def test_the_namespaced_build_lists_every_crd():
    listed = set(yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"])
    assert {f"crds/{path.name}" for path in CRDS.glob("*.yaml")} <= listed


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_examples_pass_the_crds(cluster, example):
    docs = documents(example)
    assert validate_builtin(docs) == docs  # custom resources: no built-in schema
    validate_custom(cluster, docs, CRDS, namespace=CHECKS)  # the API server admits them (dry run)


def test_the_custom_check_lists_every_refusal(cluster):
    digits = documents(EXAMPLES[0])[0]
    broken = yaml.safe_load(yaml.safe_dump(digits))
    broken["spec"]["maxTrials"] = 0
    broken["spec"]["parallelizm"] = 2
    broken["metadata"]["name"] = "Not_A_Name"
    errors = custom_errors(cluster, [broken, {"apiVersion": "kubenas.io/v9", "kind": "Thing", "metadata": {"name": "x"}}],
                           namespace=CHECKS)
    assert any("metadata.name: Invalid value" in error for error in errors), errors
    assert any('unknown field "spec.parallelizm"' in error for error in errors), errors
    assert any("spec.maxTrials: Invalid value: 0" in error for error in errors), errors
    assert any("kubenas.io/v9 Thing x: no CRD serves" in error for error in errors), errors
    with pytest.raises(ManifestError) as raised:
        validate_custom(cluster, [broken, {"apiVersion": "kubenas.io/v9", "kind": "Thing", "metadata": {"name": "x"}}],
                        namespace=CHECKS)
    assert sorted(raised.value.errors) == sorted(errors) and len(errors) == 5  # metadata.name breaks two rules


@pytest.mark.parametrize("build", BUILDS)
def test_the_operator_pod_meets_the_restricted_standard(cluster, rendered, build):
    """The real PodSecurity admission, enforcing "restricted", admits the operator's pod."""
    assert check_restricted(cluster, rendered[build]) == [f"Deployment/{NAME} spec.template.spec"]


@pytest.mark.parametrize(("change", "violation"), [
    (lambda pod: pod["containers"][0]["securityContext"].update(privileged=True, allowPrivilegeEscalation=True),
     "privileged (container \"operator\" must not set securityContext.privileged=true)"),
    (lambda pod: pod["securityContext"].pop("runAsNonRoot"), "runAsNonRoot != true"),
    (lambda pod: pod["containers"][0]["securityContext"].pop("capabilities"), "unrestricted capabilities"),
], ids=["privileged", "root", "capabilities"])
def test_pod_security_refuses_a_less_restricted_operator_pod(cluster, rendered, change, violation):
    deployment = copy.deepcopy(only(rendered["namespaced"], "Deployment"))
    change(deployment["spec"]["template"]["spec"])
    errors = restricted_errors(cluster, [deployment])
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"Deployment/{NAME} spec.template.spec: ")
    assert 'violates PodSecurity "restricted:latest"' in errors[0] and violation in errors[0], errors
    with pytest.raises(ManifestError, match="PodSecurity"):
        check_restricted(cluster, [deployment])


# -- RBAC ------------------------------------------------------------------------------------


def test_namespaced_rbac_is_exactly_the_documented_list(rendered):
    docs = rendered["namespaced"]
    assert not [doc for doc in docs if doc["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = only(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rule_table(role) == DOCUMENTED_RULES
    binding = only(docs, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]


def test_cluster_wide_rbac_is_exactly_the_documented_list(rendered):
    docs = rendered["cluster-wide"]
    assert not [doc for doc in docs if doc["kind"] in ("Role", "RoleBinding")]
    assert rule_table(only(docs, "ClusterRole")) == {**DOCUMENTED_RULES, **CLUSTER_WIDE_EXTRA_RULES}
    binding = only(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    assert not [doc for doc in docs if doc["kind"] == "CustomResourceDefinition"]  # applied with -f manifests/crds/


@pytest.mark.parametrize("source", ["role.yaml", "cluster-wide/clusterrole.yaml"])
def test_every_rbac_rule_says_which_calls_need_it(source):
    lines = (MANIFESTS / source).read_text().splitlines()
    rules = [index for index, line in enumerate(lines) if line.strip().startswith("- apiGroups:")]
    assert rules
    for index in rules:
        assert lines[index - 1].strip().startswith("#"), f"{source}:{index + 1}: a rule without a comment above it"


# -- the Deployment's parts agree -----------------------------------------------------------


def operator_arguments(deployment: dict):
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container  # the image's entrypoint is `kubenas operator`
    return container, cli._parser().parse_args(["operator", *container["args"]])


@pytest.mark.parametrize("build", BUILDS)
def test_deployment_args_ports_and_probe_agree(rendered, build):
    docs = rendered[build]
    deployment = only(docs, "Deployment")
    container, args = operator_arguments(deployment)  # the real CLI accepts them
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 8080, "healthz": 8081}
    liveness = urllib.parse.urlsplit(args.liveness)
    assert liveness.port == ports["healthz"]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == liveness.path == "/healthz"
    assert probe["port"] in ("healthz", ports["healthz"])
    assert args.metrics_port == ports["metrics"] and args.metrics_host == "0.0.0.0"
    if build == "namespaced":
        assert args.namespace == [NAMESPACE] and not args.all_namespaces
    else:
        assert args.namespace == [] and args.all_namespaces

    service = only(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels == LABELS and all(doc["metadata"]["labels"].items() >= {
        "app.kubernetes.io/name": "kubenas", "app.kubernetes.io/part-of": "kubenas"}.items()
        for doc in docs if doc["kind"] != "CustomResourceDefinition")


@pytest.mark.parametrize("build", BUILDS)
def test_deployment_settings(cluster, rendered, build, tmp_path):
    docs = rendered[build]
    deployment = only(docs, "Deployment")
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == NAME and pod["automountServiceAccountToken"] is True
    assert only(docs, "ServiceAccount")["metadata"]["namespace"] == NAMESPACE
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    container, args = operator_arguments(deployment)
    assert container["image"] == "ghcr.io/kubenas/operator:0.1.0"
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    assert {env["name"]: env["value"] for env in container["env"]} == {
        "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp", "MPLCONFIGDIR": "/tmp"}
    # /tmp is writable (an emptyDir); the trainer defaults file is the ConfigMap's key.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert volumes[mounts["/tmp"]] == {"name": "tmp", "emptyDir": {}}
    defaults_path = Path(args.trainer_defaults)
    config_volume = volumes[mounts[str(defaults_path.parent)]]["configMap"]
    config_map = only(docs, "ConfigMap", config_volume["name"])
    assert config_map["metadata"]["namespace"] == NAMESPACE
    text = config_map["data"][defaults_path.name]
    # The operator's own loader accepts the defaults, and PodSecurity "restricted" admits a pod with them.
    (tmp_path / "defaults.yaml").write_text(text)
    TrainerDefaults.load(tmp_path / "defaults.yaml")
    defaults = yaml.safe_load(text)
    assert defaults["image"] == "ghcr.io/kubenas/trainer:0.1.0"
    child = {"kind": "Pod", "metadata": {"name": "child"},
             "spec": {"securityContext": defaults["podSecurityContext"],
                      "containers": [{"name": "trainer", "image": defaults["image"],
                                      "securityContext": defaults["securityContext"]}]}}
    check_restricted(cluster, [child])


def test_namespace_enforces_the_restricted_standard(rendered):
    namespace = only(rendered["namespaced"], "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# -- applied for real --------------------------------------------------------------------


def test_apply_to_a_real_cluster(cluster):
    """`kubectl apply -k manifests/` for real (the CRDs are already served: the shared
    cluster installed them from manifests/crds). The cluster's node is cordoned: the
    operator's pod is created, admitted by PodSecurity, and stays Pending."""
    applied = cluster.kubectl("apply", "-k", str(MANIFESTS)).stdout
    for kind in ("namespace", "serviceaccount", "configmap", "role.rbac.authorization.k8s.io",
                 "rolebinding.rbac.authorization.k8s.io", "service", "deployment.apps"):
        assert re.search(rf"^{re.escape(kind)}/\S+ created$", applied, re.MULTILINE), f"{kind} not created:\n{applied}"
    for crd in CRDS.glob("*.yaml"):
        name = yaml.safe_load(crd.read_text())["metadata"]["name"]
        assert re.search(rf"^customresourcedefinition.apiextensions.k8s.io/{re.escape(name)} (created|unchanged)$",
                         applied, re.MULTILINE), applied
    try:
        got = yaml.safe_load(cluster.kubectl("get", "-n", NAMESPACE, "-o", "yaml", "-l", "app.kubernetes.io/part-of=kubenas",
                                             "deployment,service,serviceaccount,configmap,role,rolebinding").stdout)
        kinds = sorted((item["kind"], item["metadata"]["name"]) for item in got["items"])
        assert kinds == sorted([("ConfigMap", "kubenas-trainer-defaults"), ("Deployment", NAME), ("Role", NAME),
                                ("RoleBinding", NAME), ("Service", NAME), ("ServiceAccount", NAME)])
        deployment = only(got["items"], "Deployment")
        assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["--namespace", NAMESPACE]
        assert rule_table(only(got["items"], "Role")) == DOCUMENTED_RULES
        namespace = yaml.safe_load(cluster.kubectl("get", "namespace", NAMESPACE, "-o", "yaml").stdout)
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        # The Deployment's ReplicaSet made the operator pod: PodSecurity admitted it there.
        pod = operator_pod(cluster)
        assert pod["status"]["phase"] == "Pending" and pod["spec"]["serviceAccountName"] == NAME
        # The CRDs are served: the examples are admitted into the operator's namespace.
        for example in EXAMPLES:
            cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(example))
        names = cluster.kubectl("get", "nas", "-n", NAMESPACE, "-o", "name").stdout.split()
        assert len(names) == len(EXAMPLES)
        # Applying again changes nothing.
        again = cluster.kubectl("apply", "-k", str(MANIFESTS)).stdout
        assert all(line.endswith("unchanged") for line in again.splitlines()), again

        # The cluster-wide install over it: a ClusterRole, and the operator watches everything.
        cluster.kubectl("apply", "-f", str(CRDS))
        cluster.kubectl("apply", "-k", str(MANIFESTS / "cluster-wide"))
        role = yaml.safe_load(cluster.kubectl("get", "clusterrole", NAME, "-o", "yaml").stdout)
        assert rule_table(role) == {**DOCUMENTED_RULES, **CLUSTER_WIDE_EXTRA_RULES}
        binding = yaml.safe_load(cluster.kubectl("get", "clusterrolebinding", NAME, "-o", "yaml").stdout)
        assert binding["subjects"][0]["namespace"] == NAMESPACE
        args = yaml.safe_load(cluster.kubectl("get", "deployment", NAME, "-n", NAMESPACE, "-o", "yaml").stdout)
        assert args["spec"]["template"]["spec"]["containers"][0]["args"][0] == "--all-namespaces"
    finally:  # no operator left behind in the shared cluster, should its node be uncordoned
        cluster.kubectl("delete", "deployment", NAME, "-n", NAMESPACE, "--ignore-not-found", "--wait=false")


def operator_pod(cluster, timeout: float = 30) -> dict:
    selector = ",".join(f"{key}={value}" for key, value in LABELS.items())
    deadline = time.monotonic() + timeout
    while True:
        pods = cluster.items(f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=selector)
        if pods:
            return pods[0]
        if time.monotonic() > deadline:
            events = cluster.kubectl("get", "events", "-n", NAMESPACE).stdout
            raise AssertionError(f"no operator pod after {timeout} s:\n{events}")
        time.sleep(0.2)
