"""The real kubectl (built by `make tools`, the pinned Kubernetes release) against the local
cluster: custom resources, ConfigMaps, pods' logs, events, watches; and `kubenas
dev-cluster`, whose kubeconfig kubectl and the kubernetes client use."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from kubenas.localcluster import binaries
from tests.cluster_harness import ROOT, Cluster, stop_process, tool, wait_for

NS = "kubectl"
WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wdg"], "categories": ["all"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "description": "How big the widget is."},
                                    "color": {"type": "string", "default": "blue"},
                                },
                            },
                            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    running = Cluster(workdir=tmp_path_factory.mktemp("kubectl")).start()
    try:
        running.namespace(NS, enforce="privileged")
        wait_for(lambda: running.get(f"/api/v1/namespaces/{NS}/serviceaccounts/default"), timeout=30,
                 what="the default ServiceAccount")
        running.kubectl("apply", "-f", "-", input=yaml.safe_dump(WIDGET_CRD))
        running.kubectl("wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=30s")
        yield running
    finally:
        running.stop()


def kubectl(cluster: Cluster, *args: str, input: object = None, check: bool = True) -> subprocess.CompletedProcess:
    text = None if input is None else (input if isinstance(input, str) else yaml.safe_dump(input))
    return cluster.kubectl("-n", NS, *args, input=text, check=check)


def widget(name: str, **spec: object) -> dict:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


def test_kubectl_is_the_built_release(cluster: Cluster) -> None:
    assert tool("kubectl") != "/usr/bin/kubectl"
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["clientVersion"]["gitVersion"] == version["serverVersion"]["gitVersion"]


def test_custom_resources_with_kubectl(cluster: Cluster) -> None:
    assert "unchanged" in kubectl(cluster, "apply", "-f", "-", input=WIDGET_CRD).stdout
    assert "created" in kubectl(cluster, "apply", "-f", "-", input=widget("small", size=2)).stdout
    assert "configured" in kubectl(cluster, "apply", "-f", "-", input=widget("small", size=3)).stdout

    listed = kubectl(cluster, "get", "widgets").stdout.splitlines()
    assert listed[0].split() == ["NAME", "SIZE"] and listed[1].split() == ["small", "3"]
    as_yaml = yaml.safe_load(kubectl(cluster, "get", "wdg", "small", "-o", "yaml").stdout)
    assert as_yaml["spec"] == {"size": 3, "color": "blue"} and as_yaml["metadata"]["generation"] == 2
    explained = kubectl(cluster, "explain", "wdg.spec").stdout
    assert "size\t<integer>" in explained and "How big the widget is." in explained
    described = kubectl(cluster, "describe", "wdg", "small").stdout
    assert "Name:         small" in described and "Size:   3" in described

    invalid = kubectl(cluster, "apply", "-f", "-", input=widget("tiny", size=0), check=False)
    assert invalid.returncode != 0 and "spec.size: Invalid value: 0" in invalid.stderr
    unknown = kubectl(cluster, "apply", "-f", "-", input=widget("odd", size=1, shape="x"), check=False)
    assert unknown.returncode != 0 and 'unknown field "spec.shape"' in unknown.stderr

    assert 'widget.example.com "small" deleted' in kubectl(cluster, "delete", "wdg", "small").stdout
    assert "NotFound" in kubectl(cluster, "get", "wdg", "small", check=False).stderr


def test_configmaps_events_and_logs_with_kubectl(cluster: Cluster) -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}}
    kubectl(cluster, "apply", "-f", "-", input=config)
    kubectl(cluster, "apply", "-f", "-", input=config | {"data": {"a": "2", "b": "3"}})
    listed = [line.split()[0] for line in kubectl(cluster, "get", "configmaps").stdout.splitlines()]
    assert listed[0] == "NAME" and "settings" in listed[1:]
    assert json.loads(kubectl(cluster, "get", "cm", "settings", "-o", "json").stdout)["data"] == {"a": "2", "b": "3"}

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hello"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo hello; echo world"]}],
        },
    }
    kubectl(cluster, "apply", "-f", "-", input=pod)
    kubectl(cluster, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/hello", "--timeout=30s")
    assert kubectl(cluster, "logs", "hello").stdout == "hello\nworld\n"
    assert kubectl(cluster, "logs", "hello", "--tail=1").stdout == "world\n"
    listed = kubectl(cluster, "get", "pod", "hello", "--no-headers").stdout.split()
    assert listed[:3] == ["hello", "0/1", "Completed"]

    uid = json.loads(kubectl(cluster, "get", "pod", "hello", "-o", "json").stdout)["metadata"]["uid"]
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "hello.1"},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "hello", "namespace": NS, "uid": uid},
        "reason": "Greeted",
        "message": "said hello",
        "type": "Normal",
    }
    kubectl(cluster, "apply", "-f", "-", input=event)
    described = kubectl(cluster, "describe", "pod", "hello").stdout
    assert "said hello" in described and "Scheduled" in described  # ours, and the real scheduler's
    assert "pod \"hello\" deleted" in kubectl(cluster, "delete", "pod", "hello").stdout
    assert "NotFound" in kubectl(cluster, "get", "pod", "hello", check=False).stderr


def read_line(lines: queue.Queue, deadline: float) -> list[str]:
    """The next line a process printed, split into words, before `deadline` (monotonic)."""
    try:
        return lines.get(timeout=max(0.0, deadline - time.monotonic())).split()
    except queue.Empty:
        raise AssertionError("kubectl --watch printed no line in time") from None


def test_get_watch_with_kubectl(cluster: Cluster) -> None:
    kubectl(cluster, "apply", "-f", "-", input=widget("first", size=1))
    watching = subprocess.Popen([tool("kubectl"), "--kubeconfig", str(cluster.kubeconfig), "-n", NS, "get", "widgets",
                                 "--watch"], stdout=subprocess.PIPE, text=True, bufsize=1)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in watching.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        assert read_line(lines, deadline) == ["NAME", "SIZE"]
        assert read_line(lines, deadline) == ["first", "1"]
        kubectl(cluster, "apply", "-f", "-", input=widget("second", size=2))
        assert read_line(lines, deadline) == ["second", "2"]
    finally:
        watching.kill()
        watching.wait()


# -- `kubenas dev-cluster` ----------------------------------------------------------------


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state not in ("Z", "X") and text in command:
            found.append(f"{entry.name}: {command}")
    return found


QUEUED_JOB = {"apiVersion": "batch/v1", "kind": "Job",
              "metadata": {"name": "probe", "namespace": "default", "labels": {"kueue.x-k8s.io/queue-name": "gpus"}},
              "spec": {"template": {"spec": {"restartPolicy": "Never",
                                             "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}}}


def test_dev_cluster_serves_kubectl_until_sigterm(tmp_path: Path) -> None:
    """`kubenas dev-cluster --kubeconfig FILE` starts the local cluster in the foreground,
    writes the admin kubeconfig to FILE, says so on stderr, and stops every component on
    SIGTERM, exiting 0."""
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"):
        tool(name)
    try:  # --kueue too where Kueue can run here (built, and root for its mount namespace)
        binaries.find_kueue()
        kueue = os.geteuid() == 0
    except binaries.BinaryNotFound:
        kueue = False
    kubeconfig, workdir = tmp_path / "config" / "dev.kubeconfig", tmp_path / "dev"
    out, err = tmp_path / "dev-cluster.out", tmp_path / "dev-cluster.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "kubenas.cli", "dev-cluster", "--kubeconfig", str(kubeconfig), "--workdir",
             str(workdir), "--gpus", "3", *(["--kueue"] if kueue else [])],
            stdout=stdout, stderr=stderr, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    output = lambda: f"stdout:\n{out.read_text()}\nstderr:\n{err.read_text()}"  # noqa: E731
    try:
        def ready() -> bool:
            assert process.poll() is None, f"dev-cluster exited with {process.returncode}:\n{output()}"
            if not (kubeconfig.exists() and "ready" in err.read_text()):
                return False
            config = yaml.safe_load(kubeconfig.read_text()) or {}  # written whole, not half
            return bool(config.get("clusters") and config.get("users"))

        wait_for(ready, timeout=120, what=lambda: f"the dev cluster:\n{output()}")
        nodes = subprocess.run([tool("kubectl"), "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "json"],
                               capture_output=True, text=True, timeout=60)
        assert nodes.returncode == 0, nodes.stderr
        [node] = json.loads(nodes.stdout)["items"]
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "3"
        try:
            import kubernetes
        except ImportError:
            kubernetes = None
        if kubernetes is not None:  # the kubernetes client reads the same kubeconfig
            client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
            names = {ns.metadata.name for ns in kubernetes.client.CoreV1Api(client).list_namespace().items}
            assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
        if kueue:  # Kueue's API is served and its webhooks answer: a Job naming a queue is made suspended
            queues = subprocess.run([tool("kubectl"), "--kubeconfig", str(kubeconfig), "get", "clusterqueues"],
                                    capture_output=True, text=True, timeout=60)
            assert queues.returncode == 0, queues.stderr
            job = subprocess.run([tool("kubectl"), "--kubeconfig", str(kubeconfig), "create", "--dry-run=server", "-o",
                                  "jsonpath={.spec.suspend}", "-f", "-"], input=json.dumps(QUEUED_JOB),
                                 capture_output=True, text=True, timeout=60)
            assert job.returncode == 0 and job.stdout == "true", job.stderr
        assert _processes_mentioning(str(workdir))
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, output()
        assert _processes_mentioning(str(workdir)) == []
    finally:
        stop_process(process)
