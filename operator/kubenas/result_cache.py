"""The result cache: never train the same child twice.

A child is *identical* to another when both its canonical architecture JSON and the hash
of the trial definition that produces its result (the pod template, or the table and
metric) are equal: `cache_key`. A finished identical child lends its result (no Job, no
subprocess); one still running is waited for rather than started again. The reward is
computed from the reused result document by this search's own reward settings, so
REINFORCE sees exactly what it would have seen had the child been trained again.

Only successes are reused. Every failure reason names something that may not happen
again: the infrastructure (NodeLost, Evicted, OOMKilled, DeadlineExceeded, JobDeleted,
JobRejected…) or a trainer crash or malformed result that may well be transient; a
child identical to a failed one is trained (once: its own twins wait for it).

Both drivers hold one `ResultCache`: the operator fills it from NASTrials (label
`kubenas.io/cache-key`), local mode from trials.jsonl (field `cacheKey`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from kubenas import spec as specs
from kubenas.budget import resources_of

KEY_CHARS = 40  # 160 bits of sha256, and short enough for a label value (63)


def canonical_json(document: Any) -> str:
    """The one spelling of a JSON document: sorted keys, compact separators."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def trial_hash(trial: specs.Trial) -> str:
    """Hash of what makes a child's result: the trial kind and its pod template (image,
    command, args, env, resources, volumes…) or its table and metric. Not the search's
    name, nor deadlines, retries, TTL or unschedulable timeout (they decide whether a
    child finishes, never what a finished child's result is)."""
    relevant: dict[str, Any] = {"kind": trial.kind}
    if trial.kind == "Job" and trial.template is not None:
        relevant["template"] = trial.template.model_dump(mode="json", by_alias=True, exclude_none=True)
    if trial.kind == "Tabular" and trial.tabular is not None:
        relevant["tabular"] = trial.tabular.model_dump(mode="json", by_alias=True)
    return hashlib.sha256(canonical_json(relevant).encode()).hexdigest()


def cache_key(*, architecture: dict, trial: str) -> str:
    """The cache key of an architecture trained by the trial definition hashed as `trial`."""
    document = canonical_json({"architecture": architecture, "trial": trial})
    return hashlib.sha256(document.encode()).hexdigest()[:KEY_CHARS]


def gpus_of(trial: specs.Trial) -> float:
    """GPUs one child's trainer container asks for, reckoned as its `gpuSeconds` are
    (kubenas.budget.resources_of: the limit, else the request)."""
    if trial.kind != "Job" or trial.template is None:
        return 0.0
    trainer = trial.template.spec.containers[0].model_dump(mode="json", by_alias=True, exclude_none=True)
    try:
        return resources_of(trainer).gpus
    except ValueError:
        return 0.0  # not a quantity: the schema's business, not the cache's


def waits_for_twins(trial: specs.Trial) -> bool:
    """Whether a child identical to one still running waits for it: not a table child (a
    lookup costs less than waiting)."""
    return trial.kind != "Tabular"


def refresh_due(*, read_at: float | None, now: float, every: float) -> bool:
    """spec.cache.from's other searches are read again `every` seconds (never read: now)."""
    return read_at is None or now - read_at >= every


class HitCounter:
    """A search's cache hits and what they saved (the operator's and local mode's caches)."""

    def __init__(self) -> None:
        self.hits = 0
        self.saved_seconds = 0.0
        self.saved_gpu_seconds = 0.0

    def count(self, *, seconds: float | None, gpu_seconds: float | None = None) -> None:
        self.hits += 1
        self.saved_seconds += float(seconds or 0.0)
        self.saved_gpu_seconds += float(gpu_seconds or 0.0)


def reusable(reason: str | None) -> bool:
    """Whether a child's verdict may stand for an identical child: successes only."""
    return reason is None


@dataclass(frozen=True)
class CachedResult:
    result: dict  # the result document, as the trainer (or table) wrote it
    source: str  # the child that was trained for it (a NASTrial's name, `<search>-<index>`)
    seconds: float | None = None  # how long that training took, where known
    gpu_seconds: float | None = None  # GPU time it used, where known


@dataclass(frozen=True)
class Decision:
    """What to do with a new child: `hit` (reuse `entry`), `wait` (for child `source`,
    identical and still running) or `train`."""

    action: Literal["hit", "wait", "train"]
    entry: CachedResult | None = None
    source: int | None = None


@dataclass
class ResultCache:
    finished: dict[str, CachedResult] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)  # key -> index of the child training it
    waiters: dict[str, list[int]] = field(default_factory=dict)  # key -> children waiting for it
    keys: dict[int, str] = field(default_factory=dict)  # children in flight (running or waiting) -> key

    def lookup(self, key: str) -> CachedResult | None:
        return self.finished.get(key)

    def pending(self, key: str) -> int | None:
        return self.running.get(key)

    def add(self, key: str, entry: CachedResult) -> None:
        """A reusable result; the first one stays (so `cachedFrom` names the child that trained)."""
        self.finished.setdefault(key, entry)

    def decide(self, *, key: str, index: int, wait: bool = True) -> Decision:
        """Hit, wait or train, and remember which (synchronous: children created in
        one burst decide one after the other, so two twins never both train).
        `wait=False`: train rather than wait (a table lookup costs less than waiting)."""
        entry = self.lookup(key)
        if entry is not None:
            return Decision("hit", entry=entry)
        source = self.pending(key)
        if wait and source is not None and source != index:
            if index not in self.waiters.setdefault(key, []):
                self.waiters[key].append(index)
                self.keys[index] = key
            return Decision("wait", source=source)
        self.start(key=key, index=index)
        return Decision("train")

    def start(self, *, key: str, index: int) -> None:
        """Child `index` trains the architecture of `key` (adopted after a restart, too)."""
        self.running.setdefault(key, index)
        self.keys[index] = key

    def finish(self, *, index: int, entry: CachedResult | None) -> list[int]:
        """Child `index` is over: `entry` is its result if reusable. Returns the children
        that waited for it, in index order: to be told `entry`, or (None) to decide again."""
        key = self.keys.pop(index, None)
        if key is None:
            return []
        if entry is not None:
            self.add(key, entry)
        if self.running.get(key) != index:  # a waiter told by other means: it waits no more
            if index in self.waiters.get(key, []):
                self.waiters[key].remove(index)
            return []
        del self.running[key]
        released = sorted(self.waiters.pop(key, []))
        for waiter in released:
            self.keys.pop(waiter, None)
        return released

    def waiting(self) -> int:
        """Children waiting for an identical one."""
        return sum(len(indices) for indices in self.waiters.values())

    def is_waiting(self, index: int) -> bool:
        key = self.keys.get(index)
        return key is not None and index in self.waiters.get(key, [])
