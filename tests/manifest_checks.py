"""Checks of rendered Kubernetes manifests, shared by the raw-manifest and Helm chart tests.

- `documents`: the objects of a multi-document YAML text or file.
- `validate_builtin`: built-in kinds against the Kubernetes OpenAPI schemas
  (kubernetes-validate, strict: an unknown field is an error); kinds it has no schema for
  (custom resources, CRDs' instances) come back for `validate_custom`.
- `validate_custom`: custom resources as a real API server (tests/cluster_harness.Cluster)
  admits them: each is created with `?dryRun=All`, so the server prunes, defaults and
  validates it against its CRD's structural schema and CEL rules; fields the schema does
  not declare (kubectl's default strict field validation refuses them) come back as the
  server's field-validation warnings.
- `check_restricted`: every pod template, as a Pod created with `?dryRun=All` in a
  namespace whose real PodSecurity admission enforces the level ("restricted").

Each `validate_*`/`check_*` raises `ManifestError` listing every problem found, not just
the first; the `*_errors` functions return the same list for tests that expect failures.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

from tests.cluster_harness import Cluster, tool

# The newest Kubernetes release the installed kubernetes-validate has schemas for (1.37.0 ships
# 1.37); pinned, so a library upgrade does not silently change what is checked.
KUBERNETES_VERSION = "1.37"


class ManifestError(AssertionError):
    """Every problem found in a set of manifests, one per line."""

    def __init__(self, what: str, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"{what}: {len(errors)} problem(s)\n" + "\n".join(f"  - {error}" for error in errors))


def documents(text_or_path: str | Path) -> list[dict]:
    """The objects of a multi-document YAML text, or of a file (a Path, or a one-line str
    naming an existing file); empty documents are skipped and `kind: List` is flattened."""
    if isinstance(text_or_path, Path) or ("\n" not in text_or_path and Path(text_or_path).is_file()):
        text = Path(text_or_path).read_text()
    else:
        text = text_or_path
    found: list[dict] = []
    for document in yaml.safe_load_all(text):
        if not document:
            continue
        if not isinstance(document, dict):
            raise ManifestError("YAML", [f"a document is a {type(document).__name__}, not an object: {document!r}"])
        if document.get("kind") == "List" and document.get("apiVersion") == "v1":
            found += [item for item in document.get("items") or [] if item]
        else:
            found.append(document)
    return found


def name_of(document: dict) -> str:
    metadata = document.get("metadata") or {}
    namespace = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    return f"{document.get('apiVersion')} {document.get('kind')} {namespace}{metadata.get('name', '<no name>')}"


# -- built-in kinds --------------------------------------------------------------------


def builtin_errors(docs: Iterable[dict], *, kubernetes_version: str = KUBERNETES_VERSION
                   ) -> tuple[list[str], list[dict]]:
    """(every schema error of the built-in objects, the objects with no built-in schema)."""
    errors: list[str] = []
    unknown: list[dict] = []
    for document in docs:
        if not isinstance(document.get("apiVersion"), str) or not isinstance(document.get("kind"), str):
            errors.append(f"{name_of(document)}: apiVersion and kind must be strings")
            continue
        try:
            kubernetes_validate.validate(document, kubernetes_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.append(document)
        except kubernetes_validate.ValidationError as first:
            errors += [f"{name_of(document)}: {error}" for error in _all_schema_errors(document, kubernetes_version, first)]
    return errors, unknown


def _all_schema_errors(document: dict, version: str, first: kubernetes_validate.ValidationError) -> list[str]:
    """kubernetes-validate raises the best-matching error only; list them all with the same
    schemas (its bundled files), falling back to that one error if its layout changes."""
    def render(error: jsonschema.ValidationError) -> str:
        path = ".".join(str(item) for item in error.absolute_path) or "<root>"
        return f"{path}: {error.message}"

    try:
        api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", document["apiVersion"])
        schema_dir = f"v{first.version}.0-local-strict"
        schema = kv_utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/{document['kind'].lower()}-{api}.json",
                                          version)
        definitions = kv_utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", version)
        registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
        validator = jsonschema.validators.Draft202012Validator(schema, registry=registry)
        everything = sorted(validator.iter_errors(document), key=lambda error: list(map(str, error.absolute_path)))
        return [render(error) for error in everything] or [render(first)]
    except Exception:  # noqa: BLE001 -- the one error kubernetes-validate gave is still right
        return [render(first)]


def validate_builtin(docs: Iterable[dict], *, kubernetes_version: str = KUBERNETES_VERSION) -> list[dict]:
    """Raise ManifestError unless every built-in object passes the strict schema of
    `kubernetes_version`; return the objects of kinds it has no schema for (custom resources)."""
    errors, unknown = builtin_errors(docs, kubernetes_version=kubernetes_version)
    if errors:
        raise ManifestError(f"Kubernetes {kubernetes_version} schemas (strict)", errors)
    return unknown


# -- dry runs on a real API server --------------------------------------------------------


class Answer:
    """What the API server said to one call: the HTTP code, the body (the object, or a
    Status when refused) and its warnings (Warning headers, e.g. unknown fields)."""

    def __init__(self, code: int, body: Any, warnings: list[str]) -> None:
        self.code = code
        self.body = body
        self.warnings = warnings

    @property
    def refused(self) -> bool:
        return self.code >= 400

    @property
    def message(self) -> str:
        return self.body.get("message", "") if isinstance(self.body, dict) else str(self.body)

    def causes(self) -> list[dict]:
        """A refusal's Status details.causes that name a field: the "some validation rules
        were not checked" cause, whose field is "<nil>", is left out."""
        details = (self.body.get("details") or {}) if self.refused and isinstance(self.body, dict) else {}
        return [cause for cause in details.get("causes") or [] if cause.get("field") and cause["field"] != "<nil>"]

    @property
    def fields(self) -> list[str]:
        """The fields a refusal names, in order, once each."""
        return list(dict.fromkeys(cause["field"] for cause in self.causes()))

    @property
    def unknown_fields(self) -> list[str]:
        """The fields the server pruned as undeclared (fieldValidation=Warn): `unknown field "spec.x"`."""
        return [match for warning in self.warnings for match in re.findall(r'unknown field \\?"([^"\\]+)\\?"', warning)]

    def problems(self) -> list[str]:
        """Unknown fields, then each cause of a refusal ("field: why"), else its message."""
        found = [f'unknown field "{field}"' for field in self.unknown_fields]
        if not self.refused:
            return found
        named = [f"{cause['field']}: {cause.get('message', '')}" for cause in self.causes()]
        return found + (list(dict.fromkeys(named)) or [self.message])


def call(cluster: Cluster, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
         **params: str) -> Answer:
    """One call as the admin that, unlike Cluster.request, returns refusals and warnings
    (a 429, e.g. a new CRD's storage still initialising, is retried)."""
    code, headers, text = cluster.exchange(method, path, body, content_type=content_type, params=params or None)
    try:
        content = json.loads(text or "null")
    except json.JSONDecodeError:
        content = {"message": text}
    return Answer(code, content, [_warning_text(value) for value in headers.get_all("Warning") or []])


def _warning_text(header: str) -> str:
    """`299 - "text"` -> text."""
    match = re.fullmatch(r'\s*\d{3}\s+\S+\s+"(.*)"\s*', header, re.DOTALL)
    return match.group(1).replace('\\"', '"') if match else header


def collection_path(cluster: Cluster, document: dict, *, namespace: str | None) -> str | None:
    """The URL path the API server serves `document`'s kind at (from discovery), in
    `namespace` if the kind is namespaced; None if no API serves its kind and version."""
    api_version, kind = str(document.get("apiVersion", "")), document.get("kind")
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    listing = call(cluster, "GET", base)
    if listing.refused:
        return None
    for resource in listing.body.get("resources") or []:
        if resource["kind"] == kind and "/" not in resource["name"]:
            if resource["namespaced"]:
                return f"{base}/namespaces/{namespace or 'default'}/{resource['name']}"
            return f"{base}/{resource['name']}"
    return None


def dry_run_create(cluster: Cluster, document: dict, *, namespace: str | None = "default",
                   field_validation: str = "Warn") -> Answer:
    """POST `document` with ?dryRun=All (stored nowhere) into `namespace` (its own
    metadata.namespace is replaced: the checks run in a namespace of the test cluster).
    The answer is the object as the server would store it (pruned, defaulted), or the
    Status refusing it; a kind no API serves is a 404 saying so."""
    path = collection_path(cluster, document, namespace=namespace)
    if path is None:
        return Answer(404, {"message": "no CRD serves this kind and version"}, [])
    body = json.loads(json.dumps(document))
    metadata = body.setdefault("metadata", {})
    metadata.pop("namespace", None)
    if "/namespaces/" in path:
        metadata["namespace"] = namespace or "default"
    return call(cluster, "POST", path, body, dryRun="All", fieldValidation=field_validation)


# -- custom resources ------------------------------------------------------------------


def crd_documents(crds: Iterable[dict] | str | Path) -> list[dict]:
    """CRDs given as objects, or as a directory or file of YAML."""
    if isinstance(crds, (str, Path)):
        path = Path(crds)
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        crds = [document for file in files for document in documents(file)]
    return [crd for crd in crds if crd.get("kind") == "CustomResourceDefinition"]


def install_crds(cluster: Cluster, crds: Iterable[dict] | str | Path) -> list[str]:
    """Apply the CRDs (server-side validation of their schemas) and wait until they are
    served; return their names."""
    return cluster.install_crds(crd_documents(crds))


def custom_errors(cluster: Cluster, docs: Iterable[dict], crds: Iterable[dict] | str | Path | None = None, *,
                  namespace: str = "default") -> list[str]:
    """Every reason the real API server, serving `crds` (installed first if given), refuses
    the custom resources `docs`: a dry-run create of each, with fields the schema does not
    declare reported as kubectl's default strict field validation would refuse them."""
    if crds is not None:
        install_crds(cluster, crds)
    return [f"{name_of(document)}: {problem}" for document in docs
            for problem in dry_run_create(cluster, document, namespace=namespace).problems()]


def validate_custom(cluster: Cluster, docs: Iterable[dict], crds: Iterable[dict] | str | Path | None = None, *,
                    namespace: str = "default") -> None:
    """Raise ManifestError unless the API server admits every custom resource in `docs`."""
    errors = custom_errors(cluster, docs, crds, namespace=namespace)
    if errors:
        raise ManifestError("custom resources on the API server (dry run)", errors)


# -- pod security ------------------------------------------------------------------------

# Where each workload kind keeps the template of the pods it makes.
_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "PodTemplate": ("template",),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def pod_templates(document: dict) -> list[tuple[str, dict, dict]]:
    """(path of the pod spec, pod metadata, pod spec) for each pod a workload document makes."""
    kind = (document or {}).get("kind")
    if kind not in _TEMPLATE_PATHS:
        return []
    template: Any = document
    for key in _TEMPLATE_PATHS[kind]:
        template = template.get(key) if isinstance(template, dict) else None
    if not isinstance(template, dict):
        return []
    prefix = ".".join(_TEMPLATE_PATHS[kind])
    return [(f"{prefix}.spec" if prefix else "spec", template.get("metadata") or {}, template.get("spec") or {})]


def pod_security_namespace(cluster: Cluster, level: str = "restricted") -> str:
    """A namespace of `cluster` whose PodSecurity admission enforces `level`."""
    return cluster.namespace(f"pod-security-{level}", enforce=level)


def admit_pod(cluster: Cluster, spec: dict, *, namespace: str, name: str = "pod-security-check",
              metadata: dict | None = None) -> Answer:
    """A dry-run create of a Pod with `spec` (and the template's labels and annotations)
    in `namespace`: what the real admission chain, PodSecurity included, says of it. Its
    ServiceAccount is created first, as the ServiceAccount admission refuses pods without."""
    account = spec.get("serviceAccountName") or spec.get("serviceAccount")
    if account:
        created = call(cluster, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                       {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}})
        assert created.code in (201, 409), created.message
    kept = {key: value for key, value in (metadata or {}).items() if key in ("labels", "annotations")}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**kept, "name": name}, "spec": spec}
    return dry_run_create(cluster, pod, namespace=namespace, field_validation="Strict")


def restricted_errors(cluster: Cluster, docs: Iterable[dict], *, level: str = "restricted") -> list[str]:
    """Why the real API server refuses the pods of `docs`' workloads in a namespace
    enforcing Pod Security `level` (`violates PodSecurity "restricted:latest": ...`)."""
    namespace = pod_security_namespace(cluster, level)
    errors = []
    for document in docs:
        name = f"{document.get('kind')}/{(document.get('metadata') or {}).get('name', '')}"
        for path, metadata, spec in pod_templates(document):
            pod_name = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63] or "pod"
            answer = admit_pod(cluster, spec, namespace=namespace, name=pod_name, metadata=metadata)
            errors += [f"{name} {path}: {problem}" for problem in answer.problems()]
    return errors


def check_restricted(cluster: Cluster, docs: Iterable[dict], *, level: str = "restricted") -> list[str]:
    """Raise ManifestError unless the real PodSecurity admission, enforcing `level`,
    admits every pod template; return what was checked ("Kind/name path"), so a caller
    can see its workloads were."""
    docs = list(docs)
    errors = restricted_errors(cluster, docs, level=level)
    if errors:
        raise ManifestError(f"Pod Security {level!r} (the API server's PodSecurity admission)", errors)
    return [f"{document['kind']}/{document['metadata']['name']} {path}"
            for document in docs for path, _, _ in pod_templates(document)]


# The operator's RBAC, per (apiGroup, resource): verbs. The raw manifests and the chart must
# grant exactly this; tests/test_operator_e2e.py checks it against the calls operators make.
DOCUMENTED_RULES = {
    ("kubenas.io", "neuralarchitecturesearches"): {"list", "watch", "patch"},
    ("kubenas.io", "neuralarchitecturesearches/status"): {"patch"},
    ("kubenas.io", "nastrials"): {"create", "get", "list"},
    ("kubenas.io", "nastrials/status"): {"patch"},
    ("batch", "jobs"): {"create", "list", "watch"},
    ("", "pods"): {"list", "watch"},
    ("", "configmaps"): {"get", "create", "patch"},
    ("", "events"): {"create", "list"},
    ("kueue.x-k8s.io", "workloads"): {"list"},
}
CLUSTER_WIDE_EXTRA_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}


def kustomize(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize DIRECTORY` renders (client-side, no cluster), with
    the kubectl `make tools` builds (the one on PATH may be any release)."""
    done = subprocess.run([tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {directory}: {done.stderr}"
    return documents(done.stdout)
