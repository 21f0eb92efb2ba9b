"""The process kubelet's HTTPS endpoint for `kubectl logs`: the API server connects to the
Node's address and kubeletEndpoint port with its kubelet client certificate and asks for
GET /containerLogs/{namespace}/{pod}/{container} (tailLines, limitBytes, previous,
follow). Only client certificates signed by the cluster's CA are accepted."""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from kubenas.localcluster.kubelet import Kubelet


class LogServer:
    def __init__(self, *, kubelet: Kubelet, port: int, cert: str, key: str, client_ca: str) -> None:
        self.kubelet = kubelet
        self.port = port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca)
        self.context.load_cert_chain(cert, key)
        self.context.verify_mode = ssl.CERT_REQUIRED
        app = web.Application()
        app.router.add_get("/healthz", lambda request: web.Response(text="ok"))
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        self.runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=self.context).start()

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        namespace, pod, container = (request.match_info[key] for key in ("namespace", "pod", "container"))
        folders = sorted((self.kubelet.workdir / "logs").glob(f"{namespace}_{pod}_*/{container}"),
                         key=lambda folder: folder.stat().st_mtime)
        instances = sorted(folders[-1].glob("*.log"), key=lambda path: int(path.stem)) if folders else []
        previous = request.query.get("previous") in ("true", "1")
        if len(instances) < (2 if previous else 1):
            raise web.HTTPBadRequest(text=f'container "{container}" in pod "{pod}" is waiting to start')
        path = instances[-2 if previous else -1]
        data = path.read_bytes()
        if "tailLines" in request.query:
            lines = int(request.query["tailLines"])
            data = b"".join(data.splitlines(keepends=True)[-lines:]) if lines > 0 else b""
        if "limitBytes" in request.query:
            data = data[: int(request.query["limitBytes"])]
        if request.query.get("follow") not in ("true", "1") or previous:
            return web.Response(body=data, content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(data)
        offset = path.stat().st_size
        uid = folders[-1].parent.name.rsplit("_", 1)[-1]
        while True:  # until this instance's process has exited and its log is read
            run = self.kubelet.runs.get(uid)
            alive = run is not None and run.process is not None and run.log_path == path
            size = path.stat().st_size
            if size > offset:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    await response.write(handle.read(size - offset))
                offset = size
            elif not alive:
                break
            await asyncio.sleep(0.2)
        await response.write_eof()
        return response
