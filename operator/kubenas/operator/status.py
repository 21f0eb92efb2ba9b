"""The search's status: phase, standard conditions, counters, the best few children
and the controller's figures. Bounded: per-child data lives in the NASTrials."""

from __future__ import annotations

import datetime

from kubenas.operator import names
from kubenas.search import Ranked, Search
from kubenas.spaces import summarize

TOP_IN_STATUS = 5
CONDITION_TYPES = ("Running", "Suspended", "Succeeded", "Failed")


def now() -> str:
    return datetime.datetime.now(tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions_for(
    *, previous: list[dict], phase: str, reason: str, message: str, generation: int | None
) -> list[dict]:
    """The four standard conditions for `phase`; lastTransitionTime moves only when a
    condition's status changes."""
    before = {c.get("type"): c for c in previous or []}
    result = []
    for kind in CONDITION_TYPES:
        status = "True" if kind == phase else "False"
        old = before.get(kind)
        moved = old is None or old.get("status") != status
        result.append({
            "type": kind,
            "status": status,
            "reason": reason if status == "True" else (old.get("reason") if old and not moved else f"Not{kind}"),
            "message": message if status == "True" else "",
            "lastTransitionTime": now() if moved else old.get("lastTransitionTime", now()),
            "observedGeneration": generation,
        })
    return result


def unschedulable_condition(*, previous: list[dict], stuck: tuple[int, float, str] | None, after: float,
                            generation: int | None, search_name: str) -> list[dict]:
    """`ChildrenUnschedulable`: True while some child has waited `after` seconds or more
    for a node (`stuck`: the longest such wait); present from its first True on."""
    old = next((c for c in previous or [] if c.get("type") == "ChildrenUnschedulable"), None)
    true = stuck is not None and stuck[1] >= after
    if not true and old is None:
        return []
    status = "True" if true else "False"
    moved = old is None or old.get("status") != status
    message = (f"{names.trial_name(search_name, stuck[0])} has waited {stuck[1]:.0f} s for a node: {stuck[2]}"
               if true else "")
    return [{
        "type": "ChildrenUnschedulable", "status": status, "reason": "Unschedulable" if true else "Scheduled",
        "message": message, "lastTransitionTime": now() if moved else old.get("lastTransitionTime", now()),
        "observedGeneration": generation,
    }]


def child_summary(search_name: str, entry: Ranked) -> dict:
    return {
        "trial": names.trial_name(search_name, entry.index),
        "index": entry.index,
        "reward": round(entry.reward, 6),
        "validationAccuracy": None if entry.validation_accuracy is None else round(entry.validation_accuracy, 6),
        "architecture": summarize(entry.architecture),
    }


def search_status(*, search: Search, name: str, queued: int | None = None) -> dict:
    """The counters, best children and controller figures (phase and conditions apart).
    `queued`: children in flight whose Job waits for Kueue's admission, not running (None:
    the search uses no queue, and its counters have no `queued`)."""
    counters = search.counters
    update = search.last_update
    best = search.best
    return {
        "progress": f"{counters.succeeded}/{search.max_trials}",
        "trials": {
            "created": counters.created,
            "running": len(search.in_flight) - (queued or 0),
            **({} if queued is None else {"queued": queued}),
            "succeeded": counters.succeeded,
            "failed": counters.failed,
        },
        "best": None if best is None else child_summary(name, best),
        "top": [child_summary(name, entry) for entry in search.top_k(TOP_IN_STATUS)],
        "controller": {
            "policyVersion": search.controller.version,
            "policyUpdates": search.controller.version,  # one version per update
            "baseline": None if update is None else round(update.baseline, 6),
            "meanReward": None if update is None else round(update.mean_reward, 6),
            "entropy": None if update is None else round(update.entropy, 6),
            "loss": None if update is None else round(update.loss, 6),
            "gradNorm": None if update is None else round(update.grad_norm, 6),
        },
    }
