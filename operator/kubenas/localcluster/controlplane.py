"""Real Kubernetes on one machine without a container runtime: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler (the binaries `make tools` builds) plus the
process kubelet (kubenas.localcluster.kubelet), on free loopback ports.

`LocalCluster(workdir=…).start()` makes the PKI, starts every component, waits until the
API server is ready, the controllers and the scheduler are healthy, the Node is Ready and
untainted and the `default` ServiceAccount exists, writes an admin kubeconfig and prints
how long that took. `stop()` shuts everything down. Used by `kubenas dev-cluster`, the
tests and the benchmarks.
"""

from __future__ import annotations

import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from kubenas.localcluster import binaries
from kubenas.localcluster.pki import API_SERVER_NAMES, Authority, service_account_keys
from kubenas.localcluster.processes import Component, free_port

SERVICE_CIDR = "10.0.0.0/24"  # never routed here: there is no kube-proxy
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIT_POLICY = {  # every request, without bodies: who did what to which resource
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


class ClusterError(Exception):
    """A component did not start or did not become ready; the message has its log's tail."""


@dataclass
class NodeOptions:
    """What the process kubelet's Node offers the scheduler (its processes share this machine)."""

    name: str = "kubenas-dev"
    cpu: str = "64"
    memory: str = "64Gi"
    pods: int = 250
    gpus: int = 8
    image_map: Path | None = None  # YAML: image -> local command, for containers without one
    extra_args: list[str] = field(default_factory=list)


@dataclass
class LocalCluster:
    workdir: Path
    node: NodeOptions = field(default_factory=NodeOptions)
    # More process kubelets, each its own Node (named apart from `node`): with two, losing
    # one is a partial disruption, which Kubernetes answers by evicting that node's pods.
    extra_nodes: list[NodeOptions] = field(default_factory=list)
    audit: bool = True  # write the API server's audit log (workdir/audit.log)
    apiserver_args: list[str] = field(default_factory=list)
    controller_manager_args: list[str] = field(default_factory=list)
    scheduler_args: list[str] = field(default_factory=list)
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.components: dict[str, Component] = {}
        self.server = ""
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.audit_log = self.workdir / "audit.log"
        self.startup_seconds: float | None = None
        self._admin_context: ssl.SSLContext | None = None

    # -- life ------------------------------------------------------------------------

    def start(self, *, timeout: float = 180.0) -> LocalCluster:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._prepare()
            self._start("etcd")
            self._wait(lambda: self._etcd_healthy(), "etcd", timeout)
            self._start("kube-apiserver")
            self._wait(lambda: self._get("/readyz", raw=True) == "ok", "kube-apiserver /readyz", timeout)
            for name in ("kube-controller-manager", "kube-scheduler", *self.kubelets):
                self._start(name)
            self._wait(lambda: self._component_healthy(self.ports["kube-controller-manager"]), "kube-controller-manager /healthz", timeout)
            self._wait(lambda: self._component_healthy(self.ports["kube-scheduler"]), "kube-scheduler /healthz", timeout)
            for node in self.nodes:
                self._wait(lambda name=node.name: self._node_ready(name), f"node {node.name} Ready without the not-ready taint", timeout)
            self._wait(lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
                       "the default ServiceAccount", timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self.say(f"kubenas: local cluster ready at {self.server} in {self.startup_seconds:.1f} s "
                 f"(Kubernetes {binaries.KUBERNETES_VERSION}, etcd {binaries.ETCD_VERSION}); kubeconfig {self.kubeconfig}")
        return self

    def stop(self) -> None:
        """Components added to the cluster (Kueue) first, then the kubelets (they kill their
        pods), the controllers, the API server, etcd."""
        core = (*self.kubelets, "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")
        for name in [name for name in reversed(self.components) if name not in core] + list(core):
            if name in self.components:
                self.components[name].stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def nodes(self) -> list[NodeOptions]:
        return [self.node, *self.extra_nodes]

    @property
    def kubelets(self) -> dict[str, NodeOptions]:
        """Component name -> its node: `kubelet` for `node`, `kubelet-NAME` for the others."""
        return {"kubelet": self.node, **{f"kubelet-{node.name}": node for node in self.extra_nodes}}

    def restart(self, name: str, *, kill: bool = True) -> None:
        """Stops one component (SIGKILL, or SIGTERM with kill=False) and starts it again."""
        component = self.components[name]
        component.kill() if kill else component.stop()
        component.start()

    # -- configuration ---------------------------------------------------------------

    def _prepare(self) -> None:
        pki = self.workdir / "pki"
        ca = self.ca = Authority(pki)
        if len({node.name for node in self.nodes}) != len(self.nodes):
            raise ClusterError(f"node names must differ: {[node.name for node in self.nodes]}")
        self.ports = {name: free_port() for name in
                      ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler", *self.kubelets)}
        self.server = f"https://127.0.0.1:{self.ports['kube-apiserver']}"
        serving = ca.issue("apiserver", common_name="kube-apiserver", server=True, ips=("127.0.0.1", "10.0.0.1"),
                           dns=API_SERVER_NAMES)
        kubelet_client = ca.issue("apiserver-kubelet-client", common_name="kube-apiserver-kubelet-client",
                                  organization="system:masters", client=True)
        sa = service_account_keys(pki)
        self.admin = ca.issue("admin", common_name="kubenas-admin", organization="system:masters", client=True)
        self._write_kubeconfig(self.kubeconfig, user={"client-certificate": str(self.admin.cert),
                                                      "client-key": str(self.admin.key)})
        component_configs = {}
        for name, user in (("kube-controller-manager", "system:kube-controller-manager"),
                           ("kube-scheduler", "system:kube-scheduler"),
                           *((kubelet, f"system:node:{node.name}") for kubelet, node in self.kubelets.items())):
            pair = ca.issue(name + "-client", common_name=user,
                            organization="system:nodes" if name.startswith("kubelet") else None, client=True)
            component_configs[name] = self.workdir / f"{name}.kubeconfig"
            self._write_kubeconfig(component_configs[name], user={"client-certificate": str(pair.cert),
                                                                  "client-key": str(pair.key)})
        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        audit = []
        if self.audit:
            policy = self.workdir / "audit-policy.yaml"
            policy.write_text(yaml.safe_dump(AUDIT_POLICY))
            audit = [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-maxsize=0"]
        logs = self.workdir / "logs"
        self.components = {
            "etcd": Component("etcd", [
                binaries.find("etcd"), "--name=node0", f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=node0={peer_url}", "--unsafe-no-fsync=true", "--log-level=warn",
            ], log=logs / "etcd.log"),
            "kube-apiserver": Component("kube-apiserver", [
                binaries.find("kube-apiserver"), f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['kube-apiserver']}", f"--cert-dir={pki}",
                f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.cert}", f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={sa.cert}", f"--service-account-signing-key-file={sa.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=Node,RBAC",
                "--allow-privileged=true", "--endpoint-reconciler-type=none",
                f"--kubelet-client-certificate={kubelet_client.cert}", f"--kubelet-client-key={kubelet_client.key}",
                f"--kubelet-certificate-authority={ca.cert}", "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false", *audit, *self.apiserver_args,
            ], log=logs / "kube-apiserver.log"),
            "kube-controller-manager": Component("kube-controller-manager", [
                binaries.find("kube-controller-manager"), f"--kubeconfig={component_configs['kube-controller-manager']}",
                "--bind-address=127.0.0.1", f"--secure-port={self.ports['kube-controller-manager']}",
                "--leader-elect=false", "--controllers=*,bootstrapsigner,tokencleaner",
                f"--service-account-private-key-file={sa.key}", f"--root-ca-file={ca.cert}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={ca.cert}", f"--cluster-signing-key-file={ca.key}",
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics", "--profiling=false",
                *self.controller_manager_args,
            ], log=logs / "kube-controller-manager.log"),
            "kube-scheduler": Component("kube-scheduler", [
                binaries.find("kube-scheduler"), f"--kubeconfig={component_configs['kube-scheduler']}",
                f"--authentication-kubeconfig={component_configs['kube-scheduler']}",
                f"--authorization-kubeconfig={component_configs['kube-scheduler']}",
                "--bind-address=127.0.0.1", f"--secure-port={self.ports['kube-scheduler']}", "--leader-elect=false",
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics", "--profiling=false",
                *self.scheduler_args,
            ], log=logs / "kube-scheduler.log"),
        }
        for kubelet, node in self.kubelets.items():
            serving = ca.issue(kubelet, common_name=node.name, server=True, ips=("127.0.0.1",), dns=("localhost",))
            workdir = self.workdir / ("node" if kubelet == "kubelet" else f"node-{node.name}")
            self.components[kubelet] = Component(kubelet, [
                sys.executable, "-m", "kubenas.localcluster.kubelet",
                f"--kubeconfig={component_configs[kubelet]}", f"--node-name={node.name}",
                f"--workdir={workdir}", f"--port={self.ports[kubelet]}",
                f"--tls-cert={serving.cert}", f"--tls-key={serving.key}", f"--client-ca={ca.cert}",
                f"--cpu={node.cpu}", f"--memory={node.memory}", f"--pods={node.pods}", f"--gpus={node.gpus}",
                *([f"--image-map={node.image_map}"] if node.image_map else []), *node.extra_args,
            ], log=logs / f"{kubelet}.log")

    def _write_kubeconfig(self, path: Path, *, user: dict, namespace: str | None = None) -> None:
        context: dict[str, Any] = {"cluster": "kubenas-local", "user": "user"}
        if namespace:
            context["namespace"] = namespace
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kubenas-local",
            "clusters": [{"name": "kubenas-local", "cluster": {"server": self.server, "certificate-authority": str(self.ca.cert)}}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "kubenas-local", "context": context}],
        }, sort_keys=False))
        path.chmod(0o600)

    def token_kubeconfig(self, path: Path, *, namespace: str, service_account: str, seconds: int = 3600) -> Path:
        """A kubeconfig that authenticates as a ServiceAccount, with a token from the
        TokenRequest API: the API server's RBAC authorizer judges its every call."""
        answer = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
                              {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                               "spec": {"expirationSeconds": seconds}})
        self._write_kubeconfig(path, user={"token": answer["status"]["token"]}, namespace=namespace)
        return path

    def _start(self, name: str) -> None:
        self.components[name].start()

    # -- readiness -------------------------------------------------------------------

    def _wait(self, ready: Callable[[], Any], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for component in self.components.values():
                if component.process is not None and component.process.poll() is not None:
                    raise ClusterError(f"{component.name} exited with {component.process.returncode} while waiting for "
                                       f"{what}; the end of {component.log}:\n{component.tail()}")
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}; logs in {self.workdir / 'logs'}")
            time.sleep(0.2)

    def _etcd_healthy(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['etcd']}/health", timeout=2) as answer:
            return json.loads(answer.read()).get("health") == "true"

    def _component_healthy(self, port: int) -> bool:
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE  # self-signed serving certificates
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=2, context=insecure) as answer:
            return answer.read() == b"ok"

    def _node_ready(self, name: str) -> bool:
        node = self._get(f"/api/v1/nodes/{name}")
        if node is None:
            return False
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))
        tainted = any(t["key"] == "node.kubernetes.io/not-ready" for t in node["spec"].get("taints") or [])
        return ready and not tainted

    # -- an admin client, for the launcher, tests and benchmarks -----------------------

    def ssl_context(self) -> ssl.SSLContext:
        """The admin's TLS context (made once: loading certificates costs milliseconds)."""
        if self._admin_context is None:
            self._admin_context = ssl.create_default_context(cafile=str(self.ca.cert))
            self._admin_context.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        return self._admin_context

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                raw: bool = False, timeout: float = 30) -> Any:
        """One call as the admin; a GET of something absent is None, other errors raise HTTPError."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method,
                                         headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.ssl_context()) as answer:
                text = answer.read().decode()
        except urllib.error.HTTPError as error:
            if error.code == 404 and method == "GET":
                return None
            raise
        return text if raw else json.loads(text or "null")

    def _get(self, path: str, *, raw: bool = False) -> Any:
        return self.request("GET", path, raw=raw, timeout=5)
