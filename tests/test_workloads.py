"""The emulated cluster's Job controller and fake kubelet, against its object store."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubenas.testing.contract import ApiError
from kubenas.testing.store import Store
from kubenas.testing.workloads import JobController, Kubelet

JOBS, PODS = "batch/v1/jobs", "v1/pods"
NAMESPACE = "default"


@dataclass
class Cluster:
    store: Store
    workdir: Path
    kubelet: Kubelet
    jobs: JobController
    tasks: list[asyncio.Task]

    async def restart_job_controller(self) -> None:
        await self.jobs.close()
        self.jobs = JobController(store=self.store)
        self.tasks.append(asyncio.create_task(self.jobs.run()))

    async def restart_kubelet(self) -> None:
        await self.kubelet.close()
        self.kubelet = Kubelet(store=self.store, workdir=self.workdir)
        self.tasks.append(asyncio.create_task(self.kubelet.run()))

    def job(self, name: str) -> dict | None:
        return self.store.get(JOBS, namespace=NAMESPACE, name=name)

    def pods(self, job_name: str) -> list[dict]:
        pods, _ = self.store.list(PODS, namespace=NAMESPACE, label_selector=f"job-name={job_name}")
        return sorted(pods, key=lambda pod: int(pod["metadata"]["resourceVersion"]))


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    store = Store()
    kubelet = Kubelet(store=store, workdir=tmp_path / "node")
    jobs = JobController(store=store)
    running = Cluster(store=store, workdir=tmp_path / "node", kubelet=kubelet, jobs=jobs, tasks=[asyncio.create_task(kubelet.run()), asyncio.create_task(jobs.run())])
    yield running
    await running.jobs.close()
    await running.kubelet.close()
    store.close()
    await asyncio.gather(*running.tasks)


async def eventually(check: Callable[[], Any], *, timeout: float = 5.0, what: str = "the condition") -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := check()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


def job_manifest(name: str, code: str, *args: str, container: dict | None = None, pod: dict | None = None, **spec: Any) -> dict:
    main = {"name": "main", "image": "python:3.11", "command": ["python", "-c", code], "args": list(args), **(container or {})}
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {"app": "test"}}, "spec": {"restartPolicy": "Never", "containers": [main], **(pod or {})}}, **spec},
    }


def condition(obj: dict | None, kind: str) -> dict | None:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == kind and c["status"] == "True"), None)


async def finished(cluster: Cluster, name: str, *, timeout: float = 5.0) -> dict:
    return await eventually(lambda: (job := cluster.job(name)) and (condition(job, "Complete") or condition(job, "Failed")) and job, timeout=timeout, what=f"job {name} to finish")


def terminated(pod: dict) -> dict:
    return pod["status"]["containerStatuses"][0]["state"]["terminated"]


def process_gone(pid: int) -> bool:
    """No such process, or a zombie: dead, waiting for its new parent (init) to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


async def test_job_completes_and_reports_the_termination_message(cluster: Cluster) -> None:
    document = '{"status": "Succeeded", "accuracy": 0.9}'
    code = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
    job = await cluster.store.create(JOBS, job_manifest("train", code, "/dev/termination-log", document))
    job = await finished(cluster, "train")
    status = job["status"]
    assert [c["type"] for c in status["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    assert condition(job, "Complete")["reason"] == "CompletionsReached"
    assert status["succeeded"] == 1 and "failed" not in status and "active" not in status
    assert status["completionTime"] >= status["startTime"] and status["uncountedTerminatedPods"] == {}
    [pod] = cluster.pods("train")
    assert re.fullmatch(r"train-[a-z0-9]{5}", pod["metadata"]["name"])
    uid = job["metadata"]["uid"]
    assert pod["metadata"]["labels"] == {"app": "test", "job-name": "train", "batch.kubernetes.io/job-name": "train", "controller-uid": uid, "batch.kubernetes.io/controller-uid": uid}
    assert pod["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "train", "uid": uid, "controller": True, "blockOwnerDeletion": True}]
    assert not pod["metadata"].get("finalizers")  # counted, then released
    assert pod["spec"]["nodeName"] == "kubenas-dev" and pod["spec"]["restartPolicy"] == "Never"
    assert pod["status"]["phase"] == "Succeeded" and pod["status"]["podIP"] == "127.0.0.1"
    container = pod["status"]["containerStatuses"][0]
    assert container["name"] == "main" and container["image"] == "python:3.11" and container["ready"] is False
    assert container["containerID"].startswith("containerd://")
    assert terminated(pod)["exitCode"] == 0 and terminated(pod)["reason"] == "Completed"
    assert terminated(pod)["message"] == document
    assert {c["type"] for c in pod["status"]["conditions"]} == {"PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"}


async def test_failing_job_retries_until_its_backoff_limit(cluster: Cluster) -> None:
    await cluster.store.create(JOBS, job_manifest("crash", "raise SystemExit(3)", backoffLimit=1))
    job = await finished(cluster, "crash")
    assert condition(job, "Failed")["reason"] == "BackoffLimitExceeded"
    assert condition(job, "FailureTarget")["reason"] == "BackoffLimitExceeded"
    assert condition(job, "Complete") is None and "completionTime" not in job["status"]
    assert job["status"]["failed"] == 2
    pods = cluster.pods("crash")
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        assert terminated(pod)["exitCode"] == 3 and terminated(pod)["reason"] == "Error"


async def test_fallback_to_logs_on_error_takes_the_log_tail(cluster: Cluster) -> None:
    code = "import sys\nfor i in range(100): print(f'line {i}')\nsys.exit(1)"
    await cluster.store.create(JOBS, job_manifest("noisy", code, container={"terminationMessagePolicy": "FallbackToLogsOnError"}))
    await finished(cluster, "noisy")
    [pod] = cluster.pods("noisy")
    assert terminated(pod)["message"] == "".join(f"line {i}\n" for i in range(20, 100))


async def test_active_deadline_kills_the_child(cluster: Cluster, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    code = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
    await cluster.store.create(JOBS, job_manifest("slow", code, str(pid_file), activeDeadlineSeconds=1))
    job = await finished(cluster, "slow", timeout=6)
    assert condition(job, "Failed")["reason"] == "DeadlineExceeded"
    assert job["status"]["failed"] == 1
    assert process_gone(int(pid_file.read_text()))


async def test_ttl_after_finished_deletes_the_job_and_its_pods(cluster: Cluster) -> None:
    await cluster.store.create(JOBS, job_manifest("brief", "pass", ttlSecondsAfterFinished=1))
    await finished(cluster, "brief")
    assert cluster.pods("brief")
    await eventually(lambda: cluster.job("brief") is None and not cluster.pods("brief"), timeout=4, what="the Job's deletion")


async def test_environment_expansion_field_refs_and_container_paths(cluster: Cluster) -> None:
    code = (
        "import json, os, sys\n"
        "open(sys.argv[3], 'w').write('made')\n"
        "names = ['GREETING', 'POD', 'NAMESPACE', 'NODE', 'APP', 'NOTE', 'OUT', 'OMP_NUM_THREADS', 'HOSTNAME']\n"
        "json.dump({'argv': sys.argv[1:], 'env': {n: os.environ[n] for n in names}}, open(os.environ['MESSAGE'], 'w'))\n"
    )
    container = {
        "env": [
            {"name": "NAME", "value": "world"},
            {"name": "GREETING", "value": "hello $(NAME)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
            {"name": "OUT", "value": "/data"},
            {"name": "MESSAGE", "value": "/dev/termination-log"},
        ],
        "volumeMounts": [{"name": "scratch", "mountPath": "/data"}],
        "resources": {"limits": {"cpu": "1500m"}},
    }
    manifest = job_manifest("env", code, "$(GREETING)", "$$(NAME)", "$(OUT)/made.txt", "--out=/data/x", container=container, pod={"volumes": [{"name": "scratch", "emptyDir": {}}]})
    manifest["spec"]["template"]["metadata"]["annotations"] = {"note": "kept"}
    await cluster.store.create(JOBS, manifest)
    job = await finished(cluster, "env")
    assert condition(job, "Complete")
    [pod] = cluster.pods("env")
    reported = json.loads(terminated(pod)["message"])
    sandbox_data = cluster.workdir / "pods" / pod["metadata"]["uid"] / "volumes" / "scratch"
    assert reported["argv"] == ["hello world", "$(NAME)", f"{sandbox_data}/made.txt", f"--out={sandbox_data}/x"]
    assert reported["env"] == {
        "GREETING": "hello world", "POD": pod["metadata"]["name"], "NAMESPACE": NAMESPACE, "NODE": "kubenas-dev",
        "APP": "test", "NOTE": "kept", "OUT": str(sandbox_data), "OMP_NUM_THREADS": "2", "HOSTNAME": pod["metadata"]["name"],
    }
    assert (sandbox_data / "made.txt").read_text() == "made"


async def test_deleting_a_pod_kills_its_process_group(cluster: Cluster, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "open(sys.argv[1], 'w').write(f'{os.getpid()} {child.pid}')\n"
        "time.sleep(60)\n"
    )
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "standalone", "namespace": NAMESPACE},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "python", "command": ["python", "-c", code, str(pids)]}]},
    }
    await cluster.store.create(PODS, pod)
    await eventually(lambda: pids.exists() and len(pids.read_text().split()) == 2, what="the pid file")
    running = cluster.store.get(PODS, namespace=NAMESPACE, name="standalone")
    assert running["status"]["phase"] == "Running"
    assert running["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    assert condition(running, "Ready")
    await cluster.store.delete(PODS, namespace=NAMESPACE, name="standalone")
    main_pid, grandchild_pid = map(int, pids.read_text().split())
    await eventually(lambda: process_gone(main_pid) and process_gone(grandchild_pid), timeout=4, what="the processes to die")


async def test_deleting_a_running_job_stops_its_pod(cluster: Cluster, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    code = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
    await cluster.store.create(JOBS, job_manifest("doomed", code, str(pid_file)))
    await eventually(lambda: pid_file.exists() and pid_file.read_text(), what="the pid file")
    await cluster.store.delete(JOBS, namespace=NAMESPACE, name="doomed")
    await eventually(lambda: not cluster.pods("doomed"), what="the pods' deletion")
    await eventually(lambda: process_gone(int(pid_file.read_text())), timeout=3, what="the process to die")


async def test_a_command_that_cannot_start_fails_with_start_error(cluster: Cluster) -> None:
    manifest = job_manifest("typo", "", container={"command": ["no-such-program-here"]})
    await cluster.store.create(JOBS, manifest)
    job = await finished(cluster, "typo")
    assert condition(job, "Failed")["reason"] == "BackoffLimitExceeded"
    [pod] = cluster.pods("typo")
    assert terminated(pod)["reason"] == "StartError" and terminated(pod)["exitCode"] == 128
    assert "no-such-program-here" in terminated(pod)["message"]


async def test_restarted_job_controller_adopts_the_running_pod(cluster: Cluster, tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.02)"
    await cluster.store.create(JOBS, job_manifest("steady", code, str(go)))
    await eventually(lambda: (cluster.job("steady") or {}).get("status", {}).get("ready") == 1, what="a ready pod")
    await cluster.restart_job_controller()
    await asyncio.sleep(0.3)  # the new controller has listed and reconciled everything
    assert len(cluster.pods("steady")) == 1
    go.touch()
    job = await finished(cluster, "steady")
    assert condition(job, "Complete") and job["status"]["succeeded"] == 1
    assert len(cluster.pods("steady")) == 1


async def test_restarted_kubelet_fails_the_pods_it_lost(cluster: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "first-try"
    code = "import os, sys, time\nif not os.path.exists(sys.argv[1]):\n    open(sys.argv[1], 'w').write(str(os.getpid()))\n    time.sleep(60)"
    await cluster.store.create(JOBS, job_manifest("survivor", code, str(marker), backoffLimit=1))
    await eventually(lambda: marker.exists() and (cluster.job("survivor") or {}).get("status", {}).get("ready") == 1, what="the first try")
    await cluster.restart_kubelet()
    assert process_gone(int(marker.read_text()))  # the closed kubelet took its processes along
    job = await finished(cluster, "survivor")
    assert condition(job, "Complete") and job["status"]["failed"] == 1 and job["status"]["succeeded"] == 1
    lost, replacement = cluster.pods("survivor")
    assert lost["status"]["phase"] == "Failed" and lost["status"]["reason"] == "NodeLost"
    assert terminated(lost)["reason"] == "ContainerStatusUnknown" and terminated(lost)["exitCode"] == 137
    assert condition(lost, "DisruptionTarget")
    assert replacement["status"]["phase"] == "Succeeded"


async def test_on_failure_restarts_the_container_in_place(cluster: Cluster, tmp_path: Path) -> None:
    counter = tmp_path / "tries"
    code = "import sys\nfrom pathlib import Path\np = Path(sys.argv[1])\nn = int(p.read_text()) + 1 if p.exists() else 1\np.write_text(str(n))\nprint('try', n)\nsys.exit(0 if n == 3 else 1)"
    await cluster.store.create(JOBS, job_manifest("flaky", code, str(counter), pod={"restartPolicy": "OnFailure"}, backoffLimit=6))
    job = await finished(cluster, "flaky")
    assert condition(job, "Complete")
    [pod] = cluster.pods("flaky")
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 2 and status["lastState"]["terminated"]["exitCode"] == 1
    assert cluster.kubelet.read_log(namespace=NAMESPACE, name=pod["metadata"]["name"]) == "try 3\n"


async def test_suspended_job_runs_no_pod_until_resumed(cluster: Cluster) -> None:
    await cluster.store.create(JOBS, job_manifest("later", "pass", suspend=True))
    await eventually(lambda: condition(cluster.job("later"), "Suspended"), what="the Suspended condition")
    assert not cluster.pods("later")
    await cluster.store.patch(JOBS, namespace=NAMESPACE, name="later", patch={"spec": {"suspend": False}})
    job = await finished(cluster, "later")
    assert condition(job, "Complete")
    suspended = next(c for c in job["status"]["conditions"] if c["type"] == "Suspended")
    assert suspended["status"] == "False" and suspended["reason"] == "JobResumed"


async def test_read_log(cluster: Cluster) -> None:
    code = "import sys; print('out one'); print('out two'); print('err', file=sys.stderr)"
    await cluster.store.create(JOBS, job_manifest("talk", code))
    await finished(cluster, "talk")
    [pod] = cluster.pods("talk")
    name = pod["metadata"]["name"]
    assert cluster.kubelet.read_log(namespace=NAMESPACE, name=name) == "out one\nout two\nerr\n"
    assert cluster.kubelet.read_log(namespace=NAMESPACE, name=name, container="main", tail_lines=1) == "err\n"
    with pytest.raises(ApiError) as missing:
        cluster.kubelet.read_log(namespace=NAMESPACE, name="nope")
    assert missing.value.status == 404
    with pytest.raises(ApiError) as wrong_container:
        cluster.kubelet.read_log(namespace=NAMESPACE, name=name, container="sidecar")
    assert wrong_container.value.status == 400


async def test_many_pods_need_no_thread_each(cluster: Cluster) -> None:
    threads_before = threading.active_count()
    for index in range(16):
        await cluster.store.create(JOBS, job_manifest(f"many-{index}", "import time; time.sleep(1)"))
    await eventually(lambda: all((cluster.job(f"many-{i}") or {}).get("status", {}).get("ready") == 1 for i in range(16)), timeout=10, what="16 running pods")
    assert threading.active_count() <= threads_before + 1
