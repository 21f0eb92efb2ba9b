import hashlib

import pytest
import torch

from kubenas.search import CheckpointMismatch, Search, failure
from tests.helpers import nb201_spec, search_spec, succeeded


def fake_accuracy(architecture: dict) -> float:
    """A deterministic 'validation accuracy' for an architecture."""
    digest = hashlib.sha256(repr(architecture).encode()).digest()
    return 0.5 + digest[0] / 512


def drive(search: Search, *, steps: int, parallelism: int = 3, log: list | None = None) -> list:
    """Ask up to `parallelism` children, tell them out of order (newest first), repeat."""
    log = [] if log is None else log
    for _ in range(steps):
        while len(search.in_flight) < parallelism and (ticket := search.ask()) is not None:
            log.append(("ask", ticket.index, ticket.actions, round(ticket.log_prob, 6), ticket.policy_version))
        if not search.in_flight:
            break
        index = max(search.in_flight)
        ticket = search.in_flight[index]
        result = failure("Error", "exit code 1") if index % 7 == 3 else succeeded([0.3, fake_accuracy(ticket.architecture)])
        outcome = search.tell(index, result)
        log.append(("tell", index, outcome.reward, None if outcome.update is None else outcome.update.loss))
    return log


def test_ask_tell_counts_updates_and_best() -> None:
    search = Search(nb201_spec(maxTrials=20, controller={"batchSize": 4}))
    log = drive(search, steps=100)
    assert search.finished and search.ask() is None
    assert search.counters.created == 20 and search.counters.succeeded + search.counters.failed == 20
    assert search.counters.failed == len([i for i in range(20) if i % 7 == 3])
    assert search.controller.version == 5  # 20 results, 4 per update, failures count as reward 0
    tells = [entry for entry in log if entry[0] == "tell"]
    best = max((entry for entry in tells if entry[1] % 7 != 3), key=lambda e: (e[2], -e[1]))
    assert search.best.index == best[1] and search.best.reward == pytest.approx(best[2])
    assert [r.reward for r in search.top_k(5)] == sorted((e[2] for e in tells), reverse=True)[:5]


def test_failed_children_can_be_excluded_from_updates() -> None:
    search = Search(nb201_spec(maxTrials=8, controller={"batchSize": 4, "failedTrials": "exclude"}))
    tickets = [search.ask() for _ in range(8)]
    outcomes = [search.tell(t.index, failure("OOMKilled")) for t in tickets[:4]]
    assert all(o.reward is None and not o.succeeded and o.reason == "OOMKilled" for o in outcomes)
    assert search.controller.version == 0 and not search.pending
    updates = [search.tell(t.index, succeeded(0.9)).update for t in tickets[4:]]
    assert updates[:3] == [None] * 3 and updates[3].version == 1


def test_tell_is_idempotent_and_rejects_unknown_children() -> None:
    search = Search(nb201_spec(maxTrials=2))
    ticket = search.ask()
    assert search.tell(ticket.index, succeeded(0.8)).succeeded
    assert search.tell(ticket.index, succeeded(0.1)) is None
    assert search.counters.succeeded == 1 and search.best.reward == pytest.approx(0.8**3)
    with pytest.raises(KeyError):
        search.tell(5, succeeded(0.5))


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ({"status": "Succeeded"}, "MalformedResult"),
        ({"status": "Succeeded", "validationAccuracy": [1.5]}, "MalformedResult"),
        ({"status": "Succeeded", "validationAccuracy": []}, "MalformedResult"),
        ("garbage", "MalformedResult"),
        ({"status": "Failed", "reason": "Diverged"}, "Diverged"),
    ],
)
def test_bad_results_fail_with_a_reason(result, reason) -> None:
    search = Search(nb201_spec(maxTrials=1))
    outcome = search.tell(search.ask().index, result)
    assert not outcome.succeeded and outcome.reason == reason and outcome.reward == 0.0


@pytest.mark.parametrize("strategy", ["reinforce", "random"])
def test_checkpoint_restore_continues_exactly(strategy: str) -> None:
    spec = search_spec(
        maxTrials=40,
        controller={"strategy": strategy, "batchSize": 4},
        searchSpace={"macroCNN": {"depth": {"initialLayers": 2, "increment": 1, "everyTrials": 15}, "strides": {"enabled": True}, "imageSize": [8, 8]}},
    )
    uninterrupted = Search(spec)
    reference = drive(uninterrupted, steps=1000)

    first_half = Search(spec)
    log = drive(first_half, steps=17)
    assert first_half.in_flight and first_half.pending  # mid-batch, children in flight
    restored = Search.restore(spec, first_half.to_bytes())
    drive(restored, steps=1000, log=log)

    assert log == reference
    assert restored.counters == uninterrupted.counters and restored.top == uninterrupted.top
    assert restored.controller.baseline == uninterrupted.controller.baseline
    if strategy == "reinforce":
        for a, b in zip(restored.controller.policy.parameters(), uninterrupted.controller.policy.parameters()):
            assert torch.equal(a, b)


@pytest.mark.parametrize("change", [
    {"searchSpace": {"type": "NB201Cell", "nb201Cell": {"operations": ["none", "skip_connect", "nor_conv_3x3"]}}},
    {"controller": {"lstmSize": 64}},
    {"controller": {"strategy": "evolution"}},
    {"reward": {"power": 1.0}},
])
def test_restore_refuses_a_changed_space_controller_or_reward(change: dict) -> None:
    data = Search(nb201_spec()).to_bytes()
    changed = {"searchSpace": {"type": "NB201Cell"}, **change}
    with pytest.raises(CheckpointMismatch, match="another search space, controller, reward or seed"):
        Search.restore(search_spec(**changed), data)


def test_restore_refuses_an_old_checkpoint_format() -> None:
    from kubenas.controller import from_bytes, to_bytes

    state = from_bytes(Search(nb201_spec()).to_bytes())
    state["version"] -= 1  # what an earlier kubenas wrote
    with pytest.raises(CheckpointMismatch, match=f"checkpoint format {state['version']} is not"):
        Search.restore(nb201_spec(), to_bytes(state))


def test_restore_takes_in_flight_tickets_from_their_records() -> None:
    """The operator's checkpoint names children in flight by index; their tickets come
    back from the NASTrials. The restored search continues exactly; a child whose record
    is gone is counted failed (its result can never be told)."""
    spec = search_spec(maxTrials=24, controller={"batchSize": 4},
                       searchSpace={"macroCNN": {"depth": {"initialLayers": 3, "maxLayers": 3}}})
    uninterrupted = Search(spec)
    reference = drive(uninterrupted, steps=1000)
    first_half = Search(spec)
    log = drive(first_half, steps=9)
    records = dict(first_half.in_flight)
    data = first_half.to_bytes(tickets=False)
    assert len(data) < len(first_half.to_bytes())
    restored = Search.restore(spec, data, in_flight=records)
    drive(restored, steps=1000, log=log)
    assert log == reference and restored.counters == uninterrupted.counters

    missing = min(records)
    lost = Search.restore(spec, data, in_flight={i: t for i, t in records.items() if i != missing})
    assert missing not in lost.in_flight and lost.counters.failed == first_half.counters.failed + 1


def test_restore_refuses_another_search() -> None:
    data = Search(nb201_spec(seed=1)).to_bytes()
    with pytest.raises(ValueError, match="cannot change"):
        Search.restore(nb201_spec(seed=2), data)
    assert Search.restore(nb201_spec(seed=1, maxTrials=99), data).max_trials == 99  # maxTrials may change
