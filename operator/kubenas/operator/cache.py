"""The result cache in the operator: which NASTrials may lend their result to a new child.

Filled from NASTrials: the search's own (after a restart) and those of the searches in
`spec.cache.from` (same namespace only: the label `kubenas.io/search=<name>`, checked
against the trial's own spec and owner), read when the driver starts and again, at most
once per `spec.cache.refreshSeconds`, while the search creates children: so two searches
run side by side reuse what the other finishes after they start. Every NASTrial
carries its cache key as the label `kubenas.io/cache-key` (set at creation, from the
template of the time), so trials of another template never match.

A reused child's NASTrial says `status.cachedFrom: <source NASTrial>` and what the reuse
saved: `savedSeconds` (the source's start to completion) and `savedGpuSeconds` (the
source's `status.gpuSeconds` where recorded, else that duration times the GPUs its
template asks for now). The search's status sums them (`cacheHits`, `cacheSaved*`).
"""

from __future__ import annotations

from time import monotonic

from kubenas import spec as specs
from kubenas.operator import names, results
from kubenas.operator.checkpoints import owned_by
from kubenas.operator.kube import KubeClient
from kubenas.result_cache import (CachedResult, Decision, HitCounter, ResultCache, cache_key, gpus_of, refresh_due,
                                  reusable, trial_hash, waits_for_twins)
from kubenas.search import Ticket

LABEL_CACHE_KEY = "kubenas.io/cache-key"
WAITING_REASON = "WaitingForIdentical"


def _duration(status: dict) -> float | None:
    start, end = results.timestamp(status.get("startTime")), results.timestamp(status.get("completionTime"))
    return None if start is None or end is None else max(0.0, end - start)


def _from_search(trial: dict, search: dict) -> bool:
    """A NASTrial made by `search` (not merely labelled so): owned by that very object."""
    return (trial.get("spec") or {}).get("search") == search["metadata"]["name"] and owned_by(
        trial, search["metadata"]["uid"])


def key_of(trial: dict | None) -> str | None:
    """The cache key a NASTrial was created with (its label), if any."""
    return (((trial or {}).get("metadata") or {}).get("labels") or {}).get(LABEL_CACHE_KEY)


class ClusterCache(HitCounter):
    """One search's result cache, its hit counters, and the trial hash of its spec."""

    def __init__(self, *, search: str) -> None:
        super().__init__()
        self.search = search
        self.cache = ResultCache()
        self._hashed: tuple[specs.Trial, str] | None = None
        self.trials: dict[int, dict] = {}  # waiting children's NASTrials, to create their Jobs if their source fails
        self.read_at: float | None = None  # when spec.cache.from was last read (monotonic clock)
        self.told_missing: set[str] = set()  # searches of spec.cache.from already reported missing

    def key(self, ticket: Ticket, spec: specs.SearchSpec) -> str:
        if self._hashed is None or self._hashed[0] is not spec.trial:
            self._hashed = (spec.trial, trial_hash(spec.trial))
        return cache_key(architecture=ticket.architecture, trial=self._hashed[1])

    # -- filling -------------------------------------------------------------------------

    def learn(self, trial: dict, *, gpus: float, ours: bool = True) -> None:
        """A NASTrial: its result if it succeeded; and if it is one of ours (`ours`) that
        reused a result, count the hit."""
        status = trial.get("status") or {}
        key = key_of(trial)
        source = status.get("cachedFrom")
        if ours and source and status.get("phase") in ("Succeeded", "Failed"):
            self.count(seconds=status.get("savedSeconds"), gpu_seconds=status.get("savedGpuSeconds"))
        if not key or status.get("phase") != "Succeeded" or not isinstance(status.get("result"), dict):
            return
        if source:
            entry = CachedResult(result=status["result"], source=source, seconds=status.get("savedSeconds"),
                                 gpu_seconds=status.get("savedGpuSeconds"))
        else:
            seconds = _duration(status)
            gpu_seconds = status.get("gpuSeconds")
            if gpu_seconds is None and seconds is not None:
                gpu_seconds = seconds * gpus
            entry = CachedResult(result=status["result"], source=trial["metadata"]["name"], seconds=seconds,
                                 gpu_seconds=gpu_seconds)
        self.cache.add(key, entry)

    def sources(self, spec: specs.SearchSpec) -> list[str]:
        """The other searches whose children this one may reuse."""
        return [other for other in spec.cache.from_ if other != self.search] if spec.cache.enabled else []

    def refresh_due(self, spec: specs.SearchSpec, now: float) -> bool:
        """There are searches to read and `spec.cache.refreshSeconds` have passed since the
        last read (or there was none)."""
        return bool(self.sources(spec)) and refresh_due(read_at=self.read_at, now=now,
                                                        every=spec.cache.refresh_seconds)

    async def refresh(self, client: KubeClient, *, namespace: str, spec: specs.SearchSpec,
                      now: float | None = None) -> list[str]:
        """Read the `spec.cache.from` searches' finished children if due (`refresh_due`);
        returns the searches missing that were not reported before, so that each is
        reported once however often it is read (one created later is read all the same)."""
        now = monotonic() if now is None else now
        if not self.refresh_due(spec, now):
            return []
        self.read_at = now
        missing = await self.load_others(client, namespace=namespace, spec=spec)
        first_time = [other for other in missing if other not in self.told_missing]
        self.told_missing.update(first_time)
        return first_time

    async def load_others(self, client: KubeClient, *, namespace: str, spec: specs.SearchSpec) -> list[str]:
        """The finished children of `spec.cache.from` searches (this namespace only);
        returns the names of those that do not exist. Read again, a child already known
        changes nothing: the first entry of a key stays, and others' hits are not ours to count."""
        missing = []
        gpus = gpus_of(spec.trial)  # once, not per trial
        for other in self.sources(spec):
            # A list by name, not a get: the operator's role lists searches (kopf's watch), never gets one.
            found = await client.list(names.SEARCHES, namespace=namespace, label_selector="",
                                      field_selector=f"metadata.name={other}")
            search = found[0] if found else None
            if search is None:
                missing.append(other)
                continue
            for trial in await client.list(names.TRIALS, namespace=namespace,
                                           label_selector=f"{names.LABEL_SEARCH}={other},{LABEL_CACHE_KEY}"):
                if _from_search(trial, search):
                    self.learn(trial, gpus=gpus, ours=False)
        return missing

    # -- deciding ------------------------------------------------------------------------

    def decide(self, ticket: Ticket, spec: specs.SearchSpec) -> Decision:
        if not spec.cache.enabled:
            return Decision("train")
        return self.cache.decide(key=self.key(ticket, spec), index=ticket.index, wait=waits_for_twins(spec.trial))

    def adopt(self, index: int, key: str | None) -> None:
        """A child found training after a restart: identical children wait for it."""
        if key:
            self.cache.start(key=key, index=index)

    def finished(self, index: int, *, reason: str | None, result: dict, seconds: float | None,
                 gpu_seconds: float | None) -> tuple[list[int], CachedResult | None]:
        """Child `index` has its verdict: (the children that waited for it, the result they reuse or None).
        `gpu_seconds`: what it cost, as its NASTrial records it (so a hit saves the same read live or later)."""
        entry = None
        if reusable(reason):
            entry = CachedResult(result=result, source=names.trial_name(self.search, index), seconds=seconds,
                                 gpu_seconds=gpu_seconds)
        released = self.cache.finish(index=index, entry=entry)
        return released, entry

    def status(self) -> dict:
        return {"cacheHits": self.hits, "cacheSavedSeconds": round(self.saved_seconds, 3),
                "cacheSavedGpuSeconds": round(self.saved_gpu_seconds, 3)}

