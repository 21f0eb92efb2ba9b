"""kubenas.localcluster for real: the launcher (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler built by `make tools`) and the process kubelet, whose pods are local
processes. One cluster for the module, with a Node of 2 GPUs and an image map."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kubenas.localcluster import NodeOptions, binaries
from kubenas.localcluster.sandbox import MemoryCgroup
from tests.cluster_harness import ROOT, Cluster, apply, tool, wait_for
from tests.tools import missing

NS = "lc"
PODS = f"/api/v1/namespaces/{NS}/pods"
NODE = "kubenas-dev"
GPUS = 2
IMAGE = "registry.example/hello"
IMAGE_CODE = "import os, sys; print('hello from', os.environ['GREETING'], os.getcwd(), *sys.argv[1:])"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("localcluster")
    image_map = workdir / "images.yaml"
    image_map.write_text(yaml.safe_dump({"images": {IMAGE: {
        "command": ["python", "-c", IMAGE_CODE], "args": ["default-arg"], "env": {"GREETING": "the image"},
        "workingDir": str(workdir)}}}))
    running = Cluster(workdir=workdir, node=NodeOptions(gpus=GPUS, image_map=image_map)).start()
    try:
        running.namespace(NS, enforce="privileged")
        # The namespace's root CA ConfigMap, which every pod's kube-api-access volume projects.
        wait_for(lambda: running.get(f"/api/v1/namespaces/{NS}/configmaps/kube-root-ca.crt"), timeout=30,
                 what="kube-root-ca.crt")
        wait_for(lambda: running.get(f"/api/v1/namespaces/{NS}/serviceaccounts/default"), timeout=30,
                 what="the default ServiceAccount")
        yield running
    finally:
        running.stop()


# -- helpers ---------------------------------------------------------------------------


def pod(name: str, code: str | None = None, *args: str, command: list[str] | None = None,
        container: dict | None = None, **spec: object) -> dict:
    main = {"name": "main", "image": "python:3.12", "command": command or ["python", "-c", code], "args": list(args),
            **(container or {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 10, "containers": [main], **spec}}


def create(cluster: Cluster, document: dict) -> dict:
    return cluster.request("POST", PODS, document)


def read(cluster: Cluster, name: str) -> dict | None:
    return cluster.get(f"{PODS}/{name}")


def phase(cluster: Cluster, name: str) -> str | None:
    return ((read(cluster, name) or {}).get("status") or {}).get("phase")


def finished(cluster: Cluster, name: str, *, timeout: float = 30) -> dict:
    return wait_for(lambda: (p := read(cluster, name)) and p["status"].get("phase") in ("Succeeded", "Failed") and p,
                    timeout=timeout, what=lambda: f"pod {name} to finish: {(read(cluster, name) or {}).get('status')}")


def running(cluster: Cluster, name: str, *, timeout: float = 30) -> dict:
    return wait_for(lambda: (p := read(cluster, name)) and p["status"].get("phase") == "Running"
                    and "running" in p["status"]["containerStatuses"][0]["state"] and p,
                    timeout=timeout, what=lambda: f"pod {name} to run: {(read(cluster, name) or {}).get('status')}")


def terminated(document: dict) -> dict:
    return document["status"]["containerStatuses"][0]["state"]["terminated"]


def condition(document: dict, kind: str) -> dict | None:
    return next((c for c in document["status"].get("conditions") or [] if c["type"] == kind), None)


def process_gone(pid: int) -> bool:
    """No such process, or a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def delete(cluster: Cluster, name: str) -> None:
    cluster.request("DELETE", f"{PODS}/{name}")


# -- the launcher and the Node ---------------------------------------------------------


def test_binaries_are_the_versions_tools_pins() -> None:
    go_mod = (ROOT / "tools" / "go.mod").read_text()
    etcd_mod = (ROOT / "tools" / "etcd" / "go.mod").read_text()
    assert re.search(rf"^\s*k8s\.io/kubernetes {re.escape(binaries.KUBERNETES_VERSION)}$", go_mod, re.M)
    assert re.search(rf"^\s*helm\.sh/helm/v3 {re.escape(binaries.HELM_VERSION)}$", go_mod, re.M)
    assert re.search(rf"^\s*require go\.etcd\.io/etcd/server/v3 {re.escape(binaries.ETCD_VERSION)}$", etcd_mod, re.M)
    toxiproxy_mod = (ROOT / "tools" / "toxiproxy" / "go.mod").read_text()
    assert re.search(rf"^require github\.com/Shopify/toxiproxy/v2 {re.escape(binaries.TOXIPROXY_VERSION)}$",
                     toxiproxy_mod, re.M)
    assert binaries.cache_key() == (f"k8s-{binaries.KUBERNETES_VERSION}_etcd-{binaries.ETCD_VERSION}"
                                    f"_helm-{binaries.HELM_VERSION}")
    # What was built is what is pinned.
    apiserver = subprocess.run([tool("kube-apiserver"), "--version"], capture_output=True, text=True, timeout=30)
    assert apiserver.stdout.strip() == f"Kubernetes {binaries.KUBERNETES_VERSION}"
    kubectl = json.loads(subprocess.run([tool("kubectl"), "version", "--client", "-o", "json"], capture_output=True,
                                        text=True, timeout=30).stdout)
    assert kubectl["clientVersion"]["gitVersion"] == binaries.KUBERNETES_VERSION
    etcd = subprocess.run([tool("etcd"), "--version"], capture_output=True, text=True, timeout=30).stdout
    assert f"etcd Version: {binaries.ETCD_VERSION.lstrip('v')}" in etcd


def test_the_node_is_ready_with_gpus_and_renews_its_lease(cluster: Cluster) -> None:
    assert cluster.local.startup_seconds is not None and cluster.local.startup_seconds < 120
    for name, component in cluster.local.components.items():
        assert component.running, name
    node = cluster.get(f"/api/v1/nodes/{NODE}")
    status = node["status"]
    assert status["capacity"]["nvidia.com/gpu"] == str(GPUS) and status["allocatable"]["nvidia.com/gpu"] == str(GPUS)
    assert {"cpu", "memory", "pods"} <= set(status["capacity"])
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready == {"MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False", "Ready": "True"}
    assert not [t for t in node["spec"].get("taints") or [] if t["key"].startswith("node.kubernetes.io/")]
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == NODE
    assert status["nodeInfo"]["kubeletVersion"] == binaries.KUBERNETES_VERSION
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == cluster.local.ports["kubelet"]
    listed = cluster.kubectl("get", "nodes", "--no-headers").stdout.split()
    assert listed[:2] == [NODE, "Ready"]

    path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}"
    lease = cluster.get(path)
    assert lease["spec"]["holderIdentity"] == NODE and lease["spec"]["leaseDurationSeconds"] == 40
    first = lease["spec"]["renewTime"]
    wait_for(lambda: cluster.get(path)["spec"]["renewTime"] > first, timeout=15, what="the Lease's renewal")


# -- scheduling: the real scheduler and the node's GPUs --------------------------------


def test_a_pod_asking_for_more_gpus_than_free_waits_for_one_to_finish(cluster: Cluster, tmp_path: Path) -> None:
    go = tmp_path / "go"
    gpus = {"resources": {"limits": {"nvidia.com/gpu": str(GPUS)}}}
    create(cluster, pod("gpu-holder", "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.05)",
                        str(go), container=gpus))
    running(cluster, "gpu-holder")
    create(cluster, pod("gpu-waiter", "print('got a gpu')", container={"resources": {"limits": {"nvidia.com/gpu": "1"}}}))

    def unschedulable() -> dict | None:
        scheduled = condition(read(cluster, "gpu-waiter"), "PodScheduled")
        return scheduled if scheduled and scheduled["status"] == "False" else None

    scheduled = wait_for(unschedulable, timeout=30, what="the scheduler to find no node for gpu-waiter")
    assert scheduled["reason"] == "Unschedulable" and "Insufficient nvidia.com/gpu" in scheduled["message"]
    waiting = read(cluster, "gpu-waiter")
    assert waiting["status"]["phase"] == "Pending" and not waiting["spec"].get("nodeName")
    events = wait_for(lambda: [e for e in cluster.items(f"/api/v1/namespaces/{NS}/events",
                                                        fieldSelector="involvedObject.name=gpu-waiter")
                               if e["reason"] == "FailedScheduling"], timeout=15, what="a FailedScheduling event")
    assert "Insufficient nvidia.com/gpu" in events[0]["message"]

    go.touch()
    assert finished(cluster, "gpu-holder")["status"]["phase"] == "Succeeded"
    done = finished(cluster, "gpu-waiter", timeout=60)
    assert done["spec"]["nodeName"] == NODE and done["status"]["phase"] == "Succeeded"
    assert condition(done, "PodScheduled")["status"] == "True"


# -- what a container sees -------------------------------------------------------------

ENV_CODE = """
import json, os, sys
from pathlib import Path
mounts = Path(sys.argv[1])
Path('relative.txt').write_text('in the working dir')
(mounts / 'scratch' / 'made.txt').write_text('scratch')
(mounts / 'host' / 'made.txt').write_text('from the pod')
try:
    (mounts / 'secret' / 'x').write_text('x')
    secret_writable = True
except OSError:
    secret_writable = False
names = ['GREETING', 'POD', 'NAMESPACE', 'NODE', 'APP', 'NOTE', 'FROM_CM', 'FROM_SECRET', 'OPTIONAL', 'PREFIX_a',
         'HOSTNAME', 'OMP_NUM_THREADS', 'KUBERNETES_SERVICE_HOST']
report = {
    'argv': sys.argv[2:], 'cwd': os.getcwd(),
    'env': {n: os.environ.get(n) for n in names},
    'config': {p.name: p.read_text() for p in sorted((mounts / 'config').iterdir()) if not p.name.startswith('.')},
    'secret': {p.name: p.read_text() for p in sorted((mounts / 'secret').iterdir()) if not p.name.startswith('.')},
    'host': (mounts / 'host' / 'given.txt').read_text(),
    'secret_writable': secret_writable,
}
Path('/dev/termination-log').write_text(json.dumps(report))
"""


def test_command_env_working_dir_and_volumes(cluster: Cluster, tmp_path: Path) -> None:
    mounts, host, work = tmp_path / "mnt", tmp_path / "host", tmp_path / "work"
    host.mkdir()
    (host / "given.txt").write_text("from the host")
    apply(cluster, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": NS},
                    "data": {"a": "1", "b": "two"}})
    apply(cluster, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS},
                    "data": {"password": base64.b64encode(b"s3cret").decode()}})
    container = {
        "workingDir": str(work),
        "env": [
            {"name": "NAME", "value": "world"},
            {"name": "GREETING", "value": "hello $(NAME)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
            {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "b"}}},
            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "OPTIONAL", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "x", "optional": True}}},
        ],
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "PREFIX_"}],
        "resources": {"limits": {"cpu": "1500m"}},
        "volumeMounts": [
            {"name": "scratch", "mountPath": str(mounts / "scratch")},
            {"name": "config", "mountPath": str(mounts / "config")},
            {"name": "secret", "mountPath": str(mounts / "secret"), "readOnly": True},
            {"name": "host", "mountPath": str(mounts / "host")},
        ],
    }
    volumes = [{"name": "scratch", "emptyDir": {}}, {"name": "config", "configMap": {"name": "settings"}},
               {"name": "secret", "secret": {"secretName": "creds"}},
               {"name": "host", "hostPath": {"path": str(host), "type": "Directory"}}]
    document = pod("env", ENV_CODE, str(mounts), "$(GREETING)", "$$(NAME)", "$(UNDEFINED)", "--out=$(NAMESPACE)/x",
                   container=container, volumes=volumes)
    document["metadata"].update(labels={"app": "envtest"}, annotations={"note": "kept"})
    create(cluster, document)
    done = finished(cluster, "env")
    assert terminated(done)["reason"] == "Completed", terminated(done)
    report = json.loads(terminated(done)["message"])
    assert report["argv"] == ["hello world", "$(NAME)", "$(UNDEFINED)", f"--out={NS}/x"]
    assert report["cwd"] == str(work) and (work / "relative.txt").read_text() == "in the working dir"
    assert report["env"] == {
        "GREETING": "hello world", "POD": "env", "NAMESPACE": NS, "NODE": NODE, "APP": "envtest", "NOTE": "kept",
        "FROM_CM": "two", "FROM_SECRET": "s3cret", "OPTIONAL": None, "PREFIX_a": "1", "HOSTNAME": "env",
        "OMP_NUM_THREADS": "2", "KUBERNETES_SERVICE_HOST": "127.0.0.1",
    }
    assert report["config"] == {"a": "1", "b": "two"}
    assert report["secret"] == {"password": "s3cret"} and report["secret_writable"] is False
    assert report["host"] == "from the host" and (host / "made.txt").read_text() == "from the pod"
    # The volumes were mounted in the pod's own mount namespace: on the host, the mount
    # points stayed empty, and the emptyDir lives in the pod's sandbox.
    assert not any((mounts / "scratch").iterdir()) and not any((mounts / "config").iterdir())
    sandbox = cluster.workdir / "node" / "pods" / done["metadata"]["uid"] / "volumes" / "scratch"
    assert (sandbox / "made.txt").read_text() == "scratch"


TOKEN_CODE = """
import base64, json, os, ssl, urllib.error, urllib.request
folder = '/var/run/secrets/kubernetes.io/serviceaccount'
token = open(folder + '/token').read()
namespace = open(folder + '/namespace').read()
context = ssl.create_default_context(cafile=folder + '/ca.crt')
server = 'https://%s:%s' % (os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT'])
def call(path):
    request = urllib.request.Request(server + path, headers={'Authorization': 'Bearer ' + token})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
own = call('/api/v1/namespaces/%s/pods/%s' % (namespace, os.environ['HOSTNAME']))
secrets = call('/api/v1/namespaces/%s/secrets' % namespace)
claims = json.loads(base64.urlsafe_b64decode(token.split('.')[1] + '=='))
report = {'namespace': namespace, 'sub': claims['sub'], 'own': [own[0], own[1].get('metadata', {}).get('name')],
          'secrets': [secrets[0], secrets[1].get('message')]}
open('/dev/termination-log', 'w').write(json.dumps(report))
"""


def test_the_service_account_token_authenticates_the_pod(cluster: Cluster) -> None:
    """The kube-api-access projected volume (token from the TokenRequest API, ca.crt,
    namespace): the pod calls the API server as system:serviceaccount:NS:reader, and RBAC
    judges it."""
    apply(cluster, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader", "namespace": NS}})
    apply(cluster, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": "pod-reader", "namespace": NS},
                    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})
    apply(cluster, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": "pod-reader", "namespace": NS},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                    "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": NS}]})
    create(cluster, pod("caller", TOKEN_CODE, serviceAccountName="reader"))
    done = finished(cluster, "caller")
    assert terminated(done)["exitCode"] == 0, terminated(done)
    mounts = done["spec"]["containers"][0]["volumeMounts"]
    assert [m["mountPath"] for m in mounts] == ["/var/run/secrets/kubernetes.io/serviceaccount"]
    report = json.loads(terminated(done)["message"])
    account = f"system:serviceaccount:{NS}:reader"
    assert report["namespace"] == NS and report["sub"] == account
    assert report["own"] == [200, "caller"]  # allowed by the RoleBinding
    assert report["secrets"][0] == 403 and f'User "{account}" cannot list resource "secrets"' in report["secrets"][1]


# -- how containers end ------------------------------------------------------------------


def test_a_volume_over_the_images_python_leaves_it_visible(cluster: Cluster) -> None:
    """The image is this machine: an emptyDir mounted over the folder that holds the
    interpreter (as the chart's emptyDir at /tmp covers a project cloned under /tmp) hides
    the folder's other files, not Python."""
    covered = str(Path(sys.base_prefix).parent)
    create(cluster, pod("covered", f"import os, sys; print(sorted(os.listdir({covered!r})), sys.version_info[:2])",
                        container={"volumeMounts": [{"name": "scratch", "mountPath": covered}]},
                        volumes=[{"name": "scratch", "emptyDir": {}}]))
    done = finished(cluster, "covered")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    listed = cluster.kubectl("logs", "covered", "-n", NS).stdout
    assert Path(sys.base_prefix).name in listed  # the interpreter's folder, mounted again inside the volume


def test_exit_codes_give_reason_and_phase(cluster: Cluster) -> None:
    create(cluster, pod("exit-zero", "print('fine')"))
    create(cluster, pod("exit-three", "raise SystemExit(3)"))
    create(cluster, pod("no-program", command=["no-such-program-here"]))
    succeeded, failed, unstartable = (finished(cluster, name) for name in ("exit-zero", "exit-three", "no-program"))
    assert succeeded["status"]["phase"] == "Succeeded"
    assert terminated(succeeded)["exitCode"] == 0 and terminated(succeeded)["reason"] == "Completed"
    assert terminated(succeeded)["startedAt"] <= terminated(succeeded)["finishedAt"]
    assert terminated(succeeded)["containerID"].startswith("process://")
    assert condition(succeeded, "Ready")["status"] == "False" and condition(succeeded, "Ready")["reason"] == "PodCompleted"
    assert failed["status"]["phase"] == "Failed"
    assert terminated(failed)["exitCode"] == 3 and terminated(failed)["reason"] == "Error"
    assert unstartable["status"]["phase"] == "Failed"
    assert terminated(unstartable)["exitCode"] == 128 and terminated(unstartable)["reason"] == "StartError"
    assert "no-such-program-here" in terminated(unstartable)["message"]


def test_termination_messages(cluster: Cluster, tmp_path: Path) -> None:
    custom = str(tmp_path / "message")
    write = "import sys; open(sys.argv[1], 'w').write(sys.argv[2] * int(sys.argv[3])); raise SystemExit(int(sys.argv[4]))"
    create(cluster, pod("message", write, "/dev/termination-log", '{"accuracy": 0.9}', "1", "0"))
    create(cluster, pod("custom-path", write, custom, "done", "1", "0", container={"terminationMessagePath": custom}))
    create(cluster, pod("long-message", write, "/dev/termination-log", "x", "5000", "0"))
    noisy = "import sys\nfor i in range(100): print(f'line {i}')\nsys.exit(1)"
    create(cluster, pod("fallback", noisy, container={"terminationMessagePolicy": "FallbackToLogsOnError"}))
    create(cluster, pod("fallback-ok", "print('not a message')",
                        container={"terminationMessagePolicy": "FallbackToLogsOnError"}))
    create(cluster, pod("fallback-file", write, "/dev/termination-log", "from the file", "1", "2",
                        container={"terminationMessagePolicy": "FallbackToLogsOnError"}))
    assert terminated(finished(cluster, "message"))["message"] == '{"accuracy": 0.9}'
    assert terminated(finished(cluster, "custom-path"))["message"] == "done"
    assert terminated(finished(cluster, "long-message"))["message"] == "x" * 4096  # the kubelet keeps 4 KiB
    assert terminated(finished(cluster, "fallback"))["message"] == "".join(f"line {i}\n" for i in range(20, 100))
    assert "message" not in terminated(finished(cluster, "fallback-ok"))  # logs only on an error
    assert terminated(finished(cluster, "fallback-file"))["message"] == "from the file"  # the file first
    assert not Path(custom).read_bytes()  # written in the pod's mount namespace


def test_memory_limit_ends_in_oom_killed(cluster: Cluster) -> None:
    probe = MemoryCgroup.create(f"kubenas-probe-{os.getpid()}", 64 * 2**20)
    if probe is None:
        missing("this machine offers the kubelet no writable memory cgroup (v1 memory controller or v2 "
                "with memory in cgroup.subtree_control): memory limits are not enforced")
    probe.remove()
    create(cluster, pod("hungry", "data = b'x' * (300 * 2**20); print(len(data))",
                        container={"resources": {"limits": {"memory": "64Mi"}}}))
    done = finished(cluster, "hungry")
    assert done["status"]["phase"] == "Failed"
    assert terminated(done)["reason"] == "OOMKilled" and terminated(done)["exitCode"] == 137, terminated(done)


def test_active_deadline_fails_the_pod(cluster: Cluster, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    create(cluster, pod("slow", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)",
                        str(pid_file), activeDeadlineSeconds=2))
    started = time.monotonic()
    done = finished(cluster, "slow", timeout=20)
    assert time.monotonic() - started < 15
    assert done["status"]["phase"] == "Failed" and done["status"]["reason"] == "DeadlineExceeded"
    assert "deadline" in done["status"]["message"]
    assert process_gone(int(pid_file.read_text()))


def test_on_failure_restarts_the_container_in_place(cluster: Cluster, tmp_path: Path) -> None:
    counter = tmp_path / "tries"
    code = ("import sys\nfrom pathlib import Path\np = Path(sys.argv[1])\nn = int(p.read_text()) + 1 if p.exists() "
            "else 1\np.write_text(str(n))\nprint('try', n)\nsys.exit(0 if n == 3 else 1)")
    create(cluster, pod("flaky", code, str(counter), restartPolicy="OnFailure"))
    done = finished(cluster, "flaky")
    assert done["status"]["phase"] == "Succeeded"
    status = done["status"]["containerStatuses"][0]
    assert status["restartCount"] == 2 and status["lastState"]["terminated"]["exitCode"] == 1
    assert cluster.kubectl("logs", "-n", NS, "flaky").stdout == "try 3\n"
    assert cluster.kubectl("logs", "-n", NS, "flaky", "--previous").stdout == "try 2\n"


# -- deletion --------------------------------------------------------------------------

TRAP_CODE = """
import os, signal, subprocess, sys, time
from pathlib import Path
out = Path(sys.argv[1])
child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
def stop(signum, frame):
    (out / 'signal').write_text(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
(out / 'pids').write_text(f'{os.getpid()} {child.pid}')
time.sleep(600)
"""


def test_deletion_sends_sigterm_and_removes_the_pod(cluster: Cluster, tmp_path: Path) -> None:
    create(cluster, pod("trapper", TRAP_CODE, str(tmp_path), terminationGracePeriodSeconds=30))
    wait_for(lambda: (tmp_path / "pids").exists() and len((tmp_path / "pids").read_text().split()) == 2,
             timeout=30, what="the pid file")
    assert running(cluster, "trapper")["status"]["containerStatuses"][0]["ready"] is True
    main_pid, child_pid = map(int, (tmp_path / "pids").read_text().split())
    started = time.monotonic()
    delete(cluster, "trapper")
    wait_for(lambda: read(cluster, "trapper") is None, timeout=20, what="the pod object to disappear")
    assert time.monotonic() - started < 10  # the handler exited at once: no waiting out the grace period
    assert (tmp_path / "signal").read_text() == "SIGTERM"
    wait_for(lambda: process_gone(main_pid) and process_gone(child_pid), timeout=10,
             what="the container's processes to die")


def test_deletion_kills_a_process_that_ignores_sigterm_after_the_grace_period(cluster: Cluster, tmp_path: Path) -> None:
    code = ("import os, signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "open(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(600)")
    pid_file = tmp_path / "pid"
    create(cluster, pod("stubborn", code, str(pid_file), terminationGracePeriodSeconds=2))
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=30, what="the pid file")
    running(cluster, "stubborn")
    started = time.monotonic()
    delete(cluster, "stubborn")
    wait_for(lambda: read(cluster, "stubborn") is None, timeout=20, what="the pod object to disappear")
    assert 1.5 <= time.monotonic() - started < 10
    assert process_gone(int(pid_file.read_text()))


# -- logs and images -------------------------------------------------------------------


def test_kubectl_logs(cluster: Cluster) -> None:
    code = "import sys, time\nprint('out one')\nprint('err two', file=sys.stderr)\ntime.sleep(1.5)\nprint('out three')"
    create(cluster, pod("talker", code))
    running(cluster, "talker")
    followed = cluster.kubectl("logs", "-n", NS, "talker", "-f", timeout=30).stdout
    assert followed == "out one\nerr two\nout three\n"
    finished(cluster, "talker")
    assert cluster.kubectl("logs", "-n", NS, "talker").stdout == "out one\nerr two\nout three\n"
    assert cluster.kubectl("logs", "-n", NS, "talker", "--tail=1").stdout == "out three\n"
    assert cluster.kubectl("logs", "-n", NS, "talker", "-c", "main", "--limit-bytes=3").stdout == "out"
    missing = cluster.kubectl("logs", "-n", NS, "nobody", check=False)
    assert missing.returncode != 0 and 'pods "nobody" not found' in missing.stderr


def test_an_image_map_image_runs_without_a_command(cluster: Cluster) -> None:
    create(cluster, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "imaged", "namespace": NS},
                     "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": f"{IMAGE}:1.2"}]}})
    create(cluster, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "imaged-args", "namespace": NS},
                     "spec": {"restartPolicy": "Never", "containers": [{
                         "name": "main", "image": f"{IMAGE}@sha256:{'0' * 64}", "args": ["given"], "workingDir": "/",
                         "env": [{"name": "GREETING", "value": "the pod"}]}]}})
    create(cluster, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unknown-image", "namespace": NS},
                     "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "nowhere/unknown"}]}})
    assert terminated(finished(cluster, "imaged"))["reason"] == "Completed"
    assert terminated(finished(cluster, "imaged-args"))["reason"] == "Completed"
    assert cluster.kubectl("logs", "-n", NS, "imaged").stdout == \
        f"hello from the image {cluster.workdir} default-arg\n"
    assert cluster.kubectl("logs", "-n", NS, "imaged-args").stdout == "hello from the pod / given\n"
    # An image the map does not know, without a command: CreateContainerConfigError, Pending.
    waiting = wait_for(lambda: (read(cluster, "unknown-image")["status"].get("containerStatuses") or [{}])[0]
                       .get("state", {}).get("waiting", {}).get("reason") == "CreateContainerConfigError"
                       and read(cluster, "unknown-image"), timeout=30, what="CreateContainerConfigError")
    assert waiting["status"]["phase"] == "Pending"
    assert "not in the kubelet's image map" in waiting["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    delete(cluster, "unknown-image")
    wait_for(lambda: read(cluster, "unknown-image") is None, timeout=20, what="the pod's removal")


def test_a_container_waits_for_a_config_map_created_after_it(cluster: Cluster) -> None:
    """A real kubelet retries CreateContainerConfigError: the container starts once the
    ConfigMap it names exists (pods racing their namespace's kube-root-ca.crt need it too)."""
    create(cluster, pod("early", "import os; print(os.environ['LATE'])", container={
        "env": [{"name": "LATE", "valueFrom": {"configMapKeyRef": {"name": "late", "key": "value"}}}]}))
    wait_for(lambda: ((read(cluster, "early")["status"].get("containerStatuses") or [{}])[0]
                      .get("state", {}).get("waiting", {}).get("reason") == "CreateContainerConfigError"),
             timeout=30, what="CreateContainerConfigError")
    apply(cluster, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late", "namespace": NS},
                    "data": {"value": "arrived"}})
    try:
        done = finished(cluster, "early", timeout=15)
        assert done["status"]["phase"] == "Succeeded"
        assert cluster.kubectl("logs", "-n", NS, "early").stdout == "arrived\n"
    finally:
        delete(cluster, "early")


# -- the kubelet's own life, and the cluster's end ---------------------------------------


def test_a_restarted_kubelet_fails_the_pods_it_lost(cluster: Cluster, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    create(cluster, pod("orphan", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
                        "time.sleep(600)", str(pid_file)))
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=30, what="the pid file")
    running(cluster, "orphan")
    cluster.local.restart("kubelet")  # SIGKILL: its pods die with it (PR_SET_PDEATHSIG)
    wait_for(lambda: process_gone(int(pid_file.read_text())), timeout=10, what="the pod's process to die")
    done = finished(cluster, "orphan", timeout=30)
    assert done["status"]["phase"] == "Failed"
    assert terminated(done)["reason"] == "ContainerStatusUnknown" and terminated(done)["exitCode"] == 137
    # The new kubelet runs new pods.
    create(cluster, pod("after-restart", "print('again')"))
    assert finished(cluster, "after-restart")["status"]["phase"] == "Succeeded"


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or process_gone(int(entry.name)):
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(f"{entry.name}: {command}")
    return found


def test_stop_leaves_no_process_running(cluster: Cluster, tmp_path: Path) -> None:
    """Last: stops the module's cluster, with a pod still running."""
    pid_file = tmp_path / "pid"
    create(cluster, pod("left-running", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
                        "time.sleep(600)", str(pid_file)))
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=30, what="the pid file")
    pids = {name: component.process.pid for name, component in cluster.local.components.items()}
    assert _processes_mentioning(str(cluster.workdir))  # the components name their files there
    cluster.stop()
    for name, component in cluster.local.components.items():
        assert not component.running and process_gone(pids[name]), name
    assert process_gone(int(pid_file.read_text()))
    assert _processes_mentioning(str(cluster.workdir)) == []
    cluster.stop()  # again: nothing to do
