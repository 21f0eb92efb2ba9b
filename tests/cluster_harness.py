"""An emulated cluster (kubenas.testing.DevCluster) in a background thread, operators as
real `kubenas operator` subprocesses, and kubectl: what the end-to-end tests drive."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import yaml

from kubenas.testing.cluster import DevCluster

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "manifests" / "crds"
FAKE_TRAINER = str(Path(__file__).with_name("fake_trainer.py"))
NAS = "/apis/kubenas.io/v1alpha1/namespaces/{ns}/neuralarchitecturesearches"
TRIALS = "/apis/kubenas.io/v1alpha1/namespaces/{ns}/nastrials"


class ClusterThread:
    """A DevCluster served from its own event loop, so tests may block on subprocesses."""

    def __init__(self, *, workdir: Path) -> None:
        self.workdir = workdir
        self.kubeconfig = workdir / "kubeconfig"
        self.url = ""
        self.dev: DevCluster | None = None  # the served cluster (its api_server records who called what)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="dev-cluster", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by start()
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with DevCluster(host="127.0.0.1", port=0, workdir=self.workdir / "nodes") as cluster:
            cluster.write_kubeconfig(self.kubeconfig)
            self.url = str(cluster.url).rstrip("/")
            self.dev = cluster
            self._ready.set()
            await self._stop.wait()

    def start(self) -> ClusterThread:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise RuntimeError("the dev cluster did not start") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    # -- plain HTTP, as any client -------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                params: dict | None = None) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            if error.code == 404 and method == "GET":
                return None
            raise AssertionError(f"{method} {path}: {error.code} {error.read().decode()}") from None

    def get(self, path: str, **params: str) -> Any:
        return self.request("GET", path, params=params or None)

    def items(self, path: str, **params: str) -> list[dict]:
        answer = self.get(path, **params)
        return [] if answer is None else answer["items"]

    def merge_patch(self, path: str, patch: dict) -> Any:
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], capture_output=True,
                              text=True, timeout=60, input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done


class OperatorProcess:
    """`kubenas operator` as a subprocess: killable like a real pod."""

    def __init__(self, *, cluster: ClusterThread, namespace: str, log: Path, args: list[str] | None = None) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log = log
        self.args = list(args or [])  # more `kubenas operator` options, e.g. --metrics-port
        self.process: subprocess.Popen | None = None

    def start(self) -> OperatorProcess:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kubenas.cli", "operator", "--kubeconfig", str(self.cluster.kubeconfig),
                 "--namespace", self.namespace, *self.args],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
             operator: OperatorProcess | None = None,
              interval: float = 0.2) -> Any:
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
    """A small MacroCNN search on digits; `trainer` "fake" (milliseconds) or "real"."""
    if trainer == "fake":
        container = {"name": "trainer", "image": "kubenas/fake-trainer", "command": ["python", FAKE_TRAINER],
                     "args": args or []}
    else:
        container = {"name": "trainer", "image": "ghcr.io/kubenas/trainer:0.1.0",
                     "command": ["python", "-m", "kubenas_trainer"],
                     "args": args or ["--dataset", "digits", "--epochs", "4", "--batch-size", "64",
                                      "--learning-rate", "0.05"]}
    container["env"] = [{"name": k, "value": v} for k, v in (env or {}).items()]
    container["resources"] = {"limits": {"cpu": "1"}}
    body = {
        "searchSpace": {"type": "MacroCNN", "macroCNN": {
            "filterHeights": [1, 3], "filterWidths": [1, 3], "numFilters": [8, 16],
            "depth": {"initialLayers": 2, "increment": 0, "everyTrials": 100, "maxLayers": 2},
            "imageSize": [8, 8], "skipConnections": True}},
        "controller": {"batchSize": 2},
        "reward": {"lastEpochs": 1},
        "maxTrials": 4,
        "parallelism": 2,
        "trial": {"kind": "Job", "template": {"spec": {"containers": [container]}}},
        **spec,
    }
    return {"apiVersion": "kubenas.io/v1alpha1", "kind": "NeuralArchitectureSearch",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def apply(cluster: ClusterThread, document: dict) -> subprocess.CompletedProcess:
    return cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))


def kubectl_available() -> bool:
    return shutil.which("kubectl") is not None
