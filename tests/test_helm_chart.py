"""The Helm chart (helm/kubenas) with the real `helm` CLI (the v3.22.0 `make tools` builds)
against real clusters (tests/cluster_harness.py): `lint --strict`, `template`, `install
--create-namespace`, `upgrade` and `uninstall`.

Two clusters, the installs that would fight over the cluster-scoped CRDs kept apart:
- "main": the defaults (release kubenas in kubenas-system, a namespace held to Pod Security
  "restricted", `--wait`; only the metrics and health ports are free ones, as pods share
  this machine's network), whose operator Deployment really runs: a pod of the process
  kubelet, `kubenas operator` through its image map, in-cluster on its projected
  service-account token. It carries searches to Succeeded, before and after an upgrade;
  then the release is uninstalled (the CRDs stay) and reinstalled with crds.keep=false
  (uninstalling it deletes them). Next to it the watch scopes "namespaces" and "cluster"
  (crds.create=false), and the values the schema refuses.
- "all-on": the Prometheus Operator's CRDs (tests/fixtures), ci/all-on-values.yaml, and
  the PrometheusRule variants (crds.create=false).

Only one operator per cluster runs: the other releases' pods are parked on a node label
no node has (PARKED). Two operators would bind the same ports on this machine's one
network, and one watching the whole cluster would take the default release's searches.

The lifecycle tests (search, upgrade, uninstall) come last in this file, in that order:
pytest runs a module's tests in file order, and the uninstall ends the "main" release.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kubenas.localcluster import binaries
from tests import manifest_checks
from tests.cluster_harness import NAS, Cluster, apply, free_port, search_manifest, tool, wait_for
from tests.manifest_checks import CLUSTER_WIDE_EXTRA_RULES, DOCUMENTED_RULES
from tests.tools import ROOT, executable

CHART = ROOT / "helm" / "kubenas"
ALL_ON_VALUES = CHART / "ci" / "all-on-values.yaml"
DASHBOARD = CHART / "dashboards" / "kubenas.json"
ALERTS_FILE = ROOT / "manifests" / "monitoring" / "kubenas-alerts.yaml"
CRDS = ROOT / "manifests" / "crds"
MONITORING_CRDS = Path(__file__).parent / "fixtures" / "monitoring.coreos.com-crds.yaml"

NS = "kubenas-system"
OPERATOR = "kubenas-operator"
OPERATOR_USER = f"system:serviceaccount:{NS}:{OPERATOR}"
POLICY = f"kubenas-{NS}-search-creators-may-create-jobs"  # the admission policy (cluster-scoped)
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
CRD_NAMES = ("nastrials.kubenas.io", "neuralarchitecturesearches.kubenas.io")
NO_CRDS = {"crds": {"create": False}}
# No node has this label: the Deployment's pod stays Pending (see the module's docstring).
PARKED = {"nodeSelector": {"kubenas.io/test-parked": "true"}}
TUNED_RULES = {"enabled": True, "childFailuresPerMinute": 0.5, "childFailuresFor": "15m",
               "noChildFinishedMinutes": 90, "operatorDownFor": "2m", "operatorJob": "prometheus/kubenas"}
HELM_TIMEOUT = "120s"  # --wait: the operator's pod imports PyTorch before it listens

# label: (release, namespace, values files, values); installed in this order.
MAIN_INSTALLS: dict[str, tuple[str, str, tuple[Path, ...], dict]] = {
    "default": ("kubenas", NS, (), {}),
    "namespaces": ("multi", "kubenas-multi", (),
                   NO_CRDS | PARKED | {"watch": {"scope": "namespaces", "namespaces": ["team-a", "team-b"]}}),
    "cluster": ("wide", "kubenas-wide", (), NO_CRDS | PARKED | {"watch": {"scope": "cluster"}}),
}
ALL_ON_INSTALLS: dict[str, tuple[str, str, tuple[Path, ...], dict]] = {
    "all-on": ("kubenas", NS, (ALL_ON_VALUES,), PARKED),
    "tuned-rules": ("tuned", "kubenas-tuned", (), NO_CRDS | PARKED | {"prometheusRule": TUNED_RULES}),
    "podmonitor-only": ("pm", "kubenas-pm", (),
                        NO_CRDS | PARKED | {"podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}),
    # Release "kubenas" again (the alerts file names the job kubenas-operator), in a namespace of its own.
    "rules": ("kubenas", "kubenas-rules", (), NO_CRDS | PARKED | {"prometheusRule": {"enabled": True}}),
}
# Rendered with `helm template` only: label -> (release, namespace, values).
TEMPLATES: dict[str, tuple[str, str, dict]] = {
    "default": ("kubenas", NS, {}),
    "no-keep": ("kubenas", NS, {"crds": {"keep": False}}),
    "rules": ("kubenas", NS, {"prometheusRule": {"enabled": True}}),
    "no-policy": ("kubenas", NS, {"admissionPolicy": {"enabled": False}}),
    "tables": ("kubenas", NS, {"tables": {"volume": {"persistentVolumeClaim": {"claimName": "nas-tables"}}}}),
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
    "relative-tables-path": ({"tables": {"mountPath": "tables"}}, "'/tables/mountPath'"),
}

# What the operator calls, per (apiGroup, resource): verbs — the raw manifests' list, which
# tests/test_operator_e2e.py checks against the calls operators really make.
OPERATOR_RULES = DOCUMENTED_RULES
CLUSTER_ONLY_RULES = CLUSTER_WIDE_EXTRA_RULES


# -- the helm CLI ----------------------------------------------------------------------


class Helm:
    """The real helm, with its cache, config and data folders under `home` (nothing of
    the user's), talking to the cluster of `kubeconfig` only."""

    def __init__(self, home: Path, kubeconfig: Path | None = None) -> None:
        self.binary = tool("helm")
        self.home = home
        self.kubeconfig = kubeconfig
        self.env = {name: value for name, value in os.environ.items()
                    if not name.startswith("HELM_") and name != "KUBECONFIG"}
        self.env |= {f"HELM_{kind}_HOME": str(home / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")}

    def run(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        cluster = ["--kubeconfig", str(self.kubeconfig)] if self.kubeconfig else []
        done = subprocess.run([self.binary, *args, *cluster], capture_output=True, text=True, env=self.env,
                              timeout=timeout, cwd=ROOT)
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done

    def values_args(self, label: str, files: tuple[Path, ...] = (), values: dict | None = None) -> list[str]:
        """-f for each file, then for `values` written to a file (it wins over the files)."""
        args = [arg for file in files for arg in ("--values", str(file))]
        if values:
            path = self.home / "values" / f"{label}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(values))
            args += ["--values", str(path)]
        return args

    def install(self, label: str, release: str, namespace: str, files: tuple[Path, ...] = (),
                values: dict | None = None, *, wait: bool = False) -> tuple[dict, str]:
        """(the release as `--output json` gives it, helm's stderr: warnings)."""
        done = self.run("install", release, str(CHART), "--namespace", namespace, "--create-namespace",
                        *self.values_args(label, files, values), "--output", "json",
                        *(["--wait", "--timeout", HELM_TIMEOUT] if wait else []))
        return json.loads(done.stdout), done.stderr

    def template(self, label: str, release: str, namespace: str, values: dict | None = None) -> list[dict]:
        done = self.run("template", release, str(CHART), "--namespace", namespace,
                        *self.values_args(label, (), values))
        return manifest_checks.documents(done.stdout)


def helm_home(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    return tmp_path_factory.mktemp(f"helm-{name}")


@dataclass
class Installs:
    """A cluster, a helm for it, and what each install answered."""

    cluster: Cluster
    helm: Helm
    releases: dict[str, dict] = field(default_factory=dict)  # label -> release (JSON)
    warnings: dict[str, str] = field(default_factory=dict)  # label -> helm's stderr
    specs: dict[str, tuple[str, str, tuple[Path, ...], dict]] = field(default_factory=dict)  # label -> what was asked

    def install(self, label: str, spec: tuple[str, str, tuple[Path, ...], dict], *, wait: bool = False) -> None:
        self.specs[label] = spec
        release, namespace, files, values = spec
        self.releases[label], self.warnings[label] = self.helm.install(label, release, namespace, files, values,
                                                                       wait=wait)

    def manifest(self, label: str) -> list[dict]:
        return manifest_checks.documents(self.releases[label]["manifest"])


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory):
    # Under /tmp, as pytest's folders are: the chart's pod mounts an emptyDir at /tmp over
    # the folder that holds its other volumes, which the kubelet must still mount.
    cluster = Cluster(workdir=tmp_path_factory.mktemp("main")).start()
    try:
        installs = Installs(cluster, Helm(helm_home(tmp_path_factory, "main"), cluster.kubeconfig))
        # The operator's namespace, held to "restricted" (enforce and warn) before the chart's pod
        # comes; `--create-namespace` finds it. The watched ones exist beforehand, as the chart asks.
        for namespace in (NS, "team-a", "team-b"):
            cluster.namespace(namespace)
        for label, (release, namespace, files, values) in MAIN_INSTALLS.items():
            if label == "default":
                # Pods share this machine's network: free ports, not 8080 and 8081, whatever else runs here.
                values = values | {"metrics": {"port": free_port()}, "health": {"port": free_port()}}
            installs.install(label, (release, namespace, files, values), wait=label == "default")
        yield installs
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def all_on(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(workdir=tmp_path_factory.mktemp("all-on")).start()
    try:
        installs = Installs(cluster, Helm(helm_home(tmp_path_factory, "all-on"), cluster.kubeconfig))
        cluster.install_crds(manifest_checks.crd_documents(MONITORING_CRDS))
        for label, spec in ALL_ON_INSTALLS.items():
            installs.install(label, spec)
        yield installs
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm without a cluster: version, lint, template."""
    return Helm(helm_home(tmp_path_factory, "offline"))


@pytest.fixture(scope="module")
def templates(offline: Helm) -> dict[str, list[dict]]:
    return {label: offline.template(label, release, namespace, values)
            for label, (release, namespace, values) in TEMPLATES.items()}


@pytest.fixture(scope="module")
def refusals(main: Installs) -> dict[str, subprocess.CompletedProcess]:
    """`helm install` of each of BAD_VALUES into the main cluster, all at once."""
    helm = main.helm
    running = {
        label: subprocess.Popen(
            [helm.binary, "install", label, str(CHART), "--namespace", "kubenas-bad", "--create-namespace",
             *helm.values_args(f"bad-{label}", (), values), "--kubeconfig", str(helm.kubeconfig)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=helm.env, cwd=ROOT)
        for label, (values, _) in BAD_VALUES.items()
    }
    answers = {}
    for label, process in running.items():
        stdout, stderr = process.communicate(timeout=120)
        answers[label] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return answers


def all_rendered(request: pytest.FixtureRequest, label: str) -> list[dict]:
    """The objects of an install (from its release) or of a `helm template` run."""
    for fixture, installs in (("main", MAIN_INSTALLS), ("all_on", ALL_ON_INSTALLS)):
        if label in installs:
            return request.getfixturevalue(fixture).manifest(label)
    return request.getfixturevalue("templates")[label]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def resource_path(cluster: Cluster, document: dict) -> str:
    """The object's URL path, with the plural from the cluster's discovery."""
    api_version, kind = document["apiVersion"], document["kind"]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    resources = cluster.get(base)["resources"]
    resource = next(r for r in resources if r["kind"] == kind and "/" not in r["name"])
    namespace = document["metadata"].get("namespace")
    scope = f"/namespaces/{namespace}" if resource["namespaced"] else ""
    return f"{base}{scope}/{resource['name']}/{document['metadata']['name']}"


def stored(cluster: Cluster, path: str) -> dict | None:
    """The object at `path`, or None (404)."""
    return cluster.get(path)


def rules_of(role: dict) -> dict[tuple[str, str], set[str]]:
    rules: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                rules.setdefault((group, resource), set()).update(rule["verbs"])
    return rules


# -- the tool, lint and schema -----------------------------------------------------------


def test_helm_is_the_pinned_release(offline):
    version = offline.run("version", "--template", "{{.Version}}").stdout.strip()
    assert version == binaries.HELM_VERSION == "v3.22.0"


@pytest.mark.parametrize("values", [None, ALL_ON_VALUES], ids=["defaults", "all-on"])
def test_lint_strict_reports_no_error_or_warning(offline, values):
    done = offline.run("lint", "--strict", str(CHART), *(["--values", str(values)] if values else []), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # Helm's severities: [INFO] (e.g. "icon is recommended") passes --strict; [WARNING] and [ERROR] do not.
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout
    assert not re.search(r"\[(WARNING|ERROR)\]", done.stdout + done.stderr), done.stdout + done.stderr


@pytest.mark.parametrize("label", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(main, refusals, label):
    answer = refusals[label]
    values, pointer = BAD_VALUES[label]
    assert answer.returncode != 0, f"the schema accepted {values}"
    assert "values don't meet the specifications of the schema" in answer.stderr, answer.stderr
    assert pointer in answer.stderr, answer.stderr
    # Refused before anything reached the cluster: no release, no namespace.
    assert main.helm.run("list", "--all", "--namespace", "kubenas-bad", "--short").stdout.strip() == ""
    assert stored(main.cluster, "/api/v1/namespaces/kubenas-bad") is None


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


def test_default_install_creates_the_objects_shared_md_names(main):
    docs = main.manifest("default")
    cluster = main.cluster
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
        ("ValidatingAdmissionPolicy", "", POLICY),
        ("ValidatingAdmissionPolicyBinding", "", POLICY),
    ])
    for doc in docs:
        found = stored(cluster, resource_path(cluster, doc))
        assert found is not None, f"{doc['kind']} {doc['metadata']['name']} is not in the cluster"
        assert found["metadata"]["annotations"]["meta.helm.sh/release-name"] == "kubenas"
        for key, value in {"app.kubernetes.io/name": "kubenas", "app.kubernetes.io/part-of": "kubenas",
                           "app.kubernetes.io/managed-by": "Helm"}.items():
            assert found["metadata"]["labels"][key] == value, (doc["kind"], key)
    # Helm keeps the release in a Secret of its namespace (the default storage driver).
    release = main.releases["default"]
    assert release["version"] == 1 and release["info"]["status"] == "deployed"
    assert stored(cluster, f"/api/v1/namespaces/{NS}/secrets/sh.helm.release.v1.kubenas.v1")["type"] == \
        "helm.sh/release.v1"


def test_default_install_passes_pod_security_restricted(main):
    """kubenas-system enforces and warns "restricted": the API server warned of nothing
    (helm prints its warnings) and admitted the operator's pod."""
    assert "PodSecurity" not in main.warnings["default"] and "would violate" not in main.warnings["default"]
    labels = stored(main.cluster, f"/api/v1/namespaces/{NS}")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert len(operator_pods(main)) == 1


def test_template_renders_what_install_installed(main):
    release, namespace, files, values = main.specs["default"]
    assert main.helm.template("default", release, namespace, values) == main.manifest("default")


def test_default_deployment_runs_the_operator_as_shared_md_says(templates):
    docs = templates["default"]
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


def test_tables_volume_is_mounted_read_only_and_named_to_the_operator(templates):
    """No table directory by default (built-in tables only); a volume becomes --tabular-dir."""
    default = one(templates["default"], "Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert "--tabular-dir" not in default["containers"][0]["args"]
    pod = one(templates["tables"], "Deployment", OPERATOR)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][-2:] == ["--tabular-dir", "/var/lib/kubenas/tables"]
    assert {"name": "tables", "mountPath": "/var/lib/kubenas/tables", "readOnly": True} in container["volumeMounts"]
    assert {"name": "tables", "persistentVolumeClaim": {"claimName": "nas-tables"}} in pod["volumes"]


def test_notes_say_what_is_watched(main):
    assert "The operator watches: kubenas-system." in main.releases["default"]["info"]["notes"]
    assert "The operator watches: team-a, team-b." in main.releases["namespaces"]["info"]["notes"]
    assert "The operator watches every namespace." in main.releases["cluster"]["info"]["notes"]


def test_trainer_defaults_configmap_holds_shared_md_defaults(main):
    from kubenas.operator.trainer_defaults import TrainerDefaults  # what the operator reads it with

    configmap = one(main.manifest("default"), "ConfigMap", "kubenas-trainer-defaults")
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
def test_rendered_objects_pass_the_manifest_checks(request, all_on, label):
    docs = all_rendered(request, label)
    custom = manifest_checks.validate_builtin(docs)
    # Only the Prometheus Operator's kinds have no built-in schema; the all-on cluster serves
    # them (the fixture CRDs) and admits them in a dry run (no unknown field, types, patterns).
    assert {doc["kind"] for doc in custom} <= {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    manifest_checks.validate_custom(all_on.cluster, custom)
    checked = manifest_checks.check_restricted(all_on.cluster, docs)
    assert any(path.startswith("Deployment/") for path in checked), checked


# -- CRDs ------------------------------------------------------------------------------


def test_crd_copies_equal_manifests_crds():
    """helm/kubenas/files/crds/ is a copy of manifests/crds/ (Helm reads nothing outside the chart)."""
    copies = {path.name: path.read_text() for path in (CHART / "files" / "crds").glob("*.yaml")}
    originals = {path.name: path.read_text() for path in CRDS.glob("*.yaml")}
    assert copies.keys() == originals.keys()
    stale = [name for name in originals if copies[name] != originals[name]]
    assert not stale, f"helm/kubenas/files/crds/ differs from manifests/crds/ ({stale}): run `make crds`"



def test_admission_policy_is_the_manifests_one(templates):
    """The chart's policy and binding say what manifests/base/admission-policy.yaml says
    (tests/test_admission_policy.py tries that one on the API server)."""
    originals = {doc["kind"]: doc for doc in yaml.safe_load_all((ROOT / "manifests" / "base" /
                                                                   "admission-policy.yaml").read_text())}
    policy = one(templates["default"], "ValidatingAdmissionPolicy", POLICY)
    binding = one(templates["default"], "ValidatingAdmissionPolicyBinding", POLICY)
    assert policy["spec"] == originals["ValidatingAdmissionPolicy"]["spec"]
    assert binding["spec"] == {**originals["ValidatingAdmissionPolicyBinding"]["spec"], "policyName": POLICY}
    assert not find(templates["no-policy"], "ValidatingAdmissionPolicy")


def test_crds_are_kept_by_default_and_otherwise_unchanged(main):
    cluster = main.cluster
    rendered = {doc["metadata"]["name"]: doc for doc in find(main.manifest("default"), "CustomResourceDefinition")}
    originals = {doc["metadata"]["name"]: doc for doc in manifest_checks.crd_documents(CRDS)}
    assert rendered.keys() == originals.keys() == set(CRD_NAMES)
    for name, crd in rendered.items():
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kubenas"
        # The round trip through fromYaml/toYaml changes nothing else.
        assert {**crd, "metadata": {"name": name}} == originals[name]
        found = stored(cluster, CRD_PATH.format(name=name))
        assert found["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert {c["type"]: c["status"] for c in found["status"]["conditions"]}["Established"] == "True"
    # The CRDs registered their kinds: the cluster serves them.
    assert cluster.get(NAS.format(ns=NS))["kind"] == "NeuralArchitectureSearchList"


def test_crds_keep_false_drops_the_annotation(templates):
    crds = find(templates["no-keep"], "CustomResourceDefinition")
    assert len(crds) == 2
    assert all("helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {}) for crd in crds)


@pytest.mark.parametrize("label", ["namespaces", "cluster"])
def test_crds_create_false_renders_no_crd(main, label):
    assert find(main.manifest(label), "CustomResourceDefinition") == []


# -- watch scopes ----------------------------------------------------------------------


def test_scope_namespace_gets_a_role_in_the_release_namespace(main):
    docs = main.manifest("default")
    assert find(docs, "ClusterRole") == [] and find(docs, "ClusterRoleBinding") == []
    assert rules_of(one(docs, "Role", OPERATOR)) == OPERATOR_RULES
    binding = one(docs, "RoleBinding", OPERATOR)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": OPERATOR}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": OPERATOR, "namespace": NS}]


def test_scope_namespaces_gets_a_role_in_each_watched_namespace(main):
    docs = main.manifest("namespaces")
    cluster = main.cluster
    name = "multi-kubenas-operator"
    assert find(docs, "ClusterRole") == [] and find(docs, "ClusterRoleBinding") == []
    roles = find(docs, "Role")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    for namespace in ("team-a", "team-b"):
        role = stored(cluster, f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}")
        assert role is not None and rules_of(role) == OPERATOR_RULES
        binding = stored(cluster, f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/{name}")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "kubenas-multi"}]
    # No Role where the operator runs: it reads nothing there.
    assert stored(cluster, f"/apis/rbac.authorization.k8s.io/v1/namespaces/kubenas-multi/roles/{name}") is None
    args = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == ["--namespace", "team-a", "--namespace", "team-b"] and "--all-namespaces" not in args
    # `--create-namespace` made the release's namespace.
    assert stored(cluster, "/api/v1/namespaces/kubenas-multi") is not None


def test_scope_cluster_gets_a_clusterrole_with_the_extra_rules(main):
    docs = main.manifest("cluster")
    cluster = main.cluster
    name = "wide-kubenas-operator"
    assert find(docs, "Role") == [] and find(docs, "RoleBinding") == []
    role = stored(cluster, f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}")
    assert rules_of(role) == OPERATOR_RULES | CLUSTER_ONLY_RULES
    binding = stored(cluster, f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "kubenas-wide"}]
    args = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "--all-namespaces" and "--namespace" not in args


# -- optional parts --------------------------------------------------------------------


def test_all_on_install_creates_every_optional_part(all_on):
    docs = all_on.manifest("all-on")
    cluster = all_on.cluster
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        rendered = one(docs, kind, OPERATOR)
        found = stored(cluster, resource_path(cluster, rendered))
        assert found is not None, f"{kind} is not in the cluster"
        assert found["metadata"]["labels"]["release"] == "prometheus"
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
    found = stored(cluster, f"/api/v1/namespaces/{NS}/configmaps/kubenas-dashboard")
    assert found["data"]["kubenas.json"] == DASHBOARD.read_text()
    assert json.loads(found["data"]["kubenas.json"])["panels"]


def test_default_install_has_no_optional_part(main):
    kinds = {doc["kind"] for doc in main.manifest("default")}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert find(main.manifest("default"), "ConfigMap", "kubenas-dashboard") == []


def test_prometheus_rule_equals_the_alerts_file(all_on, templates):
    if not ALERTS_FILE.exists():
        pytest.fail(f"{ALERTS_FILE.relative_to(ROOT)} is missing: the chart's alerts have nothing to match")
    # Release kubenas in kubenas-system, as the file's descriptions say (`kubectl -n kubenas-system`).
    rendered = one(templates["rules"], "PrometheusRule", OPERATOR)
    assert rendered["spec"]["groups"] == yaml.safe_load(ALERTS_FILE.read_text())["groups"]
    # The API server (the fixture CRD) stores an installed one unchanged.
    installed = one(all_on.manifest("rules"), "PrometheusRule", OPERATOR)
    path = f"/apis/monitoring.coreos.com/v1/namespaces/kubenas-rules/prometheusrules/{OPERATOR}"
    found = stored(all_on.cluster, path)
    assert found["spec"]["groups"] == installed["spec"]["groups"]


def test_prometheus_rule_thresholds_are_values(all_on):
    groups = one(all_on.manifest("tuned-rules"), "PrometheusRule")["spec"]["groups"]
    rules = {rule["alert"]: rule for rule in groups[0]["rules"]}
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


def test_operator_job_defaults_to_what_a_podmonitor_gives(all_on):
    docs = all_on.manifest("podmonitor-only")
    rules = one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
    down = next(rule for rule in rules if rule["alert"] == "KubenasOperatorDown")
    # Prometheus Operator names a PodMonitor's job "<namespace>/<podmonitor name>".
    assert down["expr"] == 'absent(up{job="kubenas-pm/pm-kubenas-operator"} == 1)'
    assert one(docs, "PodMonitor")["metadata"]["name"] == "pm-kubenas-operator"


def test_rendered_rules_pass_promtool(all_on, tmp_path):
    promtool = executable("promtool")
    for label in ("rules", "tuned-rules"):
        rules = tmp_path / f"{label}.yaml"
        rules.write_text(yaml.safe_dump({"groups": one(all_on.manifest(label), "PrometheusRule")["spec"]["groups"]}))
        done = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{label}: {done.stdout}{done.stderr}"


def test_parked_releases_run_no_operator(main, all_on):
    """Only the default release's operator runs (PARKED): the others' pods wait for a node."""
    for installs, namespaces in ((main, ["kubenas-multi", "kubenas-wide"]),
                                 (all_on, [NS, "kubenas-tuned", "kubenas-pm", "kubenas-rules"])):
        for namespace in namespaces:
            pods = installs.cluster.items(f"/api/v1/namespaces/{namespace}/pods")
            assert pods and all(pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
                                for pod in pods), (namespace, [pod["status"] for pod in pods])


# -- the operator at work: search, upgrade, uninstall (last, in this order) -------------------


def operator_pods(installs: Installs, namespace: str = NS) -> list[dict]:
    return [pod for pod in installs.cluster.items(f"/api/v1/namespaces/{namespace}/pods",
                                                  labelSelector="app.kubernetes.io/component=operator")
            if not pod["metadata"].get("deletionTimestamp")]


def running_operator(installs: Installs) -> dict:
    """The release's one operator pod, once it runs and is Ready."""
    def ready() -> dict | None:
        pods = operator_pods(installs)
        if len(pods) != 1 or pods[0]["status"].get("phase") != "Running":
            return None
        conditions = {c["type"]: c["status"] for c in pods[0]["status"].get("conditions") or []}
        return pods[0] if conditions.get("Ready") == "True" else None
    return wait_for(ready, timeout=120, what=lambda: f"one Running, Ready operator pod: {pod_states(installs)}")


def pod_states(installs: Installs) -> list:
    return [(pod["metadata"]["name"], pod["status"].get("phase"), pod["status"].get("containerStatuses"))
            for pod in installs.cluster.items(f"/api/v1/namespaces/{NS}/pods")]


def operator_log(installs: Installs, pod: str) -> str:
    return installs.cluster.kubectl("logs", "--namespace", NS, pod, "--tail", "40", check=False).stdout


def run_search(installs: Installs, name: str, operator_pod: str, **spec: Any) -> dict:
    """Apply a small search (fake trainer, restricted pods) in NS and wait until it Succeeded."""
    cluster = installs.cluster
    apply(cluster, search_manifest(name, namespace=NS, **spec))
    path = f"{NAS.format(ns=NS)}/{name}"

    def phase() -> str | None:
        return ((stored(cluster, path) or {}).get("status") or {}).get("phase")
    wait_for(lambda: phase() == "Succeeded", timeout=90,
             what=lambda: f"{name} to succeed (is {phase()}); operator log:\n{operator_log(installs, operator_pod)}")
    return stored(cluster, path)


def created_jobs(installs: Installs, search: str) -> list[dict]:
    """The audit events of the search's Jobs being created."""
    return [event for event in installs.cluster.audit_events()
            if event["verb"] == "create" and event.get("objectRef", {}).get("resource") == "jobs"
            and event["objectRef"].get("namespace") == NS and event["stage"] == "ResponseComplete"
            and event["responseStatus"]["code"] == 201
            and (event["objectRef"].get("name") or "").startswith(f"{search}-")]


def test_the_operator_pod_carries_a_search_to_succeeded(main):
    """The chart's Deployment runs `kubenas operator` in the cluster, on its projected
    service-account token; its children are admitted by PodSecurity "restricted"."""
    pod = running_operator(main)
    name = pod["metadata"]["name"]
    container = pod["spec"]["containers"][0]
    token_mounts = [mount for mount in container["volumeMounts"]
                    if mount["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"]
    assert len(token_mounts) == 1, container["volumeMounts"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == token_mounts[0]["name"])
    assert any("serviceAccountToken" in source for source in volume["projected"]["sources"])

    values = main.specs["default"][3]
    args = container["args"]
    assert args[args.index("--metrics-port") + 1] == str(values["metrics"]["port"])

    search = run_search(main, "helm-digits", name)
    assert search["status"]["progress"] == "4/4"
    # The pod's ports (every pod's IP is 127.0.0.1 here): liveness and the search's metrics.
    with urllib.request.urlopen(f"http://127.0.0.1:{values['health']['port']}/healthz", timeout=10) as answer:
        assert answer.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{values['metrics']['port']}/metrics", timeout=10) as answer:
        metrics = answer.read().decode()
    phases = {sample.labels["phase"]: sample.value for family in text_string_to_metric_families(metrics)
              for sample in family.samples
              if sample.name == "kubenas_search_phase" and sample.labels.get("search") == "helm-digits"}
    assert phases.get("Succeeded") == 1, phases
    trials = main.cluster.items(f"/apis/kubenas.io/v1alpha1/namespaces/{NS}/nastrials",
                                labelSelector="kubenas.io/search=helm-digits")
    assert len(trials) == 4 and all(trial["status"]["phase"] == "Succeeded" for trial in trials)
    # The children's Jobs were created by the operator's ServiceAccount with the token bound to its pod.
    events = created_jobs(main, "helm-digits")
    assert len(events) == 4, [event["objectRef"] for event in events]
    for event in events:
        assert event["user"]["username"] == OPERATOR_USER
        assert event["user"]["extra"]["authentication.kubernetes.io/pod-name"] == [name]
    # Their pods ran in kubenas-system ("restricted") to completion.
    children = main.cluster.items(f"/api/v1/namespaces/{NS}/pods", labelSelector="kubenas.io/search=helm-digits")
    assert children and all(child["status"]["phase"] == "Succeeded" for child in children), \
        [child["status"] for child in children]


def test_upgrade_rolls_the_operator_which_carries_on(main):
    before = running_operator(main)["metadata"]["name"]
    finished = {search["metadata"]["name"] for search in main.cluster.items(NAS.format(ns=NS))
                if (search.get("status") or {}).get("phase") == "Succeeded"}
    done = main.helm.run("upgrade", "kubenas", str(CHART), "--namespace", NS, "--reuse-values",
                         "--set", "verbose=true", "--wait", "--timeout", HELM_TIMEOUT, "--output", "json")
    release = json.loads(done.stdout)
    assert release["version"] == 2 and release["info"]["status"] == "deployed"
    assert "PodSecurity" not in done.stderr, done.stderr
    history = json.loads(main.helm.run("history", "kubenas", "--namespace", NS, "--output", "json").stdout)
    assert [(entry["revision"], entry["status"]) for entry in history] == [(1, "superseded"), (2, "deployed")]
    # The new pod template (--verbose) replaced the pod (strategy Recreate).
    pod = running_operator(main)
    assert pod["metadata"]["name"] != before
    assert "--verbose" in pod["spec"]["containers"][0]["args"]
    deployment = stored(main.cluster, f"/apis/apps/v1/namespaces/{NS}/deployments/{OPERATOR}")
    assert deployment["metadata"]["annotations"]["meta.helm.sh/release-name"] == "kubenas"
    # The upgraded operator runs a new search; the finished one stays finished.
    search = run_search(main, "after-upgrade", pod["metadata"]["name"], maxTrials=2)
    assert search["status"]["progress"] == "2/2"
    assert {event["user"]["extra"]["authentication.kubernetes.io/pod-name"][0]
            for event in created_jobs(main, "after-upgrade")} == {pod["metadata"]["name"]}
    assert finished <= {search["metadata"]["name"] for search in main.cluster.items(NAS.format(ns=NS))
                        if search["status"]["phase"] == "Succeeded"}


def test_uninstall_keeps_the_crds_unless_crds_keep_is_false(main):
    cluster = main.cluster
    searches_before = [search["metadata"]["name"] for search in cluster.items(NAS.format(ns=NS))]
    done = main.helm.run("uninstall", "kubenas", "--namespace", NS, "--wait", "--timeout", HELM_TIMEOUT)
    assert "These resources were kept due to the resource policy" in done.stdout + done.stderr
    for name in CRD_NAMES:
        crd = stored(cluster, CRD_PATH.format(name=name))
        assert crd is not None, f"{name} was deleted"
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The searches live on with their CRDs; everything else of the release is gone.
    assert [search["metadata"]["name"] for search in cluster.items(NAS.format(ns=NS))] == searches_before
    for path in (f"/apis/apps/v1/namespaces/{NS}/deployments/{OPERATOR}",
                 f"/api/v1/namespaces/{NS}/serviceaccounts/{OPERATOR}",
                 f"/api/v1/namespaces/{NS}/services/{OPERATOR}",
                 f"/api/v1/namespaces/{NS}/configmaps/kubenas-trainer-defaults",
                 f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles/{OPERATOR}",
                 f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings/{OPERATOR}"):
        assert stored(cluster, path) is None, f"{path} outlived the release"
    assert main.helm.run("list", "--all", "--namespace", NS, "--short").stdout.strip() == ""
    wait_for(lambda: not operator_pods(main), timeout=60, what="the operator pod to go")

    # Installed again with crds.keep=false, the release adopts the kept CRDs (their Helm
    # labels and annotations name it). Uninstall reads the policy from the release's
    # manifest, which has none now (Helm's adoption merges: the stored CRDs keep their
    # annotation until an upgrade from a keep=true release removes it): it deletes them.
    main.install("no-keep", ("kubenas", NS, (), {"crds": {"keep": False}}), wait=True)
    assert main.releases["no-keep"]["version"] == 1
    crds = find(main.manifest("no-keep"), "CustomResourceDefinition")
    assert sorted(crd["metadata"]["name"] for crd in crds) == sorted(CRD_NAMES)
    assert all("helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {}) for crd in crds)
    # The searches go first, while an operator runs: each holds kopf's finalizer until its
    # driver stops, and with the operator uninstalled with them their CRD would never go.
    running_operator(main)
    main.cluster.kubectl("delete", "neuralarchitecturesearches", "--all", "--namespace", NS, "--wait",
                         "--timeout", "60s", timeout=90)
    done = main.helm.run("uninstall", "kubenas", "--namespace", NS, "--wait", "--timeout", HELM_TIMEOUT)
    assert "kept due to the resource policy" not in done.stdout + done.stderr
    wait_for(lambda: all(stored(cluster, CRD_PATH.format(name=name)) is None for name in CRD_NAMES), timeout=60,
             what="the CRDs to be deleted")
    assert stored(cluster, "/apis/kubenas.io/v1alpha1") is None  # nothing serves the kinds any more
