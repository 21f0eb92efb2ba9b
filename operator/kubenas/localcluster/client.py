"""The process kubelet's API client: aiohttp with the node's client certificate from its
kubeconfig, JSON in and out, and a watch that yields events. Small on purpose: the
kubelet imports neither kopf nor the `kubernetes` library."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class Client:
    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(Path(kubeconfig).read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.server = cluster["server"].rstrip("/")
        context = ssl.create_default_context(cafile=cluster["certificate-authority"])
        context.load_cert_chain(user["client-certificate"], user["client-key"])
        self._ssl = context
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=16),
                headers={"User-Agent": "kubenas-process-kubelet/0.1.0", "Accept": "application/json"},
                read_bufsize=2**22,  # a watch event is one line: room for large objects
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, *, body: Any = None, params: dict | None = None,
                      content_type: str = "application/json", timeout: float = 30) -> Any:
        data = None if body is None else json.dumps(body)
        try:
            async with self.session.request(method, self.server + path, data=data, params=params,
                                            headers={"Content-Type": content_type},
                                            timeout=aiohttp.ClientTimeout(total=timeout)) as answer:
                text = await answer.text()
                if answer.status >= 400:
                    raise _error(answer.status, text)
                return json.loads(text) if text else None
        except aiohttp.ClientPayloadError as error:  # the API server went away mid-answer
            raise ConnectionError(f"{method} {path}: {error}") from error

    async def get(self, path: str) -> dict | None:
        try:
            return await self.request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def watch(self, path: str, *, params: dict) -> AsyncIterator[dict]:
        """The events of one watch request, until the server ends it; an ERROR event
        (410 Gone: the resourceVersion is too old) raises ApiError."""
        query = {**params, "watch": "1", "allowWatchBookmarks": "true"}
        async with self.session.get(self.server + path, params=query,
                                    timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as answer:
            if answer.status >= 400:
                raise _error(answer.status, await answer.text())
            try:
                async for line in answer.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        status = event["object"]
                        raise ApiError(status.get("code", 500), status.get("reason", ""), status.get("message", ""))
                    yield event
            except aiohttp.ClientPayloadError as error:  # the API server went away mid-stream (a restart)
                raise ConnectionError(f"watch {path}: {error}") from error


def _error(status: int, text: str) -> ApiError:
    try:
        body = json.loads(text)
    except ValueError:
        body = {}
    return ApiError(status, body.get("reason", ""), body.get("message", text))
