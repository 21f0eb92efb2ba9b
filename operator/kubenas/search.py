"""The search engine: ask for a child, tell its result, checkpoint everything.

It knows nothing of Kubernetes or subprocesses; the local runner and the operator are
two drivers of it. All of its state — controller weights, optimizer, baseline, RNG,
the children in flight, the results not yet consumed by a policy update, counters and
the top few children — serialises to bytes and back, so a driver that restores it
continues exactly where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from kubenas import spec as specs
from kubenas.controller import Experience, UpdateStats, build_controller, from_bytes, to_bytes
from kubenas.spaces import Action, build_space

STATE_VERSION = 1
TOP_K = 10  # children kept in the summary; all others live in the drivers' records


def is_fraction(value: object) -> bool:
    """A number in [0, 1]: no NaN, infinity, negative or huge value, and no boolean (True is
    an int in Python)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


class CheckpointMismatch(ValueError):
    """A checkpoint that cannot continue this spec (another format, space, controller…)."""


@dataclass(frozen=True)
class Ticket:
    """A child handed out by `ask()`."""

    index: int
    architecture: dict
    actions: list[Action]
    log_prob: float
    policy_version: int


@dataclass(frozen=True)
class Outcome:
    """What `tell()` made of a child's result."""

    index: int
    succeeded: bool
    reward: float | None  # None for a failure left out of the updates
    validation_accuracy: float | None  # best validation accuracy, as a fraction
    reason: str | None  # why it failed
    update: UpdateStats | None  # the policy update this result completed, if any


@dataclass(frozen=True)
class Ranked:
    index: int
    reward: float
    validation_accuracy: float | None
    architecture: dict


@dataclass
class Counters:
    created: int = 0
    succeeded: int = 0
    failed: int = 0


def failure(reason: str, message: str = "") -> dict:
    """A result document for a child that produced none (killed, timed out, …)."""
    return {"apiVersion": specs.API_VERSION, "kind": "TrialResult", "status": "Failed", "reason": reason, "message": message}


def fingerprint(spec: specs.SearchSpec) -> str:
    """What a checkpoint must match: the space, controller, reward and seed (not
    maxTrials, parallelism or the trial template, which may change during a search)."""
    relevant = {
        "space": spec.search_space.model_dump(mode="json"),
        "controller": spec.controller.model_dump(
            mode="json", exclude=None if spec.controller.strategy == "evolution" else {"evolution"}
        ),  # the other strategies' checkpoints stay valid across the addition of `evolution`
        "reward": spec.reward.model_dump(mode="json"),
        "seed": spec.seed,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


class Search:
    """ask/tell over one NeuralArchitectureSearch spec."""

    def __init__(self, spec: specs.SearchSpec) -> None:
        self.spec = spec
        self.space = build_space(spec.search_space)
        self.controller = build_controller(space=self.space, config=spec.controller, seed=spec.seed)
        self.max_trials = spec.max_trials
        self.counters = Counters()
        self.in_flight: dict[int, Ticket] = {}
        self.pending: list[Experience] = []  # results waiting for the next policy update
        self.top: list[Ranked] = []
        self.last_update: UpdateStats | None = None

    # -- the driver's interface ------------------------------------------------------

    @property
    def next_index(self) -> int:
        return self.counters.created

    @property
    def exhausted(self) -> bool:
        """Every child has been asked for."""
        return self.counters.created >= self.max_trials

    @property
    def finished(self) -> bool:
        """Every child has been asked for and told."""
        return self.exhausted and not self.in_flight

    def ask(self) -> Ticket | None:
        """The next child to evaluate, or None once `max_trials` children were created."""
        if self.exhausted:
            return None
        index = self.counters.created
        sample = self.controller.sample(trial_index=index)
        ticket = Ticket(index, sample.architecture, sample.actions, sample.log_prob, self.controller.version)
        self.in_flight[index] = ticket
        self.counters.created += 1
        return ticket

    def tell(self, index: int, result: dict) -> Outcome | None:
        """Record child `index`'s result document (the trainer's, or `failure(...)`).
        Idempotent: telling a child already told returns None and changes nothing."""
        if index >= self.counters.created or index < 0:
            raise KeyError(f"child {index} was never asked for")
        ticket = self.in_flight.pop(index, None)
        if ticket is None:
            return None
        reward, accuracy, reason = self.judge(result)
        succeeded = reason is None
        if succeeded:
            self.counters.succeeded += 1
            self._rank(Ranked(index, reward, accuracy, ticket.architecture))
        else:
            self.counters.failed += 1
            zero = self.spec.controller.failed_trials == "zeroReward" and self.controller.learns_from_failures
            reward = 0.0 if zero else None
        update = None
        if reward is not None:
            self.pending.append(Experience(trial_index=index, actions=ticket.actions, reward=reward))
            if len(self.pending) >= self.controller.results_per_update:
                update = self.controller.update(self.pending)
                self.pending = []
                self.last_update = update
        return Outcome(index, succeeded, reward, accuracy, reason, update)

    def judge(self, result: dict) -> tuple[float, float | None, str | None]:
        """(reward, best validation accuracy, failure reason or None) of a result
        document; pure, so a driver can record a verdict durably before `tell`."""
        if not isinstance(result, dict) or result.get("status") not in ("Succeeded", "Failed"):
            return 0.0, None, "MalformedResult"
        if result["status"] == "Failed":
            return 0.0, None, str(result.get("reason") or "Failed")
        accuracies = result.get("validationAccuracy")
        # Fractions only may reach the reward and so the policy.
        if not isinstance(accuracies, list) or not accuracies or not all(map(is_fraction, accuracies)):
            return 0.0, None, "MalformedResult"
        return self.spec.reward.of(accuracies), float(max(accuracies)), None

    def _rank(self, entry: Ranked) -> None:
        self.top.append(entry)
        self.top.sort(key=lambda r: (-r.reward, r.index))
        del self.top[TOP_K:]

    # -- summary ---------------------------------------------------------------------

    @property
    def best(self) -> Ranked | None:
        return self.top[0] if self.top else None

    def top_k(self, k: int = 5) -> list[Ranked]:
        return self.top[:k]

    # -- checkpoint ------------------------------------------------------------------

    def fingerprint(self) -> str:
        return fingerprint(self.spec)

    def state_dict(self, *, tickets: bool = True) -> dict[str, Any]:
        """`tickets=False`: children in flight by index only (the operator keeps each one
        in its NASTrial; 800 tickets of 20-layer children are about 2.8 MB, more than a
        ConfigMap holds); `restore` then needs them back (`in_flight=`)."""
        flight = ({"in_flight": [json.dumps(asdict(t)) for t in self.in_flight.values()]} if tickets
                  else {"in_flight_indices": sorted(self.in_flight)})
        return {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint(),
            "controller": self.controller.state_dict(),
            "counters": asdict(self.counters),
            **flight,
            "pending": [json.dumps(asdict(e)) for e in self.pending],
            "top": [json.dumps(asdict(r)) for r in self.top],
            "last_update": None if self.last_update is None else json.dumps(asdict(self.last_update)),
        }

    def to_bytes(self, *, tickets: bool = True) -> bytes:
        return to_bytes(self.state_dict(tickets=tickets))

    @classmethod
    def restore(cls, spec: specs.SearchSpec, data: bytes, *, in_flight: dict[int, Ticket] | None = None) -> Search:
        """A search continuing exactly from a checkpoint made by `to_bytes()`. A checkpoint
        made with `tickets=False` takes the tickets of its children in flight from
        `in_flight` (by index); one whose ticket is missing there (its record deleted)
        is counted as failed, since its result can never be told."""
        state = from_bytes(data)
        search = cls(spec)
        if state.get("version") != STATE_VERSION:
            raise CheckpointMismatch(f"checkpoint format {state.get('version')} is not {STATE_VERSION}")
        if state["fingerprint"] != search.fingerprint():
            raise CheckpointMismatch(
                "checkpoint was made for another search space, controller, reward or seed; "
                "these cannot change during a search"
            )
        search.controller.load_state_dict(state["controller"])
        search.counters = Counters(**state["counters"])
        if "in_flight_indices" in state:
            known = in_flight or {}
            search.in_flight = {index: known[index] for index in state["in_flight_indices"] if index in known}
            search.counters.failed += len(state["in_flight_indices"]) - len(search.in_flight)
        else:
            search.in_flight = {t["index"]: Ticket(**t) for t in map(json.loads, state["in_flight"])}
        search.pending = [Experience(**e) for e in map(json.loads, state["pending"])]
        search.top = [Ranked(**r) for r in map(json.loads, state["top"])]
        if state["last_update"] is not None:
            search.last_update = UpdateStats(**json.loads(state["last_update"]))
        return search
