"""Regularized evolution (Real et al. 2019, "Regularized Evolution for Image Classifier
Architecture Search", AAAI), with the controllers' ask/tell interface and checkpoints.

A population of the last P results (child, actions, reward). Until it is full, children
are drawn uniformly at random (as the `random` strategy does). Then each ask draws S
members at random, takes the best of them as the parent and mutates it: one decision of
its recorded action sequence changes to another allowed value (a Choice to another
allowed option, an anchor by one input bit), and the space's decision program is
replayed with the mutated actions, so masks and depth hold; a later recorded action the
mutation made invalid is drawn again at random (as is any decision the parent never took,
e.g. a deeper child under a depth schedule). Each result joins the population as it
arrives and the OLDEST member leaves (ageing), not the worst. Children in flight are not
members; failed children never become members.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from kubenas import spec as specs
from kubenas.controller import (
    Experience,
    Sample,
    UpdateStats,
    _forced,
    _moving_baseline,
    load_sampler_state,
    random_action,
    sampler_state,
)
from kubenas.spaces import Action, Choice, Decision, InvalidActions, Space, check_action


@dataclass(frozen=True)
class Individual:
    trial_index: int
    actions: list[Action]
    architecture: dict
    reward: float


def _alternatives(decision: Decision, action: Action) -> int:
    """How many other valid values `action` could take at `decision` (0: not mutable)."""
    if isinstance(decision, Choice):
        allowed = decision.num_choices if decision.allowed is None else sum(decision.allowed)
        return allowed - 1
    return decision.layer  # an anchor mutates by flipping one of its bits


def _mutated(decision: Decision, action: Action, generator: torch.Generator) -> tuple[Action, float]:
    """Another valid value of `action`, uniform among the alternatives, and its log-prob."""
    if isinstance(decision, Choice):
        options = [
            i for i in range(decision.num_choices) if i != action and (decision.allowed is None or decision.allowed[i])
        ]
        return options[int(torch.randint(len(options), (1,), generator=generator))], -math.log(len(options))
    bit = int(torch.randint(decision.layer, (1,), generator=generator))
    bits = list(action)
    bits[bit] = 1 - bits[bit]
    return bits, -math.log(decision.layer)


def _valid(decision: Decision, action: Action, position: int) -> bool:
    try:
        check_action(decision, action, position=position)
    except InvalidActions:
        return False
    return True


def build(
    space: Space,
    trial_index: int,
    actions: Sequence[Action],
    generator: torch.Generator,
    *,
    mutate_at: int | None = None,
) -> tuple[list[Action], dict, float, list[Decision]]:
    """Run child `trial_index`'s decision program on `actions`: each recorded action that
    is valid where it stands is kept, any other decision (invalid, or past the end) is
    drawn at random; at position `mutate_at` the action changes to another valid value.
    Returns (actions taken, architecture, log-prob of the random draws, decisions)."""
    program = space.decisions(trial_index=trial_index)
    decision = next(program)
    taken: list[Action] = []
    decisions: list[Decision] = []
    log_prob = 0.0
    while True:
        position = len(taken)
        action: Action | None = None
        if position < len(actions):
            action = _forced(actions, position)
            if not _valid(decision, action, position):
                action = None
        if action is None:
            action, step = random_action(decision, generator)
            log_prob += step
        if position == mutate_at:
            action, step = _mutated(decision, action, generator)
            log_prob += step
        taken.append(action)
        decisions.append(decision)
        try:
            decision = program.send(action)
        except StopIteration as done:
            return taken, done.value, log_prob, decisions


class EvolutionController:
    """Regularized evolution: tournament selection (S of P), one-decision mutation, ageing."""

    strategy = "evolution"
    # Each result joins the population at once; a failed child never does.
    results_per_update = 1
    learns_from_failures = False

    def __init__(self, *, space: Space, config: specs.Controller, seed: int) -> None:
        self.space = space
        self.config = config
        self.population_size = config.evolution.population_size
        self.sample_size = config.evolution.sample_size
        self.generator = torch.Generator().manual_seed(seed)
        self.population: deque[Individual] = deque()
        self.baseline: float | None = None  # moving average of the rewards, for the status
        self.version = 0  # results received (each is an update)
        self.mutations = 0  # children made by mutation

    # -- ask -------------------------------------------------------------------------

    def sample(self, *, trial_index: int) -> Sample:
        if len(self.population) < self.population_size:
            actions, architecture, log_prob, _ = build(self.space, trial_index, [], self.generator)
            return Sample(actions=actions, architecture=architecture, log_prob=log_prob)
        parent = self.tournament()
        return self.mutate(parent, trial_index=trial_index)

    def tournament(self) -> Individual:
        """The best of `sample_size` members drawn at random without replacement (ties:
        the first drawn)."""
        drawn = torch.randperm(len(self.population), generator=self.generator)[: self.sample_size].tolist()
        return max((self.population[i] for i in drawn), key=lambda member: member.reward)

    def mutate(self, parent: Individual, *, trial_index: int) -> Sample:
        """`parent` with one decision changed, as child `trial_index`. The parent's actions
        are first fitted to this child's program (unchanged unless its depth differs); the
        decision to change is uniform among those with another valid value."""
        fitted, architecture, log_prob, decisions = build(self.space, trial_index, parent.actions, self.generator)
        mutable = [i for i, (d, a) in enumerate(zip(decisions, fitted)) if _alternatives(d, a) > 0]
        if not mutable:  # nothing can change (a space of one architecture): the parent again
            return Sample(actions=fitted, architecture=architecture, log_prob=log_prob)
        position = mutable[int(torch.randint(len(mutable), (1,), generator=self.generator))]
        actions, architecture, step, _ = build(self.space, trial_index, fitted, self.generator, mutate_at=position)
        self.mutations += 1
        return Sample(actions=actions, architecture=architecture, log_prob=log_prob + step - math.log(len(mutable)))

    # -- tell ------------------------------------------------------------------------

    def update(self, batch: Sequence[Experience]) -> UpdateStats:
        """The batch's children join the population in order; the oldest members leave."""
        rewards = [experience.reward for experience in batch]
        for experience in batch:
            # The recorded actions are valid for their own program: the replay draws nothing.
            actions, architecture, _, _ = build(self.space, experience.trial_index, experience.actions, _NO_DRAWS)
            if actions != [_forced(experience.actions, i) for i in range(len(experience.actions))]:
                raise InvalidActions(f"child {experience.trial_index}'s actions do not fit its program")
            self.population.append(Individual(experience.trial_index, actions, architecture, experience.reward))
            while len(self.population) > self.population_size:
                self.population.popleft()
        baseline, self.baseline = _moving_baseline(self.baseline, rewards, decay=self.config.baseline_decay)
        self.version += 1
        # No policy, so no loss, entropy or gradient.
        return UpdateStats(self.version, self.baseline, baseline, sum(rewards) / len(rewards), 0.0, 0.0, 0.0)

    # -- checkpoint ------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            **sampler_state(self),
            "mutations": self.mutations,
            "population": [json.dumps(asdict(member)) for member in self.population],  # oldest first
        }

    def load_state_dict(self, state: dict) -> None:
        load_sampler_state(self, state)
        self.mutations = state["mutations"]
        self.population = deque(Individual(**json.loads(member)) for member in state["population"])


# A generator for replays that must draw nothing (a draw would still be deterministic).
_NO_DRAWS = torch.Generator().manual_seed(0)
