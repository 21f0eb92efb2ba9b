"""Checks of rendered Kubernetes manifests, shared by the raw-manifest and Helm chart tests.

- `documents`: the objects of a multi-document YAML text or file.
- `validate_builtin`: built-in kinds against the Kubernetes OpenAPI schemas
  (kubernetes-validate, strict: an unknown field is an error); kinds it has no schema for
  (custom resources, CRDs' instances) come back for `validate_custom`.
- `validate_custom`: custom resources as the API server admits them, against their CRD's
  openAPIV3Schema, with the emulated cluster's validator (kubenas.testing.schema):
  metadata rules, unknown fields (kubectl's default strict field validation refuses them),
  defaults, then the schema.
- `check_restricted`: every pod template against the restricted Pod Security Standard.

Each `validate_*`/`check_*` raises `ManifestError` listing every problem found, not just
the first; the `*_errors` functions return the same list for tests that expect failures.
"""

from __future__ import annotations

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

from kubenas.testing import schema as crd_schema
from kubenas.testing.pod_security import document_violations, pod_templates
from tests.tools import executable

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


# -- custom resources ------------------------------------------------------------------


def crd_documents(crds: Iterable[dict] | str | Path) -> list[dict]:
    """CRDs given as objects, or as a directory or file of YAML."""
    if isinstance(crds, (str, Path)):
        path = Path(crds)
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        crds = [document for file in files for document in documents(file)]
    return [crd for crd in crds if crd.get("kind") == "CustomResourceDefinition"]


def custom_errors(docs: Iterable[dict], crds: Iterable[dict] | str | Path) -> list[str]:
    """Every reason the API server, given `crds`, would refuse the custom resources `docs`."""
    schemas: dict[tuple[str, str, str], tuple[dict, dict]] = {}
    errors: list[str] = []
    for crd in crd_documents(crds):
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
            errors += [f"CRD {crd['metadata']['name']} {version['name']}: {problem}"
                       for problem in crd_schema.check_structural(schema)]
            if version.get("served", True):
                schemas[(spec["group"], version["name"], spec["names"]["kind"])] = (crd, schema)
    for document in docs:
        group, _, version = str(document.get("apiVersion", "")).rpartition("/")
        found = schemas.get((group, version, document.get("kind")))
        if found is None:
            errors.append(f"{name_of(document)}: no CRD serves this kind and version")
            continue
        crd, schema = found
        problems = [str(error) for error in crd_schema.validate_object_meta(document)]
        if crd["spec"].get("scope") == "Cluster" and (document.get("metadata") or {}).get("namespace"):
            problems.append("metadata.namespace: a cluster-scoped resource has no namespace")
        pruned = crd_schema.prune(document, schema)
        problems += [f'unknown field "{path}"' for path in _removed_paths(document, pruned)]
        admitted = crd_schema.apply_defaults(pruned, schema)
        problems += [str(error) for error in crd_schema.validate(admitted, schema)]
        errors += [f"{name_of(document)}: {problem}" for problem in problems]
    return errors


def _removed_paths(before: Any, after: Any, prefix: str = "") -> list[str]:
    """The fields pruning took away: what a real server reports as unknown fields."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            path
            for key, value in before.items()
            for path in ([_join(prefix, key)] if key not in after else _removed_paths(value, after[key], _join(prefix, key)))
        ]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [path for index, (b, a) in enumerate(zip(before, after, strict=True))
                for path in _removed_paths(b, a, f"{prefix}[{index}]")]
    return []


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def validate_custom(docs: Iterable[dict], crds: Iterable[dict] | str | Path) -> None:
    """Raise ManifestError unless the API server would admit every custom resource in `docs`."""
    errors = custom_errors(docs, crds)
    if errors:
        raise ManifestError("custom resources against their CRDs", errors)


# -- pod security ------------------------------------------------------------------------


def restricted_errors(docs: Iterable[dict], *, level: str = "restricted") -> list[str]:
    return [message for document in docs for message in document_violations(document, level=level)]


def check_restricted(docs: Iterable[dict], *, level: str = "restricted") -> list[str]:
    """Raise ManifestError unless every pod template meets the Pod Security Standard `level`;
    return what was checked ("Kind/name path"), so a caller can see its workloads were."""
    docs = list(docs)
    errors = restricted_errors(docs, level=level)
    if errors:
        raise ManifestError(f"Pod Security Standard {level!r}", errors)
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
    ("", "pods"): {"list"},
    ("", "configmaps"): {"get", "create", "patch"},
    ("", "events"): {"create"},
}
CLUSTER_WIDE_EXTRA_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}


def kustomize(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize DIRECTORY` renders (client-side, no cluster)."""
    done = subprocess.run([executable("kubectl"), "kustomize", str(directory)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {directory}: {done.stderr}"
    return documents(done.stdout)
