"""The long-lived answers: watch streams (newline-delimited JSON events, ended by
timeoutSeconds, by the store closing, or with a 410 ERROR event) and followed logs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, Callable
from typing import Any

import aiohttp.web

from kubenas.testing import protocol
from kubenas.testing.contract import ApiError, PodLogs
from kubenas.testing.registry import ResourceType
from kubenas.testing.selectors import FieldSelector, LabelSelector
from kubenas.testing.store import Store

BOOKMARK_INTERVAL = 60.0  # seconds between bookmarks of an idle watch that allows them
LIVENESS_INTERVAL = 5.0  # how often an idle stream checks that its client is still there
LOG_POLL_INTERVAL = 0.5
FINISHED_PHASES = ("Succeeded", "Failed")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WatchRequest:
    resource_type: ResourceType
    namespace: str | None
    label_selector: str | None
    field_selector: str | None
    resource_version: str | None
    timeout: float | None  # timeoutSeconds
    bookmarks: bool  # allowWatchBookmarks
    initial_events: bool  # sendInitialEvents: ADDED for what exists, then a bookmark marking their end
    table_rows_object: str | None  # kubectl get -w asks for each object as a one-row Table, rows carrying this


async def serve_watch(
    raw_request: aiohttp.web.BaseRequest, *, store: Store, watch: WatchRequest
) -> aiohttp.web.StreamResponse:
    (
        LabelSelector.parse(watch.label_selector),
        FieldSelector.parse(watch.field_selector),
    )  # a bad selector is a 400, before streaming
    response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(raw_request)
    resource_type = watch.resource_type

    def render(obj: dict[str, Any]) -> dict[str, Any]:
        if watch.table_rows_object is None:
            return obj
        return protocol.as_table(
            resource_type, [obj], resource_version=obj["metadata"]["resourceVersion"], include_object=watch.table_rows_object
        )

    selection = {
        "namespace": watch.namespace,
        "label_selector": watch.label_selector,
        "field_selector": watch.field_selector,
    }
    since = watch.resource_version
    with contextlib.suppress(ConnectionError):
        if watch.initial_events:
            items, since = store.list(resource_type.key, **selection)
            for item in items:
                await response.write(protocol.watch_line("ADDED", render(item)))
            await response.write(
                protocol.watch_line("BOOKMARK", protocol.bookmark(resource_type, since, initial_events_end=True))
            )
        events = store.stream(resource_type.key, resource_version=since, **selection)
        await _relay(raw_request, response, events, watch=watch, render=render, store=store)
        await response.write_eof()
    return response


async def _relay(
    raw_request: aiohttp.web.BaseRequest,
    response: aiohttp.web.StreamResponse,
    events: AsyncGenerator[tuple[str, dict[str, Any]], None],
    *,
    watch: WatchRequest,
    render: Callable[[dict[str, Any]], dict[str, Any]],
    store: Store,
) -> None:
    """Copy events to the response until the timeout, the end of events, or the client leaving.
    The next event is awaited in a task that survives the idle timeouts: cancelling the
    generator itself would end it."""
    loop = asyncio.get_running_loop()
    deadline = None if watch.timeout is None else loop.time() + watch.timeout
    next_bookmark = loop.time() + BOOKMARK_INTERVAL
    pending: asyncio.Future[tuple[str, dict[str, Any]]] | None = None
    try:
        while deadline is None or loop.time() < deadline:
            pending = pending or asyncio.ensure_future(anext(events))
            waits = [LIVENESS_INTERVAL, next_bookmark - loop.time()] + (
                [deadline - loop.time()] if deadline is not None else []
            )
            done, _ = await asyncio.wait({pending}, timeout=max(0.0, min(waits)))
            if not done:
                if raw_request.transport is None or raw_request.transport.is_closing():
                    return
                if watch.bookmarks and loop.time() >= next_bookmark:
                    await response.write(
                        protocol.watch_line("BOOKMARK", protocol.bookmark(watch.resource_type, store.resource_version))
                    )
                    next_bookmark = loop.time() + BOOKMARK_INTERVAL
                continue
            finished, pending = pending, None
            try:
                event_type, obj = finished.result()
            except StopAsyncIteration:
                return
            except ApiError as error:
                await response.write(protocol.watch_line("ERROR", protocol.status(error)))
                return
            await response.write(protocol.watch_line(event_type, render(obj)))
        if watch.bookmarks:
            await response.write(
                protocol.watch_line("BOOKMARK", protocol.bookmark(watch.resource_type, store.resource_version))
            )
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, ApiError):
                await pending
        await events.aclose()


async def serve_followed_log(
    raw_request: aiohttp.web.BaseRequest,
    *,
    store: Store,
    logs: PodLogs,
    namespace: str,
    name: str,
    container: str | None,
    tail_lines: int | None,
) -> aiohttp.web.StreamResponse:
    """`kubectl logs -f`: what the pod wrote so far, then what it writes, until it finishes
    (or the client leaves, or the cluster stops)."""
    response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
    with contextlib.suppress(ConnectionError, ApiError):  # the client left, or the pod went
        await response.prepare(raw_request)
        sent = len(logs.read_log(namespace=namespace, name=name, container=container))
        await response.write(
            logs.read_log(namespace=namespace, name=name, container=container, tail_lines=tail_lines).encode()
        )
        while not store.watches.closed and raw_request.transport is not None and not raw_request.transport.is_closing():
            await asyncio.sleep(LOG_POLL_INTERVAL)
            pod = store.get("v1/pods", namespace=namespace, name=name)
            text = logs.read_log(namespace=namespace, name=name, container=container)
            await response.write(text[sent:].encode())
            sent = len(text)
            if pod is None or (pod.get("status") or {}).get("phase") in FINISHED_PHASES:
                break
        await response.write_eof()
    return response
