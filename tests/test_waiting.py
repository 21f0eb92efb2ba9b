"""Why a child waits: the scheduler's Unschedulable from its pod, FailedCreate Events
read for pod-less Jobs (not too soon, not too often), each reason written once."""

from __future__ import annotations

from kubenas.operator import results
from kubenas.operator.waiting import EVENTS_AFTER, EVENTS_EVERY, WaitingChildren


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_schedulers_verdict_is_read_from_the_pod():
    pending = {"status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}]}}
    assert results.unschedulable(pending) == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    scheduled = {"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}}
    assert results.unschedulable(scheduled) is None
    assert results.unschedulable({"status": {"phase": "Running"}}) is None


def test_events_are_read_only_for_jobs_long_without_a_pod_and_not_too_often():
    clock = Clock()
    waiting = WaitingChildren(clock=clock)
    assert waiting.due_for_events([1, 2]) == []  # just created
    clock.now += EVENTS_AFTER
    assert waiting.due_for_events([1, 2]) == [1, 2]
    clock.now += 1
    assert waiting.due_for_events([1, 2]) == []  # looked a second ago
    clock.now += EVENTS_EVERY
    assert waiting.due_for_events([2]) == [2]  # child 1 got its pod
    assert waiting.due_for_events([1]) == []  # back without one: its clock starts again


def test_each_reason_is_written_once_and_the_longest_wait_is_reported_once():
    clock = Clock()
    waiting = WaitingChildren(clock=clock)
    waiting.note(3, "QuotaExceeded", "exceeded quota: pods")
    waiting.note(5, "Unschedulable", "no GPU")
    assert waiting.changed() == [(3, ("QuotaExceeded", "exceeded quota: pods")), (5, ("Unschedulable", "no GPU"))]
    clock.now += 30
    waiting.note(5, "Unschedulable", "no GPU")  # seen again: same wait, nothing new to write
    assert waiting.changed() == []
    assert waiting.longest("Unschedulable") == (5, 30.0, "no GPU")
    assert waiting.report(5) and not waiting.report(5)
    waiting.clear(5)
    assert 5 not in waiting and waiting.longest("Unschedulable") is None
