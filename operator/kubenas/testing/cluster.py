"""A whole emulated cluster in this process: the store, the API server on a TCP port,
the Job controller and the fake kubelet. `serve()` is `kubenas dev-cluster`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

import kmock
import yaml

from kubenas.testing.apiserver import ApiServer
from kubenas.testing.store import Store
from kubenas.testing.workloads import JobController, Kubelet


class DevCluster:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, workdir: Path | None = None) -> None:
        self._own_workdir = tempfile.TemporaryDirectory(prefix="kubenas-dev-cluster-") if workdir is None else None
        self.workdir = Path(self._own_workdir.name) if self._own_workdir else workdir
        self.store = Store()
        self.kubelet = Kubelet(store=self.store, workdir=self.workdir)
        self.job_controller = JobController(store=self.store)
        self.api_server = ApiServer(store=self.store, pod_logs=self.kubelet)
        self._server = kmock.Server(self.api_server, host=host, port=port)
        self._controllers: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        """Where clients connect: 127.0.0.1 when listening on every address."""
        host = "127.0.0.1" if self._server.host in ("", "0.0.0.0", "::") else self._server.host
        return f"http://{host}:{self._server.port}"

    async def __aenter__(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        await self._server.__aenter__()
        self._controllers = [
            asyncio.create_task(self.job_controller.run(), name="job-controller"),
            asyncio.create_task(self.kubelet.run(), name="kubelet"),
        ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for task in self._controllers:
            task.cancel()
        await asyncio.gather(*self._controllers, return_exceptions=True)
        await self.job_controller.close()
        await self.kubelet.close()
        self.store.close()  # ends the watch streams, so the HTTP server stops without waiting on them
        await self._server.__aexit__(exc_type, exc, traceback)
        if self._own_workdir is not None:
            self._own_workdir.cleanup()

    def write_kubeconfig(self, path: Path, *, namespace: str = "default") -> None:
        """A kubeconfig without credentials that kubectl and kubernetes.config.load_kube_config accept."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubenas-dev", "cluster": {"server": self.url}}],
            "users": [{"name": "kubenas-dev", "user": {}}],
            "contexts": [
                {"name": "kubenas-dev", "context": {"cluster": "kubenas-dev", "user": "kubenas-dev", "namespace": namespace}}
            ],
            "current-context": "kubenas-dev",
            "preferences": {},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))


async def serve(*, kubeconfig: Path, host: str, port: int, workdir: Path) -> None:
    """Run a DevCluster in the foreground until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with DevCluster(host=host, port=port, workdir=workdir) as cluster:
            cluster.write_kubeconfig(kubeconfig)
            print(f"kubenas dev cluster: API server at {cluster.url}, pods run as processes under {workdir}", flush=True)
            print(f"  kubeconfig: {kubeconfig}", flush=True)
            print(f"  try:        kubectl --kubeconfig {kubeconfig} get namespaces", flush=True)
            print(f"  or:         export KUBECONFIG={kubeconfig}", flush=True)
            print("Ctrl-C stops it (and everything stored in it).", flush=True)
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)
