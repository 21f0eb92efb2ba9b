"""A small async client for the few API calls the operator makes itself.

kopf watches and posts Events; creating children, patching statuses and storing the
checkpoint go through this client, on aiohttp (kopf's own HTTP stack) with the same
credentials kopf logs in with.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp

from kubenas.operator.names import Resource

MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """A failed API call: HTTP status, Kubernetes reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class KubeClient:
    def __init__(self, *, server: str, session: aiohttp.ClientSession,
                 fresh_token: Callable[[], str | None] | None = None) -> None:
        self.server = server.rstrip("/")
        self.session = session
        # Service-account tokens rotate: on a 401, read the token again and retry once.
        self.fresh_token = fresh_token

    @classmethod
    def connect(
        cls,
        *,
        server: str,
        token: str | None = None,
        ca_path: str | None = None,
        certificate_path: str | None = None,
        private_key_path: str | None = None,
        insecure: bool = False,
        fresh_token: Callable[[], str | None] | None = None,
    ) -> KubeClient:
        context: ssl.SSLContext | bool = False if insecure else ssl.create_default_context(cafile=ca_path)
        if certificate_path and isinstance(context, ssl.SSLContext):
            context.load_cert_chain(certificate_path, private_key_path)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connector = aiohttp.TCPConnector(ssl=context if server.startswith("https") else False, limit=32)
        timeout = aiohttp.ClientTimeout(total=60)
        session = aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout)
        return cls(server=server, session=session, fresh_token=fresh_token)

    async def close(self) -> None:
        await self.session.close()

    async def request(
        self, method: str, path: str, *, body: Any = None, params: dict | None = None, content_type: str = "application/json"
    ) -> Any:
        try:
            return await self._request(method, path, body=body, params=params, content_type=content_type)
        except ApiError as error:
            token = self.fresh_token() if error.status == 401 and self.fresh_token else None
            if token is None or self.session.headers.get("Authorization") == f"Bearer {token}":
                raise
            self.session.headers["Authorization"] = f"Bearer {token}"
            return await self._request(method, path, body=body, params=params, content_type=content_type)

    async def _request(self, method: str, path: str, *, body: Any, params: dict | None, content_type: str) -> Any:
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with self.session.request(method, self.server + path, data=data, params=params, headers=headers) as response:
            text = await response.text()
            if response.status >= 400:
                try:
                    status = json.loads(text)
                    raise ApiError(response.status, status.get("reason") or "", status.get("message") or text)
                except ValueError:
                    raise ApiError(response.status, response.reason or "", text) from None
            return json.loads(text) if text else None

    async def create(self, resource: Resource, *, namespace: str, body: dict) -> dict:
        return await self.request("POST", resource.path(namespace=namespace), body=body)

    async def get(self, resource: Resource, *, namespace: str, name: str) -> dict | None:
        try:
            return await self.request("GET", resource.path(namespace=namespace, name=name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def list(self, resource: Resource, *, namespace: str, label_selector: str) -> list[dict]:
        answer = await self.request("GET", resource.path(namespace=namespace), params={"labelSelector": label_selector})
        return answer.get("items") or []

    async def patch(
        self, resource: Resource, *, namespace: str, name: str, patch: dict, subresource: str | None = None
    ) -> dict:
        path = resource.path(namespace=namespace, name=name, subresource=subresource)
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
