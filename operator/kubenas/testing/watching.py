"""Watch plumbing: a bounded history of change events to resume watches from a
resourceVersion, and per-watch bounded queues that end a watch with 410 Gone when
its consumer falls behind, so a slow client relists instead of growing memory."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from kubenas.testing.contract import ApiError
from kubenas.testing.selectors import FieldSelector, LabelSelector

Storage = tuple[str, str]  # (group, plural): where one resource's objects live, all versions alike


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChangeEvent:
    resource_version: int
    storage: Storage
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]  # the stored snapshot: shared, never mutated
    previous: dict[str, Any] | None = None  # the snapshot before a MODIFIED, to see selector transitions


class History:
    """The last `limit` change events of all resources, oldest first."""

    def __init__(self, *, limit: int) -> None:
        self._events: collections.deque[ChangeEvent] = collections.deque(maxlen=limit)
        self._compacted = 0  # the newest resourceVersion no longer kept

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: ChangeEvent) -> None:
        if len(self._events) == self._events.maxlen:
            self._compacted = self._events[0].resource_version
        self._events.append(event)

    def since(self, resource_version: int, storage: Storage) -> list[ChangeEvent]:
        if resource_version < self._compacted:
            raise ApiError(410, "Expired", f"too old resource version: {resource_version} ({self._compacted + 1})")
        return [e for e in self._events if e.resource_version > resource_version and e.storage == storage]


class _End:
    """Queue sentinels: the store closed, or the watcher fell behind."""


CLOSED, OVERFLOWED = _End(), _End()


class Watcher:
    def __init__(self, *, namespace: str | None, labels: LabelSelector, fields: FieldSelector, queue_size: int) -> None:
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]] | _End] = asyncio.Queue(maxsize=queue_size)
        self._ended = False

    def selects(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.labels.matches(obj) and self.fields.matches(obj)

    def translate(self, event: ChangeEvent) -> tuple[str, dict[str, Any]] | None:
        """The event as this watcher sees it: an object entering its selection is ADDED,
        one leaving it is DELETED, as the real API server reports them."""
        selected_now = self.selects(event.obj)
        if event.type != "MODIFIED":
            return (event.type, event.obj) if selected_now else None
        selected_before = self.selects(event.previous)
        if selected_before and selected_now:
            return ("MODIFIED", event.obj)
        if selected_now:
            return ("ADDED", event.obj)
        if selected_before:
            return ("DELETED", event.obj)
        return None

    def offer(self, event: ChangeEvent) -> None:
        if self._ended or (translated := self.translate(event)) is None:
            return
        try:
            self.queue.put_nowait(translated)
        except asyncio.QueueFull:
            self.end(OVERFLOWED)

    def end(self, reason: _End) -> None:
        """Drop what is queued and leave only the reason, which the consumer sees next."""
        self._ended = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(reason)


def overflow_error() -> ApiError:
    return ApiError(410, "Gone", "the watch fell too far behind the server's events; relist and watch again")


class Watches:
    """The history and the live watchers of every storage."""

    def __init__(self, *, history_limit: int, queue_size: int) -> None:
        self.history = History(limit=history_limit)
        self._watchers: dict[Storage, set[Watcher]] = collections.defaultdict(set)
        self._queue_size = queue_size
        self._closed = False

    def publish(self, event: ChangeEvent) -> None:
        self.history.append(event)
        for watcher in list(self._watchers[event.storage]):
            watcher.offer(event)

    async def stream(
        self,
        *,
        storage: Storage,
        api_version: str,
        objects: Mapping[Any, dict[str, Any]],
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        resource_version: str | None,
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """(type, object) events, objects shared and not copied; without a resource_version,
        first ADDED for each of `objects` (the storage's live objects) that the selectors select."""
        watcher = Watcher(
            namespace=namespace,
            labels=LabelSelector.parse(label_selector),
            fields=FieldSelector.parse(field_selector),
            queue_size=self._queue_size,
        )
        if resource_version in (None, "", "0"):
            backlog = [("ADDED", obj) for obj in objects.values() if watcher.selects(obj)]
        else:
            backlog = [
                translated
                for event in self.history.since(_parse(resource_version), storage)
                if (translated := watcher.translate(event))
            ]
        if self._closed:
            return
        watchers = self._watchers[storage]
        watchers.add(watcher)
        try:
            for event_type, obj in backlog:
                yield event_type, _in_version(obj, api_version)
            while (item := await watcher.queue.get()) is not CLOSED:
                if item is OVERFLOWED:
                    raise overflow_error()
                assert isinstance(item, tuple)
                yield item[0], _in_version(item[1], api_version)
        finally:
            watchers.discard(watcher)

    def end(self, storage: Storage) -> None:
        for watcher in self._watchers.pop(storage, set()):
            watcher.end(CLOSED)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End every watch; later watches end at once."""
        self._closed = True
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.end(CLOSED)


def _in_version(obj: dict[str, Any], api_version: str) -> dict[str, Any]:
    return obj if obj.get("apiVersion") == api_version else {**obj, "apiVersion": api_version}


def _parse(resource_version: str) -> int:
    try:
        return int(resource_version)
    except ValueError:
        raise ApiError(400, "BadRequest", f'invalid resource version "{resource_version}"') from None
