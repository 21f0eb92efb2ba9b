"""The result cache in local mode: filled from the run's own trials.jsonl (so `--resume`
keeps it) and from `runs/<name>/trials.jsonl` of the searches in `spec.cache.from`.

Each record of a trained child carries its `cacheKey`; a child that reused one carries
`cachedFrom` (`<search>-<index>`, the NASTrial name the source would have on a cluster)
and `savedSeconds`, the source's training time.
"""

from __future__ import annotations

import json
from pathlib import Path

from kubenas import spec as specs
from kubenas.result_cache import CachedResult, Decision, ResultCache, cache_key, reusable, trial_hash
from kubenas.search import Ticket


def source_name(search: str, index: int) -> str:
    return f"{search}-{index}"


def _records(path: Path) -> list[dict]:
    """Records of a trials.jsonl (a torn or foreign line is skipped)."""
    if not path.exists():
        return []
    records = []
    with path.open() as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


class LocalCache:
    def __init__(self, *, spec: specs.SearchSpec, name: str, runs_dir: Path, recorded: dict[int, dict]) -> None:
        self.enabled = spec.cache.enabled
        self.name = name
        self.trial = trial_hash(spec.trial)
        self.wait = spec.trial.kind != "Tabular"  # a lookup costs less than waiting for its twin
        self.cache = ResultCache()
        self.hits = sum(1 for record in recorded.values() if record.get("cachedFrom"))
        self.saved_seconds = sum(float(record.get("savedSeconds") or 0.0) for record in recorded.values())
        if not self.enabled:
            return
        for other in spec.cache.from_:
            if other != name:
                for record in _records(runs_dir / other / "trials.jsonl"):
                    self._learn(other, record)
        for index in sorted(recorded):
            self._learn(name, recorded[index])

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
        self.hits += 1
        self.saved_seconds += cached.seconds or 0.0

    def waiting(self) -> int:
        return self.cache.waiting()

    def summary(self) -> dict:
        return {"cacheHits": self.hits, "cacheSavedSeconds": round(self.saved_seconds, 3)}
