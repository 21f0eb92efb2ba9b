"""Kueue on a running LocalCluster: its controller manager (the binary `make tools` builds
from the pinned Go module), its CRDs, and its admission webhooks on loopback.

`Kueue(cluster).start()` installs Kueue's CRDs (from the module's config/components,
copied beside the binary), writes a Configuration (only the batch/job integration; Jobs
without a queue-name label left alone; leader election off; every port on 127.0.0.1),
starts the manager, waits for its /readyz (the webhook server is listening), then
registers the Job and kueue.x-k8s.io webhooks of the module's manifests with
`clientConfig.url: https://127.0.0.1:<port>/…` and our CA. The webhook's serving
certificate comes from the cluster's CA, not Kueue's internal certificate management
(that one names a Service, which nothing routes to here).

Kueue reads its metrics server's certificate from a fixed path,
/etc/kueue/metrics/certs (in a Deployment: a mounted Secret). As the process kubelet
does for volumes, the manager runs in a mount namespace of its own where a folder of
ours is bind-mounted there; the empty mount point is created on the host. That needs
root. The manager dies with the thread that started it, like the other components.
"""

from __future__ import annotations

import base64
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from kubenas.localcluster import binaries, sandbox
from kubenas.localcluster.controlplane import ClusterError, LocalCluster
from kubenas.localcluster.processes import Component, free_port

NAMESPACE = "kueue-system"
METRICS_CERTS = "/etc/kueue/metrics/certs"  # fixed in Kueue's main.go when its internal cert management is off
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
WEBHOOK_GROUPS = ({"batch"}, {"kueue.x-k8s.io"})  # the only integration on: batch/job (others' paths 404)
MUTATING, VALIDATING = "kueue-mutating-webhook-configuration", "kueue-validating-webhook-configuration"


class KueueComponent(Component):
    """The manager, started in its own mount namespace with the metrics certificate in place."""

    def __init__(self, *args, mounts: list[sandbox.Mount], working_dir: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mounts = mounts
        self.working_dir = working_dir

    def start(self) -> KueueComponent:
        sandbox.prepare_targets(self.mounts)
        super().start()
        return self

    def preexec(self) -> None:
        super().preexec()
        sandbox.enter(mounts=self.mounts, cgroup_procs=None, working_dir=self.working_dir)


class Kueue:
    def __init__(self, cluster: LocalCluster, *, feature_gates: str = "VisibilityOnDemand=false") -> None:
        self.cluster = cluster
        self.folder = cluster.workdir / "kueue"
        self.feature_gates = feature_gates  # the visibility API server would want certificates of its own
        self.component: KueueComponent | None = None
        self.ports: dict[str, int] = {}

    # -- life ------------------------------------------------------------------------

    def start(self, *, timeout: float = 120.0) -> Kueue:
        if os.geteuid() != 0:
            raise ClusterError("Kueue runs in a mount namespace of its own here (its metrics certificate's path "
                               f"{METRICS_CERTS} is fixed): that needs root")
        binary, manifests = binaries.find_kueue()
        started = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._ensure_namespace()
        self._install_crds(manifests / "crds", timeout)
        config = self._write_config()
        self.component = KueueComponent(
            "kueue", [binary, f"--config={config}", f"--kubeconfig={self.cluster.kubeconfig}",
                      f"--feature-gates={self.feature_gates}", "--zap-log-level=info"],
            log=self.cluster.workdir / "logs" / "kueue.log",
            mounts=[sandbox.Mount(self.folder / "metrics-certs", METRICS_CERTS, read_only=True)],
            working_dir=str(self.folder),
        ).start()
        self.cluster.components["kueue"] = self.component  # stopped with the cluster; its exit fails waits
        self._wait(self._ready, "Kueue's /readyz (its webhook server listening)", timeout)
        self._register_webhooks(manifests / "webhooks.yaml")
        self.cluster.say(f"kubenas: Kueue {binaries.KUEUE_VERSION} ready in {time.monotonic() - started:.1f} s "
                         f"(webhooks at https://127.0.0.1:{self.ports['webhook']})")
        return self

    def stop(self) -> None:
        """Unregisters the webhooks (their failurePolicy is Fail) and stops the manager."""
        for kind, name in (("mutatingwebhookconfigurations", MUTATING), ("validatingwebhookconfigurations", VALIDATING)):
            try:
                self.cluster.request("DELETE", f"/apis/admissionregistration.k8s.io/v1/{kind}/{name}")
            except OSError:  # urllib's URLError included
                pass  # the API server is gone already, or never had them
        if self.component is not None:
            self.component.stop()

    # -- configuration ---------------------------------------------------------------

    def _write_config(self) -> Path:
        ca = self.cluster.ca
        self.ports = {name: free_port() for name in ("webhook", "health", "metrics")}
        for folder, common_name in (("webhook-certs", "kueue-webhook"), ("metrics-certs", "kueue-metrics")):
            pair = ca.issue(f"kueue-{folder}", common_name=common_name, server=True, ips=("127.0.0.1",),
                            dns=("localhost",))
            target = self.folder / folder
            target.mkdir(parents=True, exist_ok=True)
            (target / "tls.crt").write_bytes(pair.cert.read_bytes())
            (target / "tls.key").write_bytes(pair.key.read_bytes())
            (target / "tls.key").chmod(0o600)
        path = self.folder / "config.yaml"
        path.write_text(yaml.safe_dump({
            "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
            "namespace": NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.ports['health']}"},
            "metrics": {"bindAddress": f"127.0.0.1:{self.ports['metrics']}"},
            "webhook": {"host": "127.0.0.1", "port": self.ports["webhook"], "certDir": str(self.folder / "webhook-certs")},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": ["batch/job"]},
            "clientConnection": {"qps": 50, "burst": 100},
        }, sort_keys=False))
        return path

    def _ensure_namespace(self) -> None:
        if self.cluster.request("GET", f"/api/v1/namespaces/{NAMESPACE}") is None:
            self.cluster.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                               "metadata": {"name": NAMESPACE}})

    def _install_crds(self, folder: Path, timeout: float) -> None:
        """Every CRD of the module, served at its storage version only (v1beta2): the
        module's manifests leave out the conversion webhook that would serve v1beta1
        (kustomize patches it in), and nothing here asks for v1beta1."""
        names = []
        for path in sorted(folder.glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            for version in crd["spec"]["versions"]:
                version["served"] = bool(version.get("storage"))
            names.append(crd["metadata"]["name"])
            try:
                self.cluster.request("POST", CRDS, crd, timeout=60)
            except urllib.error.HTTPError as error:
                if error.code != 409:
                    raise ClusterError(f"installing Kueue's CRD {path.name}: {error.code} {error.read()[:300]!r}") from None
        # Established is not enough: Kueue's manager fails at once on a kind its discovery
        # does not list yet ("no matches for kind"), so wait until the group serves them all.
        plurals = {name.split(".", 1)[0] for name in names}
        self._wait(lambda: plurals <= {resource["name"] for resource in (self.cluster.request(
            "GET", "/apis/kueue.x-k8s.io/v1beta2") or {}).get("resources") or []}, "Kueue's kinds in discovery", timeout)
        for plural in sorted(plurals):  # a new CRD's storage answers 429 while it initialises
            self._wait(lambda plural=plural: self.cluster.request("GET", f"/apis/kueue.x-k8s.io/v1beta2/{plural}"),
                       f"lists of {plural}", timeout)
        for name in names:
            self._wait(lambda name=name: any(
                c["type"] == "Established" and c["status"] == "True"
                for c in ((self.cluster.request("GET", f"{CRDS}/{name}") or {}).get("status") or {}).get("conditions") or []),
                f"CRD {name} established", timeout)

    def webhook_configurations(self, manifests: Path) -> list[dict]:
        """The module's webhook configurations, cut to batch Jobs and Kueue's own kinds,
        each webhook called at its URL on loopback with our CA."""
        ca_bundle = base64.b64encode(self.cluster.ca.cert.read_bytes()).decode()
        documents = []
        for document in yaml.safe_load_all(manifests.read_text()):
            if not document:
                continue
            document["metadata"] = {"name": MUTATING if document["kind"].startswith("Mutating") else VALIDATING}
            hooks = []
            for hook in document["webhooks"]:
                groups = {group for rule in hook["rules"] for group in rule["apiGroups"]}
                if groups not in WEBHOOK_GROUPS:
                    continue
                path = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{self.ports['webhook']}{path}", "caBundle": ca_bundle}
                hooks.append(hook)
            document["webhooks"] = hooks
            documents.append(document)
        return documents

    def _register_webhooks(self, manifests: Path) -> None:
        for document in self.webhook_configurations(manifests):
            plural = document["kind"].lower() + "s"
            base = f"/apis/admissionregistration.k8s.io/v1/{plural}"
            if self.cluster.request("GET", f"{base}/{document['metadata']['name']}") is not None:
                self.cluster.request("DELETE", f"{base}/{document['metadata']['name']}")
            self.cluster.request("POST", base, document)

    # -- readiness -------------------------------------------------------------------

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['health']}/readyz", timeout=2) as answer:
            return answer.status == 200

    def _wait(self, ready, what: str, timeout: float) -> None:
        self.cluster._wait(ready, what, timeout)
