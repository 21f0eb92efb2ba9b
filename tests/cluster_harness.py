"""Real Kubernetes for the end-to-end tests (kubenas.localcluster: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler built by `make tools`, and the process kubelet),
operators as real `kubenas operator` subprocesses authenticated as their
ServiceAccount, and the real kubectl."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any, Callable

import yaml

from kubenas.localcluster import LocalCluster, NodeOptions, binaries
from kubenas.localcluster.processes import free_port  # noqa: F401  (the tests' one free_port)
from tests.tools import missing

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "manifests" / "crds"
FAKE_TRAINER = str(Path(__file__).with_name("fake_trainer.py"))
NAS = "/apis/kubenas.io/v1alpha1/namespaces/{ns}/neuralarchitecturesearches"
TRIALS = "/apis/kubenas.io/v1alpha1/namespaces/{ns}/nastrials"
OPERATOR_ACCOUNT = "kubenas-operator"
# What Pod Security "restricted" asks of every pod, as the shipped trainer defaults set it.
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                  "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def tool(name: str) -> str:
    """A component `make tools` builds (kubectl, helm, …): its path, else skip (fail in CI)."""
    try:
        return binaries.find(name)
    except binaries.BinaryNotFound as error:
        missing(str(error))
        raise


class Cluster:
    """A LocalCluster for tests, with an admin client (plain HTTPS) and kubectl."""

    def __init__(self, *, workdir: Path, **options: Any) -> None:
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"):
            tool(name)
        options.setdefault("node", NodeOptions(cpu="64", memory="64Gi", pods=250))
        self.local = LocalCluster(workdir=workdir, **options)
        self.workdir = workdir
        self.kubeconfig = self.local.kubeconfig
        self.url = ""

    def start(self) -> Cluster:
        self.local.start()
        self.url = self.local.server
        return self

    def stop(self) -> None:
        self.local.stop()

    # -- plain HTTPS, as the admin ---------------------------------------------------

    def exchange(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                 params: dict | None = None) -> tuple[int, Message, str]:
        """One call as the admin: status, headers and body, refusals included. A 429 (e.g. a
        new CRD's storage still initialising) is retried as its Retry-After says."""
        query = "?" + urllib.parse.urlencode(params) if params else ""
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(20):
            request = urllib.request.Request(self.url + path + query, data=data, method=method,
                                             headers={"Content-Type": content_type, "Accept": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30, context=self.local.ssl_context()) as answer:
                    code, headers, text = answer.status, answer.headers, answer.read().decode()
            except urllib.error.HTTPError as error:
                code, headers, text = error.code, error.headers, error.read().decode()
            if code != 429 or attempt == 19:
                return code, headers, text
            time.sleep(float(headers.get("Retry-After") or 1))
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                params: dict | None = None) -> Any:
        """The answer's JSON; None for a GET of something absent; AssertionError for a refusal."""
        code, _, text = self.exchange(method, path, body, content_type=content_type, params=params)
        if code == 404 and method == "GET":
            return None
        if code >= 400:
            raise AssertionError(f"{method} {path}: {code} {text}")
        return json.loads(text or "null")

    def get(self, path: str, **params: str) -> Any:
        return self.request("GET", path, params=params or None)

    def items(self, path: str, **params: str) -> list[dict]:
        answer = self.get(path, **params)
        return [] if answer is None else answer["items"]

    def merge_patch(self, path: str, patch: dict) -> Any:
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    def kubectl(self, *args: str, check: bool = True, input: str | None = None, kubeconfig: Path | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        done = subprocess.run([tool("kubectl"), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
                              capture_output=True, text=True, timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done

    # -- set-up the tests share ------------------------------------------------------

    def install_crds(self, crds: list[dict] | None = None) -> list[str]:
        """CRDs (kubenas's own by default), applied, Established, and their storage serving
        lists (a new CRD's first requests may meet 429 "storage is (re)initializing");
        returns their names."""
        if crds is None:
            crds = [yaml.safe_load(path.read_text()) for path in sorted(CRDS.glob("*.yaml"))]
        self.kubectl("apply", "-f", "-", input="".join("---\n" + yaml.safe_dump(crd) for crd in crds))
        names = [crd["metadata"]["name"] for crd in crds]
        if names:
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{name}" for name in names])
        for crd in crds:
            spec = crd["spec"]
            version = next(v["name"] for v in spec["versions"] if v.get("served", True))
            self.get(f"/apis/{spec['group']}/{version}/{spec['names']['plural']}")
        return names

    def namespace(self, name: str, *, enforce: str = "restricted") -> str:
        """A namespace whose pods the real PodSecurity admission holds to `enforce`."""
        labels = {f"pod-security.kubernetes.io/{mode}": enforce for mode in ("enforce", "warn")}
        apply(self, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
        return name

    def operator_kubeconfig(self, namespace: str) -> Path:
        """The shipped ServiceAccount, Role and RoleBinding, installed in `namespace`, and
        a kubeconfig with a token of that ServiceAccount from the TokenRequest API: every
        call of an operator using it is judged by the API server's RBAC authorizer."""
        documents = [yaml.safe_load((ROOT / "manifests" / "base" / "serviceaccount.yaml").read_text()),
                     yaml.safe_load((ROOT / "manifests" / "role.yaml").read_text()),
                     yaml.safe_load((ROOT / "manifests" / "rolebinding.yaml").read_text())]
        for document in documents:
            document = copy.deepcopy(document)
            document["metadata"]["namespace"] = namespace
            for subject in document.get("subjects") or []:
                subject["namespace"] = namespace
            apply(self, document)
        return self.local.token_kubeconfig(self.workdir / f"operator-{namespace}.kubeconfig", namespace=namespace,
                                           service_account=OPERATOR_ACCOUNT)

    def audit_events(self) -> list[dict]:
        """The API server's audit log (level Metadata), one event per request."""
        return [json.loads(line) for line in self.local.audit_log.read_text().splitlines() if line.strip()]


class OperatorProcess:
    """`kubenas operator` as a subprocess, as the namespace's operator ServiceAccount:
    killable like a real pod."""

    def __init__(self, *, cluster: Cluster, namespace: str, log: Path, args: list[str] | None = None,
                 kubeconfig: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.cluster = cluster
        self.env = dict(env or {})  # e.g. KUBENAS_FAILPOINTS
        self.namespace = namespace
        self.log = log
        self.args = list(args or [])  # more `kubenas operator` options, e.g. --metrics-port
        self.kubeconfig = kubeconfig or cluster.operator_kubeconfig(namespace)
        self.process: subprocess.Popen | None = None

    def start(self) -> OperatorProcess:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kubenas.cli", "operator", "--kubeconfig", str(self.kubeconfig),
                 "--namespace", self.namespace, *self.args],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        stop_process(self.process)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def stop_process(process: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str | Callable[[], str],
             operator: OperatorProcess | None = None, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = f"\noperator log:\n{operator.tail()}" if operator else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}{tail}")
        time.sleep(interval)


def search_manifest(name: str, *, namespace: str, trainer: str = "fake", env: dict | None = None,
                    args: list[str] | None = None, **spec: Any) -> dict:
    """A small MacroCNN search on digits; `trainer` "fake" (milliseconds) or "real".
    Its pods meet Pod Security "restricted"."""
    if trainer == "fake":
        container = {"name": "trainer", "image": "kubenas/fake-trainer", "command": ["python", FAKE_TRAINER],
                     "args": args or []}
    else:
        container = {"name": "trainer", "image": "ghcr.io/kubenas/trainer:0.1.0",
                     "args": args or ["--dataset", "digits", "--epochs", "4", "--batch-size", "64",
                                      "--learning-rate", "0.05"]}
    container["env"] = [{"name": k, "value": v} for k, v in (env or {}).items()]
    container["resources"] = {"limits": {"cpu": "1"}}
    container["securityContext"] = RESTRICTED_CONTAINER
    body = {
        "searchSpace": {"type": "MacroCNN", "macroCNN": {
            "filterHeights": [1, 3], "filterWidths": [1, 3], "numFilters": [8, 16],
            "depth": {"initialLayers": 2, "increment": 0, "everyTrials": 100, "maxLayers": 2},
            "imageSize": [8, 8], "skipConnections": True}},
        "controller": {"batchSize": 2},
        "reward": {"lastEpochs": 1},
        "maxTrials": 4,
        "parallelism": 2,
        "trial": {"kind": "Job", "template": {"spec": {"securityContext": RESTRICTED_POD, "containers": [container]}}},
        # Off: these tests count a Job per child (the tiny space repeats children);
        # tests/test_cache_e2e.py turns it on.
        "cache": {"enabled": False},
        **spec,
    }
    return {"apiVersion": "kubenas.io/v1alpha1", "kind": "NeuralArchitectureSearch",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def apply(cluster: Cluster, document: dict, *, kubeconfig: Path | None = None) -> subprocess.CompletedProcess:
    return cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(document), kubeconfig=kubeconfig)
