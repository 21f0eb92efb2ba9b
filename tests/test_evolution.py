"""Regularized evolution (kubenas.evolution): ageing, tournament, mutation, checkpoints."""

import json
import statistics

import pytest
import torch

from kubenas import spaces
from kubenas import spec as specs
from kubenas.controller import Experience, build_controller, from_bytes, to_bytes
from kubenas.evaluators import TabularEvaluator
from kubenas.evolution import EvolutionController, Individual
from kubenas.search import Search, failure, fingerprint
from tests.helpers import nb201_spec, search_spec, succeeded
from tests.test_search import drive, fake_accuracy

SPACES = {
    "nb201": {"type": "NB201Cell"},
    "macro-skip": {"macroCNN": {"depth": {"initialLayers": 5}}},
    "macro-chain": {"macroCNN": {"skipConnections": False, "depth": {"initialLayers": 5}}},
    "macro-strides": {"macroCNN": {"strides": {"enabled": True}, "imageSize": [8, 8], "depth": {"initialLayers": 5}}},
    "macro-chain-strides": {
        "macroCNN": {"skipConnections": False, "strides": {"enabled": True}, "imageSize": [6, 6], "depth": {"initialLayers": 5}}
    },
}
FIXED_MASKS = {"nb201", "macro-skip", "macro-chain"}  # a mutation cannot invalidate a later action


def evolution(spec: specs.SearchSpec, seed: int = 0) -> EvolutionController:
    controller = build_controller(space=spaces.build_space(spec.search_space), config=spec.controller, seed=seed)
    assert isinstance(controller, EvolutionController)
    return controller


def evo_spec(space: dict | None = None, population: int = 6, sample: int = 3, **spec) -> specs.SearchSpec:
    controller = {"strategy": "evolution", "evolution": {"populationSize": population, "sampleSize": sample}}
    return search_spec(searchSpace=space or {"type": "NB201Cell"}, controller=controller, **spec)


def fill(controller: EvolutionController, count: int, start: int = 0, reward=lambda i: i / 100) -> None:
    for index in range(start, start + count):
        sample = controller.sample(trial_index=index)
        controller.update([Experience(trial_index=index, actions=sample.actions, reward=reward(index))])


def test_spec_knobs_and_validation() -> None:
    spec = nb201_spec(controller={"strategy": "evolution"})
    assert (spec.controller.evolution.population_size, spec.controller.evolution.sample_size) == (20, 5)
    with pytest.raises(specs.SpecError, match="sampleSize"):
        nb201_spec(controller={"strategy": "evolution", "evolution": {"populationSize": 4, "sampleSize": 5}})
    with pytest.raises(specs.SpecError, match="populationSize"):
        nb201_spec(controller={"evolution": {"populationSize": 1, "sampleSize": 1}})
    with pytest.raises(specs.SpecError, match="sampleSize"):
        nb201_spec(controller={"evolution": {"sampleSize": 0}})


def test_other_strategies_fingerprints_ignore_the_evolution_settings() -> None:
    plain = nb201_spec()
    assert fingerprint(plain) == fingerprint(nb201_spec(controller={"evolution": {"populationSize": 50}}))
    assert fingerprint(evo_spec(population=6)) != fingerprint(evo_spec(population=7))


def test_population_is_capped_and_the_oldest_leaves() -> None:
    controller = evolution(evo_spec(population=4, sample=2))
    # Decreasing rewards: the oldest is always the best, and still it is the one that leaves.
    for index in range(12):
        fill(controller, 1, start=index, reward=lambda i: 1.0 - i / 100)
        assert len(controller.population) == min(index + 1, 4)
        assert [m.trial_index for m in controller.population] == list(range(max(0, index - 3), index + 1))
    assert controller.version == 12


def test_first_children_are_random_until_the_population_is_full() -> None:
    spec = evo_spec(population=5, sample=2)
    controller = evolution(spec)
    random = build_controller(space=controller.space, config=spec.controller.model_copy(update={"strategy": "random"}), seed=0)
    # Children in flight are not members: with no results, asking never mutates.
    asked = [controller.sample(trial_index=i).actions for i in range(8)]
    assert asked == [random.sample(trial_index=i).actions for i in range(8)]
    assert controller.mutations == 0 and not controller.population


@pytest.mark.parametrize("name", list(SPACES))
def test_mutation_changes_one_decision_and_stays_valid(name: str) -> None:
    controller = evolution(evo_spec(SPACES[name], population=3, sample=1))
    space = controller.space
    fill(controller, 3)
    changed = []
    for index in range(3, 200):
        parent = Individual(index, controller.population[index % 3].actions, {}, 0.0)
        sample = controller.mutate(parent, trial_index=index)
        assert space.decode(sample.actions, trial_index=index) == sample.architecture  # valid, and what it builds
        assert len(sample.actions) == len(parent.actions)
        changed.append(sum(a != b for a, b in zip(sample.actions, parent.actions)))
    assert min(changed) >= 1
    if name in FIXED_MASKS:
        assert set(changed) == {1}
    else:
        assert statistics.mean(changed) < 2  # mostly one; a stride change may re-draw later strides
    if name != "nb201":
        # An anchor mutation flips exactly one input bit.
        for index in range(3, 60):
            parent = controller.population[0]
            sample = controller.mutate(parent, trial_index=index)
            for a, b in zip(sample.actions, parent.actions):
                if isinstance(a, list) and a != b:
                    assert sum(x != y for x, y in zip(a, b)) == 1


def test_mutation_across_a_depth_schedule_stays_valid() -> None:
    space = {"macroCNN": {"depth": {"initialLayers": 3, "increment": 2, "everyTrials": 10}, "strides": {"enabled": True}, "imageSize": [8, 8]}}
    controller = evolution(evo_spec(space, population=4, sample=2))
    fill(controller, 4)
    for index in range(10, 40):  # deeper children (5, 7, 9 layers) from 3-layer parents, and back
        sample = controller.sample(trial_index=index)
        assert controller.space.decode(sample.actions, trial_index=index) == sample.architecture
        assert len(sample.architecture["layers"]) == controller.space.num_layers(trial_index=index)


def test_tournament_picks_the_best_of_its_sample() -> None:
    controller = evolution(evo_spec(population=8, sample=3), seed=5)
    fill(controller, 8, reward=lambda i: [0.3, 0.9, 0.1, 0.5, 0.7, 0.2, 0.8, 0.4][i])
    for _ in range(50):
        replica = torch.Generator()
        replica.set_state(controller.generator.get_state())
        drawn = torch.randperm(8, generator=replica)[:3].tolist()
        parent = controller.tournament()
        assert parent.reward == max(controller.population[i].reward for i in drawn)
        assert parent.trial_index in drawn
    # S = P: always the best member; S = 1: any member.
    controller.sample_size = 8
    assert {controller.tournament().reward for _ in range(20)} == {0.9}
    controller.sample_size = 1
    assert len({controller.tournament().reward for _ in range(200)}) == 8


def test_children_come_from_mutating_the_tournament_winner() -> None:
    controller = evolution(evo_spec(population=4, sample=4))  # S = P: the parent is the best member
    fill(controller, 4, reward=lambda i: [0.2, 0.6, 0.4, 0.1][i])
    best = controller.population[1].actions
    for index in range(4, 30):
        sample = controller.sample(trial_index=index)
        assert sum(a != b for a, b in zip(sample.actions, best)) == 1
    assert controller.mutations == 26


def test_search_adds_each_result_at_once_and_never_a_failed_child() -> None:
    search = Search(evo_spec(population=3, sample=2, maxTrials=20))
    tickets = [search.ask() for _ in range(5)]
    assert search.tell(tickets[0].index, failure("Error")).update is None  # zeroReward does not apply
    assert not search.controller.population and not search.pending
    for ticket in tickets[1:]:
        outcome = search.tell(ticket.index, succeeded(fake_accuracy(ticket.architecture)))
        assert outcome.update is not None and not search.pending
    assert [m.trial_index for m in search.controller.population] == [2, 3, 4]
    assert search.ask().policy_version == 4


@pytest.mark.parametrize("name", ["nb201", "macro-strides"])
def test_checkpoint_restore_continues_exactly(name: str) -> None:
    space = dict(SPACES[name])
    if name != "nb201":
        space = {"macroCNN": {**space["macroCNN"], "depth": {"initialLayers": 2, "increment": 1, "everyTrials": 15}}}
    spec = evo_spec(space, population=5, sample=2, maxTrials=40)
    uninterrupted = Search(spec)
    reference = drive(uninterrupted, steps=1000)

    first_half = Search(spec)
    log = drive(first_half, steps=17)
    assert first_half.in_flight and len(first_half.controller.population) == 5 and first_half.controller.mutations
    restored = Search.restore(spec, first_half.to_bytes())
    drive(restored, steps=1000, log=log)

    assert log == reference
    assert restored.counters == uninterrupted.counters and restored.top == uninterrupted.top
    assert restored.controller.state_dict()["population"] == uninterrupted.controller.state_dict()["population"]
    assert restored.controller.mutations == uninterrupted.controller.mutations


def test_controller_state_round_trip_and_strategy_check() -> None:
    spec = evo_spec(population=4, sample=2)
    controller = evolution(spec)
    fill(controller, 6)
    state = from_bytes(to_bytes(controller.state_dict()))
    twin = evolution(spec, seed=99)
    twin.load_state_dict(state)
    assert [twin.sample(trial_index=i).actions for i in range(6, 16)] == [
        controller.sample(trial_index=i).actions for i in range(6, 16)
    ]
    assert json.loads(state["population"][0])["trial_index"] == 2
    with pytest.raises(ValueError, match="'evolution'"):
        twin.load_state_dict({**state, "strategy": "random"})
    random = build_controller(space=controller.space, config=spec.controller.model_copy(update={"strategy": "random"}), seed=0)
    with pytest.raises(ValueError, match="'random'"):
        random.load_state_dict(state)


def test_evolution_beats_random_on_the_nb201_table() -> None:
    """200 children, FIFO completion with 8 in flight, seeds 0-4 (well under a second)."""
    table = None
    means = {}
    for strategy in ("evolution", "random"):
        best = []
        for seed in range(5):
            spec = nb201_spec(
                trial={"kind": "Tabular", "tabular": {}},
                controller={"strategy": strategy},
                reward={"aggregate": "last", "lastEpochs": 1, "power": 1},
                maxTrials=200,
                parallelism=8,
                seed=seed,
            )
            table = table or TabularEvaluator(spec.trial.tabular).table
            search, queue = Search(spec), []
            while not search.finished:
                while len(queue) < 8 and (ticket := search.ask()) is not None:
                    queue.append(ticket)
                ticket = queue.pop(0)
                search.tell(ticket.index, succeeded(table[ticket.architecture["cell"]]))
            best.append(search.best.validation_accuracy)
        means[strategy] = statistics.mean(best)
    assert means["evolution"] > means["random"] + 0.002, means
