"""The result cache in local mode: filled from the run's own trials.jsonl (so `--resume`
keeps it) and from `runs/<name>/trials.jsonl` of the searches in `spec.cache.from`, read
when the cache is built and again, at most once per `spec.cache.refreshSeconds`, before a
child is decided: so two runs side by side reuse what the other finishes after they start.
Only the lines appended since the last read are parsed.

Each record of a trained child carries its `cacheKey`; a child that reused one carries
`cachedFrom` (`<search>-<index>`, the NASTrial name the source would have on a cluster)
and `savedSeconds`, the source's training time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from time import monotonic

from kubenas import spec as specs
from kubenas.result_cache import (CachedResult, Decision, HitCounter, ResultCache, cache_key, refresh_due, reusable,
                                  trial_hash, waits_for_twins)
from kubenas.search import Ticket


def source_name(search: str, index: int) -> str:
    return f"{search}-{index}"


class TrialsTail:
    """Another run's trials.jsonl, read a little more each time: the complete lines
    appended since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0  # bytes read: the end of the last complete line
        self.file_id: tuple[int, int] | None = None  # (device, inode): a replaced file is read from its start

    def new_records(self) -> list[dict]:
        """Records of the complete lines appended since the last call (a foreign line is
        skipped; a torn last line, still being written, is left for the next call)."""
        try:
            with self.path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                file_id = (stat.st_dev, stat.st_ino)
                if file_id != self.file_id or stat.st_size < self.offset:  # --restart, or a torn tail cut
                    self.file_id, self.offset = file_id, 0
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [record for line in complete.splitlines() if isinstance(record := _parse(line), dict)]


def _parse(line: bytes) -> object:
    try:
        return json.loads(line)
    except ValueError:  # UnicodeDecodeError included
        return None


class LocalCache(HitCounter):
    def __init__(self, *, spec: specs.SearchSpec, name: str, runs_dir: Path, recorded: dict[int, dict]) -> None:
        super().__init__()
        self.enabled = spec.cache.enabled
        self.name = name
        self.trial = trial_hash(spec.trial)
        self.wait = waits_for_twins(spec.trial)
        self.cache = ResultCache()
        self.refresh_seconds = spec.cache.refresh_seconds
        self.others = {other: TrialsTail(runs_dir / other / "trials.jsonl") for other in spec.cache.from_
                       if other != name} if self.enabled else {}
        self.read_at: float | None = None  # when the others were last read (monotonic clock)
        self.hits = sum(1 for record in recorded.values() if record.get("cachedFrom"))
        self.saved_seconds = sum(float(record.get("savedSeconds") or 0.0) for record in recorded.values())
        if not self.enabled:
            return
        self.refresh()
        for index in sorted(recorded):
            self._learn(name, recorded[index])

    def refresh_due(self, now: float) -> bool:
        """There are runs to read and `refreshSeconds` have passed since the last read."""
        return bool(self.others) and refresh_due(read_at=self.read_at, now=now, every=self.refresh_seconds)

    def refresh(self, now: float | None = None) -> None:
        """The other runs' children finished since the last read, if `refreshSeconds` have
        passed (a child already known changes nothing: the first entry of a key stays)."""
        now = monotonic() if now is None else now
        if not self.refresh_due(now):
            return
        self.read_at = now
        for other, tail in self.others.items():
            for record in tail.new_records():
                self._learn(other, record)

    def _learn(self, search: str, record: dict) -> None:
        key, result = record.get("cacheKey"), record.get("result")
        if isinstance(key, str) and isinstance(result, dict) and record.get("status") == "Succeeded":
            source = record.get("cachedFrom") or source_name(search, int(record.get("index", -1)))
            seconds = record.get("savedSeconds") if record.get("cachedFrom") else record.get("seconds")
            self.cache.add(key, CachedResult(result=result, source=str(source), seconds=seconds))

    def key(self, ticket: Ticket) -> str:
        return cache_key(architecture=ticket.architecture, trial=self.trial)

    def decide(self, ticket: Ticket) -> Decision:
        if not self.enabled:
            return Decision("train")
        self.refresh()
        return self.cache.decide(key=self.key(ticket), index=ticket.index, wait=self.wait)

    def finished(self, ticket: Ticket, *, reason: str | None, result: dict, seconds: float | None) -> list[int]:
        """Child `ticket` has its verdict: learn it; returns the children that waited for it."""
        if not self.enabled:
            return []
        seconds = None if seconds is None else round(seconds, 3)  # as trials.jsonl keeps it
        entry = (CachedResult(result=result, source=source_name(self.name, ticket.index), seconds=seconds)
                 if reusable(reason) else None)
        if entry is not None:
            self.cache.add(self.key(ticket), entry)  # a child trained outside the cache's running set, too
        return self.cache.finish(index=ticket.index, entry=entry)

    def record_fields(self, ticket: Ticket, *, cached: CachedResult | None) -> dict:
        """The cache's fields of a child's trials.jsonl record."""
        if not self.enabled:
            return {}
        fields: dict = {"cacheKey": self.key(ticket)}
        if cached is not None:
            fields.update(cachedFrom=cached.source, savedSeconds=cached.seconds)
        return fields

    def hit(self, cached: CachedResult) -> None:
        self.count(seconds=cached.seconds)

    def waiting(self) -> int:
        return self.cache.waiting()

    def summary(self) -> dict:
        return {"cacheHits": self.hits, "cacheSavedSeconds": round(self.saved_seconds, 3)}
