"""A small async client for the few API calls the operator makes itself.

kopf watches and posts Events; creating children, patching statuses and storing the
checkpoint go through this client, on aiohttp (kopf's own HTTP stack) with the same
credentials kopf logs in with.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp

from kubenas.metrics import API_RETRIES
from kubenas.operator.names import Resource

MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "kubenas-operator/0.1.0"  # names the operator's own calls in audit logs (kopf's say "kopf/…")
# Worth another try: throttled, or the API server (or what is in front of it) briefly
# unavailable. A create that went through before the error answers 409 the next time,
# which callers already treat as "made before".
TRANSIENT = frozenset({429, 500, 502, 503, 504})
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)  # then the error reaches the driver (kopf restarts it)


class ApiError(Exception):
    """A failed API call: HTTP status, Kubernetes reason and message."""

    def __init__(self, status: int, reason: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after  # seconds, from a 429's Retry-After header


class KubeClient:
    def __init__(self, *, server: str, session: aiohttp.ClientSession,
                 fresh_token: Callable[[], str | None] | None = None,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        self.server = server.rstrip("/")
        self.session = session
        # Service-account tokens rotate: on a 401, read the token again and retry once.
        self.fresh_token = fresh_token
        self.retry_delays = retry_delays

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
        headers = {"User-Agent": USER_AGENT, **({"Authorization": f"Bearer {token}"} if token else {})}
        connector = aiohttp.TCPConnector(ssl=context if server.startswith("https") else False, limit=32)
        timeout = aiohttp.ClientTimeout(total=60)
        session = aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout)
        return cls(server=server, session=session, fresh_token=fresh_token)

    async def close(self) -> None:
        await self.session.close()

    async def request(
        self, method: str, path: str, *, body: Any = None, params: dict | None = None, content_type: str = "application/json"
    ) -> Any:
        """One API call; transient failures are retried with backoff (counted in
        kubenas_operator_api_retries_total), a 401 once with a freshly read token."""
        delays = iter(self.retry_delays)
        while True:
            try:
                return await self._authorised(method, path, body=body, params=params, content_type=content_type)
            except ApiError as error:
                delay = next(delays, None) if error.status in TRANSIENT else None
                if delay is None:
                    raise
                cause = str(error.status)
                delay = max(delay, error.retry_after or 0.0)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as error:
                delay = next(delays, None)
                if delay is None:
                    raise ApiError(503, "ServiceUnavailable", f"{method} {path}: {error!r}") from error
                cause = "timeout" if isinstance(error, asyncio.TimeoutError) else "connection"
            API_RETRIES.labels(cause).inc()
            await asyncio.sleep(delay)

    async def _authorised(self, method: str, path: str, *, body: Any, params: dict | None, content_type: str) -> Any:
        try:
            return await self._request(method, path, body=body, params=params, content_type=content_type)
        except ApiError as error:
            token = self.fresh_token() if error.status == 401 and self.fresh_token else None
            if token is None or self.session.headers.get("Authorization") == f"Bearer {token}":
                raise
            API_RETRIES.labels("401").inc()
            self.session.headers["Authorization"] = f"Bearer {token}"
            return await self._request(method, path, body=body, params=params, content_type=content_type)

    async def _request(self, method: str, path: str, *, body: Any, params: dict | None, content_type: str) -> Any:
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with self.session.request(method, self.server + path, data=data, params=params, headers=headers) as response:
            text = await response.text()
            if response.status >= 400:
                retry_after = _seconds(response.headers.get("Retry-After"))
                try:
                    status = json.loads(text)
                    status = status if isinstance(status, dict) else {}
                except ValueError:
                    raise ApiError(response.status, response.reason or "", text, retry_after=retry_after) from None
                raise ApiError(response.status, status.get("reason") or "", status.get("message") or text,
                               retry_after=retry_after)
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

    async def list(self, resource: Resource, *, namespace: str, label_selector: str,
                   field_selector: str | None = None) -> list[dict]:
        params = {"labelSelector": label_selector, **({"fieldSelector": field_selector} if field_selector else {})}
        answer = await self.request("GET", resource.path(namespace=namespace), params=params)
        return answer.get("items") or []

    async def patch(
        self, resource: Resource, *, namespace: str, name: str, patch: dict, subresource: str | None = None
    ) -> dict:
        path = resource.path(namespace=namespace, name=name, subresource=subresource)
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)


def _seconds(value: str | None) -> float | None:
    try:
        return min(float(value), 60.0) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff decides
