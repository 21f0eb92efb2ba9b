"""The Helm chart (helm/kubenas), linted and installed with the real Helm library
(helm-sdkpy, in its own Python 3.12 venv: tests/helm_check.py) into emulated clusters.

One helm_check.py run per module does every lint and install; the tests then read its
answers (rendered manifests, errors) and GET the objects from the clusters. Clusters are
cheap (tens of milliseconds), so installs that would fight over the cluster-scoped CRDs get
their own: "main" (defaults and the watch scopes, without the Prometheus Operator), "all-on"
(ci/all-on-values.yaml, with the Prometheus Operator's CRDs), "rules" (only the
PrometheusRule, as the alerts file has it) and "no-keep" (crds.keep=false).

Namespaces are created beforehand with JSON requests: Helm's create_namespace sends the
Namespace as protobuf, which the emulated API server does not read.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import manifest_checks
from tests.manifest_checks import CLUSTER_WIDE_EXTRA_RULES, DOCUMENTED_RULES
from tests.cluster_harness import ClusterThread
from tests.tools import ROOT, executable, helm_python

CHART = ROOT / "helm" / "kubenas"
ALL_ON_VALUES = CHART / "ci" / "all-on-values.yaml"
DASHBOARD = CHART / "dashboards" / "kubenas.json"
ALERTS_FILE = ROOT / "manifests" / "monitoring" / "kubenas-alerts.yaml"
CRDS = ROOT / "manifests" / "crds"
MONITORING_CRDS = Path(__file__).parent / "fixtures" / "monitoring.coreos.com-crds.yaml"
HELM_CHECK = Path(__file__).with_name("helm_check.py")

NS = "kubenas-system"
OPERATOR = "kubenas-operator"
NO_CRDS = {"crds": {"create": False}}
TUNED_RULES = {"enabled": True, "childFailuresPerMinute": 0.5, "childFailuresFor": "15m",
               "noChildFinishedMinutes": 90, "operatorDownFor": "2m", "operatorJob": "prometheus/kubenas"}

# label: (cluster, release, namespace, values, values file); namespaces listed in NAMESPACES.
INSTALLS: dict[str, tuple[str, str, str, dict, Path | None]] = {
    "default": ("main", "kubenas", NS, {}, None),
    "namespaces": ("main", "multi", "kubenas-multi",
                   NO_CRDS | {"watch": {"scope": "namespaces", "namespaces": ["team-a", "team-b"]}}, None),
    "cluster": ("main", "wide", "kubenas-wide", NO_CRDS | {"watch": {"scope": "cluster"}}, None),
    "all-on": ("all-on", "kubenas", NS, {}, ALL_ON_VALUES),
    "tuned-rules": ("all-on", "tuned", "kubenas-tuned", NO_CRDS | {"prometheusRule": TUNED_RULES}, None),
    "podmonitor-only": ("all-on", "pm", "kubenas-pm",
                        NO_CRDS | {"podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}, None),
    "rules": ("rules", "kubenas", NS, {"prometheusRule": {"enabled": True}}, None),
    "no-keep": ("no-keep", "kubenas", NS, {"crds": {"keep": False}}, None),
}
# Values the schema refuses: label -> (values, where the error points, as a JSON pointer).
BAD_VALUES: dict[str, tuple[dict, str]] = {
    "unknown-scope": ({"watch": {"scope": "everywhere"}}, "'/watch/scope'"),
    "unknown-key": ({"replicas": 2}, "'replicas'"),
    "port-zero": ({"metrics": {"port": 0}}, "'/metrics/port'"),
    "namespaces-without-list": ({"watch": {"scope": "namespaces"}}, "'/watch/namespaces'"),
    "bad-duration": ({"prometheusRule": {"enabled": True, "operatorDownFor": "5 minutes"}},
                     "'/prometheusRule/operatorDownFor'"),
    "bad-pull-policy": ({"trainer": {"image": {"pullPolicy": "Sometimes"}}}, "'/trainer/image/pullPolicy'"),
}
NAMESPACES = {"main": [NS, "kubenas-multi", "team-a", "team-b", "kubenas-wide", "kubenas-bad"],
              "all-on": [NS, "kubenas-tuned", "kubenas-pm"], "rules": [NS], "no-keep": [NS]}
NEEDS_MONITORING_CRDS = ("all-on", "rules")

# What the operator calls, per (apiGroup, resource): verbs — the raw manifests' list, which
# tests/test_operator_e2e.py checks against the calls operators really make.
OPERATOR_RULES = DOCUMENTED_RULES
CLUSTER_ONLY_RULES = CLUSTER_WIDE_EXTRA_RULES


# -- one Helm run for the module -------------------------------------------------------


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """{"clusters": {name: ClusterThread}, "lint": ..., "installs": {label: answer}}."""
    python = helm_python()
    workdir = tmp_path_factory.mktemp("helm")
    clusters: dict[str, ClusterThread] = {}
    try:
        for name in NAMESPACES:
            clusters[name] = ClusterThread(workdir=workdir / name).start()
        for name, cluster in clusters.items():
            for namespace in NAMESPACES[name]:
                cluster.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                               "metadata": {"name": namespace}})
            if name in NEEDS_MONITORING_CRDS:
                for crd in manifest_checks.documents(MONITORING_CRDS):
                    cluster.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        installs = [
            {"label": label, "kubeconfig": str(clusters[cluster].kubeconfig), "release": release,
             "namespace": namespace, "values": values} | ({"values_file": str(file)} if file else {})
            for label, (cluster, release, namespace, values, file) in INSTALLS.items()
        ] + [
            {"label": label, "kubeconfig": str(clusters["main"].kubeconfig), "release": label,
             "namespace": "kubenas-bad", "values": values}
            for label, (values, _) in BAD_VALUES.items()
        ]
        job = workdir / "job.json"
        job.write_text(json.dumps({"chart": str(CHART), "kubeconfig": str(clusters["main"].kubeconfig),
                                   "lint": True, "installs": installs}))
        done = subprocess.run([python, str(HELM_CHECK), str(job)], capture_output=True, text=True, timeout=300,
                              cwd=ROOT)
        assert done.returncode == 0, f"helm_check.py failed:\n{done.stdout}\n{done.stderr}"
        report = json.loads(done.stdout)
        yield {"clusters": clusters, "lint": report["lint"],
               "installs": {answer["label"]: answer for answer in report["installs"]}}
    finally:
        # Last started, first stopped: each kmock server chains a DNS interceptor into aiohttp's
        # resolver, and unchaining them in another order fails (leaving sessions unclosed).
        for cluster in reversed(list(clusters.values())):
            cluster.stop()


def installed(helm: dict, label: str) -> dict[str, Any]:
    answer = helm["installs"][label]
    assert "error" not in answer, f"install {label!r} failed: {answer['error']}"
    return answer["result"]


def manifest(helm: dict, label: str) -> list[dict]:
    return manifest_checks.documents(installed(helm, label)["manifest"])


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def resource_path(cluster: ClusterThread, document: dict) -> str:
    """The object's URL path, with the plural from the cluster's discovery."""
    api_version, kind = document["apiVersion"], document["kind"]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    resources = cluster.get(base)["resources"]
    resource = next(r for r in resources if r["kind"] == kind and "/" not in r["name"])
    namespace = document["metadata"].get("namespace")
    scope = f"/namespaces/{namespace}" if resource["namespaced"] else ""
    return f"{base}{scope}/{resource['name']}/{document['metadata']['name']}"


def rules_of(role: dict) -> dict[tuple[str, str], set[str]]:
    rules: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                rules.setdefault((group, resource), set()).update(rule["verbs"])
    return rules


# -- lint and schema -------------------------------------------------------------------


def test_lint_reports_no_error_or_warning(helm):
    lint = helm["lint"]
    assert "error" not in lint, lint.get("error")
    # Helm's severities: 1 info (e.g. "icon is recommended"), 2 warning, 3 error.
    serious = [message for message in lint["result"]["Messages"] if message["Severity"] >= 2]
    assert not serious and not lint["result"]["Errors"], lint


@pytest.mark.parametrize("label", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(helm, label):
    answer = helm["installs"][label]
    _, field = BAD_VALUES[label]
    assert "error" in answer, f"the schema accepted {BAD_VALUES[label][0]}"
    assert "schema" in answer["error"] and field in answer["error"], answer["error"]


def values_key_lines() -> list[tuple[int, int, str, list[str]]]:
    """(line number, indent, key, the comment block directly above) of every mapping key."""
    found = []
    lines = (CHART / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z_][\w.\-/]*):(\s|$)", line)
        if not match:
            continue
        comments: list[str] = []
        above = number - 1
        while above >= 0 and lines[above].strip().startswith("#"):
            comments.insert(0, lines[above].strip())
            above -= 1
        found.append((number + 1, len(match.group(1)), match.group(2), comments))
    return found


def test_every_value_has_a_doc_comment():
    """helm-docs: a `# --` comment documents a key and everything under it; a key not under
    a documented one must be documented itself, unless it is a section whose keys all are."""
    keys = values_key_lines()
    documented_parents: list[int] = []  # indents of the documented keys we are inside
    undocumented: list[str] = []
    sections: list[tuple[int, str]] = []  # undocumented keys holding other keys
    for index, (number, indent, key, comments) in enumerate(keys):
        while documented_parents and documented_parents[-1] >= indent:
            documented_parents.pop()
        if documented_parents:
            continue  # part of a documented value's default
        if comments and comments[0].startswith("# --"):
            documented_parents.append(indent)
            continue
        has_children = index + 1 < len(keys) and keys[index + 1][1] > indent
        if has_children:
            sections.append((number, key))
        else:
            undocumented.append(f"line {number}: {key}")
    assert not undocumented, "values without a `# --` comment:\n" + "\n".join(undocumented)
    assert sections, "expected sections (crds, watch, ...) whose keys are documented one by one"


# Kubernetes types the schema outlines (allowed keys) but values.yaml need not fill in.
KUBERNETES_TYPED = {"resources.", "trainer.resources."}


def schema_gaps(values: Any, schema: dict, path: str = "") -> list[str]:
    """Keys of values.yaml the schema does not describe, and schema properties values.yaml lacks."""
    gaps: list[str] = []
    properties = schema.get("properties")
    if not isinstance(values, dict) or properties is None or path in KUBERNETES_TYPED:
        return gaps
    if schema.get("additionalProperties") is not False:
        gaps.append(f"{path or '<root>'}: additionalProperties is not false")
    for key, value in values.items():
        if key not in properties:
            gaps.append(f"{path}{key}: not in the schema")
        else:
            gaps += schema_gaps(value, properties[key], f"{path}{key}.")
    gaps += [f"{path}{key}: in the schema, not in values.yaml" for key in properties
             if key not in values and not (path == "" and key == "global")]
    return gaps


def test_schema_covers_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema_gaps(values, schema) == []


# -- default install -------------------------------------------------------------------


def test_default_install_creates_the_objects_shared_md_names(helm):
    docs = manifest(helm, "default")
    cluster = helm["clusters"]["main"]
    names = sorted((doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]) for doc in docs)
    assert names == sorted([
        ("CustomResourceDefinition", "", "nastrials.kubenas.io"),
        ("CustomResourceDefinition", "", "neuralarchitecturesearches.kubenas.io"),
        ("ServiceAccount", NS, OPERATOR),
        ("ConfigMap", NS, "kubenas-trainer-defaults"),
        ("Role", NS, OPERATOR),
        ("RoleBinding", NS, OPERATOR),
        ("Service", NS, OPERATOR),
        ("Deployment", NS, OPERATOR),
    ])
    for doc in docs:
        stored = cluster.get(resource_path(cluster, doc))
        assert stored is not None, f"{doc['kind']} {doc['metadata']['name']} is not in the cluster"
        assert stored["metadata"]["annotations"]["meta.helm.sh/release-name"] == "kubenas"
        for key, value in {"app.kubernetes.io/name": "kubenas", "app.kubernetes.io/part-of": "kubenas",
                           "app.kubernetes.io/managed-by": "Helm"}.items():
            assert stored["metadata"]["labels"][key] == value, (doc["kind"], key)


def test_default_deployment_runs_the_operator_as_shared_md_says(helm):
    docs = manifest(helm, "default")
    deployment = one(docs, "Deployment", OPERATOR)
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    selector = spec["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "operator"
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["serviceAccountName"] == OPERATOR
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/kubenas/operator:0.1.0"
    assert container["args"] == ["--namespace", NS, "--liveness", "http://0.0.0.0:8081/healthz",
                                 "--metrics-port", "8080", "--trainer-defaults", "/etc/kubenas/trainer-defaults.yaml"]
    assert {port["name"]: port["containerPort"] for port in container["ports"]} == {"metrics": 8080, "healthz": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {env["name"]: env["value"] for env in container["env"]} == {
        "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp", "MPLCONFIGDIR": "/tmp"}
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert mounts == {"tmp": "/tmp", "trainer-defaults": "/etc/kubenas"}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
    assert volumes["trainer-defaults"]["configMap"]["name"] == "kubenas-trainer-defaults"
    service = one(docs, "Service", OPERATOR)
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]


def test_notes_say_what_is_watched(helm):
    assert "The operator watches: kubenas-system." in installed(helm, "default")["info"]["notes"]
    assert "The operator watches: team-a, team-b." in installed(helm, "namespaces")["info"]["notes"]
    assert "The operator watches every namespace." in installed(helm, "cluster")["info"]["notes"]


def test_trainer_defaults_configmap_holds_shared_md_defaults(helm):
    from kubenas.operator.trainer_defaults import TrainerDefaults  # what the operator reads it with

    configmap = one(manifest(helm, "default"), "ConfigMap", "kubenas-trainer-defaults")
    text = configmap["data"]["trainer-defaults.yaml"]
    assert yaml.safe_load(text) == {
        "image": "ghcr.io/kubenas/trainer:0.1.0",
        "imagePullPolicy": "IfNotPresent",
        "resources": {"limits": {"nvidia.com/gpu": 1}},
        "nodeSelector": {},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                               "seccompProfile": {"type": "RuntimeDefault"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    defaults = TrainerDefaults.model_validate(yaml.safe_load(text))
    assert defaults.image == "ghcr.io/kubenas/trainer:0.1.0"


@pytest.mark.parametrize("label", ["default", "namespaces", "cluster", "all-on", "no-keep"])
def test_rendered_objects_pass_the_manifest_checks(helm, label):
    docs = manifest(helm, label)
    custom = manifest_checks.validate_builtin(docs)
    # Only the Prometheus Operator's kinds have no built-in schema; they are checked against
    # the fixture CRDs as the API server would admit them (no unknown field, types, patterns).
    assert {doc["kind"] for doc in custom} <= {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    manifest_checks.validate_custom(custom, manifest_checks.crd_documents(MONITORING_CRDS))
    checked = manifest_checks.check_restricted(docs)
    assert any(path.startswith("Deployment/") for path in checked), checked


# -- CRDs ------------------------------------------------------------------------------


def test_crd_copies_equal_manifests_crds():
    """helm/kubenas/files/crds/ is a copy of manifests/crds/ (Helm reads nothing outside the chart)."""
    copies = {path.name: path.read_text() for path in (CHART / "files" / "crds").glob("*.yaml")}
    originals = {path.name: path.read_text() for path in CRDS.glob("*.yaml")}
    assert copies.keys() == originals.keys()
    stale = [name for name in originals if copies[name] != originals[name]]
    assert not stale, f"helm/kubenas/files/crds/ differs from manifests/crds/ ({stale}): run `make crds`"


def test_crds_are_kept_by_default_and_otherwise_unchanged(helm):
    cluster = helm["clusters"]["main"]
    rendered = {doc["metadata"]["name"]: doc for doc in find(manifest(helm, "default"), "CustomResourceDefinition")}
    originals = {doc["metadata"]["name"]: doc for doc in manifest_checks.crd_documents(CRDS)}
    assert rendered.keys() == originals.keys()
    for name, crd in rendered.items():
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kubenas"
        # The round trip through fromYaml/toYaml changes nothing else.
        assert {**crd, "metadata": {"name": name}} == originals[name]
        stored = cluster.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        assert stored["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The CRDs registered their kinds: the cluster serves them.
    assert cluster.items(f"/apis/kubenas.io/v1alpha1/namespaces/{NS}/neuralarchitecturesearches") == []


def test_crds_keep_false_drops_the_annotation(helm):
    crds = find(manifest(helm, "no-keep"), "CustomResourceDefinition")
    assert len(crds) == 2
    assert all("helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {}) for crd in crds)


@pytest.mark.parametrize("label", ["namespaces", "cluster"])
def test_crds_create_false_renders_no_crd(helm, label):
    assert find(manifest(helm, label), "CustomResourceDefinition") == []


# -- watch scopes ----------------------------------------------------------------------


def test_scope_namespace_gets_a_role_in_the_release_namespace(helm):
    docs = manifest(helm, "default")
    assert find(docs, "ClusterRole") == [] and find(docs, "ClusterRoleBinding") == []
    assert rules_of(one(docs, "Role", OPERATOR)) == OPERATOR_RULES
    binding = one(docs, "RoleBinding", OPERATOR)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": OPERATOR}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": OPERATOR, "namespace": NS}]


def test_scope_namespaces_gets_a_role_in_each_watched_namespace(helm):
    docs = manifest(helm, "namespaces")
    cluster = helm["clusters"]["main"]
    name = "multi-kubenas-operator"
    assert find(docs, "ClusterRole") == [] and find(docs, "ClusterRoleBinding") == []
    roles = find(docs, "Role")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    for namespace in ("team-a", "team-b"):
        role = cluster.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}")
        assert role is not None and rules_of(role) == OPERATOR_RULES
        binding = cluster.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/{name}")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "kubenas-multi"}]
    # No Role where the operator runs: it reads nothing there.
    assert cluster.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/kubenas-multi/roles/{name}") is None
    args = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == ["--namespace", "team-a", "--namespace", "team-b"] and "--all-namespaces" not in args


def test_scope_cluster_gets_a_clusterrole_with_the_extra_rules(helm):
    docs = manifest(helm, "cluster")
    cluster = helm["clusters"]["main"]
    name = "wide-kubenas-operator"
    assert find(docs, "Role") == [] and find(docs, "RoleBinding") == []
    role = cluster.get(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}")
    assert rules_of(role) == OPERATOR_RULES | CLUSTER_ONLY_RULES
    binding = cluster.get(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "kubenas-wide"}]
    args = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "--all-namespaces" and "--namespace" not in args


# -- optional parts --------------------------------------------------------------------


def test_all_on_install_creates_every_optional_part(helm):
    docs = manifest(helm, "all-on")
    cluster = helm["clusters"]["all-on"]
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        rendered = one(docs, kind, OPERATOR)
        stored = cluster.get(resource_path(cluster, rendered))
        assert stored is not None, f"{kind} is not in the cluster"
        assert stored["metadata"]["labels"]["release"] == "prometheus"
    selector = one(docs, "Deployment", OPERATOR)["spec"]["selector"]["matchLabels"]
    service_monitor = one(docs, "ServiceMonitor")["spec"]
    assert service_monitor["selector"]["matchLabels"] == selector == one(docs, "Service")["spec"]["selector"]
    assert service_monitor["endpoints"][0]["port"] == "metrics"
    assert service_monitor["endpoints"][0]["metricRelabelings"][0]["action"] == "drop"
    assert one(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    rule = one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"][0]
    assert rule["labels"] == {"severity": "warning", "team": "ml"}
    assert "--verbose" in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]

    dashboard = one(docs, "ConfigMap", "kubenas-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "kubenas"}
    stored = cluster.get(f"/api/v1/namespaces/{NS}/configmaps/kubenas-dashboard")
    assert stored["data"]["kubenas.json"] == DASHBOARD.read_text()
    assert json.loads(stored["data"]["kubenas.json"])["panels"]


def test_default_install_has_no_optional_part(helm):
    kinds = {doc["kind"] for doc in manifest(helm, "default")}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert find(manifest(helm, "default"), "ConfigMap", "kubenas-dashboard") == []


def test_prometheus_rule_equals_the_alerts_file(helm):
    if not ALERTS_FILE.exists():
        pytest.fail(f"{ALERTS_FILE.relative_to(ROOT)} is missing: the chart's alerts have nothing to match")
    rendered = one(manifest(helm, "rules"), "PrometheusRule", OPERATOR)
    assert rendered["spec"]["groups"] == yaml.safe_load(ALERTS_FILE.read_text())["groups"]
    stored = helm["clusters"]["rules"].get(f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/prometheusrules/{OPERATOR}")
    assert stored["spec"]["groups"] == rendered["spec"]["groups"]


def test_prometheus_rule_thresholds_are_values(helm):
    rules = {rule["alert"]: rule for rule in one(manifest(helm, "tuned-rules"), "PrometheusRule")["spec"]["groups"][0]["rules"]}
    assert rules["KubenasChildrenFailing"]["expr"].endswith("* 60 > 0.5")
    assert rules["KubenasChildrenFailing"]["for"] == "15m"
    assert rules["KubenasNoChildFinished"]["expr"].endswith("> 5400")
    assert "in the last 90 minutes" in rules["KubenasNoChildFinished"]["annotations"]["description"]
    assert rules["KubenasNoChildFinished"]["annotations"]["summary"].endswith("no child finished for 90 minutes")
    assert rules["KubenasOperatorDown"]["expr"] == 'absent(up{job="prometheus/kubenas"} == 1)'
    assert rules["KubenasOperatorDown"]["for"] == "2m"
    assert "for 2 minutes" in rules["KubenasOperatorDown"]["annotations"]["description"]
    # Prometheus' templating went through Helm untouched.
    assert "{{ $labels.namespace }}/{{ $labels.search }}" in rules["KubenasSearchFailed"]["annotations"]["summary"]


def test_operator_job_defaults_to_what_a_podmonitor_gives(helm):
    docs = manifest(helm, "podmonitor-only")
    rules = one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
    down = next(rule for rule in rules if rule["alert"] == "KubenasOperatorDown")
    # Prometheus Operator names a PodMonitor's job "<namespace>/<podmonitor name>".
    assert down["expr"] == 'absent(up{job="kubenas-pm/pm-kubenas-operator"} == 1)'
    assert one(docs, "PodMonitor")["metadata"]["name"] == "pm-kubenas-operator"


def test_rendered_rules_pass_promtool(helm, tmp_path):
    promtool = executable("promtool")
    for label in ("rules", "tuned-rules"):
        rules = tmp_path / f"{label}.yaml"
        rules.write_text(yaml.safe_dump({"groups": one(manifest(helm, label), "PrometheusRule")["spec"]["groups"]}))
        done = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{label}: {done.stdout}{done.stderr}"
