"""Why children in flight are still Pending, and what has been said about it.

A child waits when its Job cannot create its pod (quota: FailedCreate Events) or no node
can take its pod (the scheduler's Unschedulable). The driver writes each new reason to
the child's NASTrial once, looks at a pod-less Job's Events at most every
`EVENTS_EVERY` seconds (never for a child that has a pod), and reports the longest
unschedulable wait to the search.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

EVENTS_AFTER = 5.0  # a Job without a pod this long has its FailedCreate Events read
EVENTS_EVERY = 10.0  # and then at most this often


class WaitingChildren:
    def __init__(self, *, clock=time.monotonic) -> None:
        self.clock = clock
        self.reasons: dict[int, tuple[str, str, float]] = {}  # index -> (reason, message, since)
        self.written: dict[int, tuple[str, str]] = {}  # what the NASTrial says
        self.first_seen: dict[int, float] = {}  # pod-less children, since
        self.looked: dict[int, float] = {}  # when their Events were last read
        self.reported: set[int] = set()

    def __contains__(self, index: int) -> bool:
        return index in self.reasons

    def note(self, index: int, reason: str, message: str) -> None:
        since = self.reasons[index][2] if index in self.reasons and self.reasons[index][0] == reason else self.clock()
        self.reasons[index] = (reason, message, since)

    def clear(self, index: int) -> None:
        for table in (self.reasons, self.written, self.first_seen, self.looked):
            table.pop(index, None)
        self.reported.discard(index)

    def due_for_events(self, podless: Iterable[int]) -> list[int]:
        """Pod-less children whose Job's Events should be read now."""
        now, due = self.clock(), []
        podless = set(podless)
        for index in list(self.first_seen):
            if index not in podless:
                self.first_seen.pop(index)
                self.looked.pop(index, None)
        for index in sorted(podless):
            first = self.first_seen.setdefault(index, now)
            if now - first >= EVENTS_AFTER and now - self.looked.get(index, -EVENTS_EVERY) >= EVENTS_EVERY:
                self.looked[index] = now
                due.append(index)
        return due

    def changed(self) -> list[tuple[int, tuple[str, str]]]:
        """Reasons not yet written to their NASTrials (marked written)."""
        fresh = []
        for index, (reason, message, _) in sorted(self.reasons.items()):
            if self.written.get(index) != (reason, message):
                self.written[index] = (reason, message)
                fresh.append((index, (reason, message)))
        return fresh

    def longest(self, reason: str) -> tuple[int, float, str] | None:
        """(index, seconds, message) of the child waiting longest for `reason`."""
        now = self.clock()
        waiting = [(index, now - since, message) for index, (why, message, since) in self.reasons.items()
                   if why == reason]
        return max(waiting, key=lambda item: item[1], default=None)

    def report(self, index: int) -> bool:
        """True the first time a child's long wait is reported."""
        if index in self.reported:
            return False
        self.reported.add(index)
        return True
