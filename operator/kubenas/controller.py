"""The controller (Zoph & Le §3.1-3.2): a 2-layer LSTM policy trained with REINFORCE,
and the `random` baseline with the same interface.

Sampling runs without autograd and records the actions taken. At update time the
log-probabilities of exactly those actions are recomputed under the current weights by
teacher forcing (Katib's ENAS re-samples instead and so follows the wrong gradient), so
no graph stays alive between sampling and update: children can take hours, thousands
can be in flight, and the operator may restart in between.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from kubenas import spec as specs
from kubenas.spaces import Action, Anchor, Choice, Space, check_action


@dataclass(frozen=True)
class Sample:
    actions: list[Action]
    architecture: dict
    log_prob: float


@dataclass(frozen=True)
class Scored:
    """Recorded actions scored under the current policy (with autograd)."""

    log_prob: torch.Tensor
    entropy: torch.Tensor


@dataclass(frozen=True)
class Experience:
    """One child's contribution to a policy update."""

    trial_index: int
    actions: list[Action]
    reward: float


@dataclass(frozen=True)
class UpdateStats:
    version: int  # policy version after this update
    baseline: float  # baseline after this update
    advantage_baseline: float  # the baseline the batch was compared against
    mean_reward: float
    loss: float
    entropy: float  # mean entropy (nats) of the batch's decision sequences
    grad_norm: float


class PolicyNetwork(nn.Module):
    """2-layer LSTM; one softmax head and one input embedding per decision type; anchor
    attention P(j feeds i) = sigmoid(vᵀ tanh(W_prev·h_j + W_curr·h_i))."""

    def __init__(self, *, heads: dict[str, int], hidden: int, layers: int, anchors: bool, init_range: float) -> None:
        super().__init__()
        self.hidden = hidden
        self.start = nn.Parameter(torch.zeros(1, hidden))  # input of the first step
        self.cells = nn.ModuleList(nn.LSTMCell(hidden, hidden) for _ in range(layers))
        self.softmax_heads = nn.ModuleDict({name: nn.Linear(hidden, size) for name, size in heads.items()})
        self.embeddings = nn.ModuleDict({name: nn.Embedding(size, hidden) for name, size in heads.items()})
        if anchors:
            self.w_prev = nn.Linear(hidden, hidden, bias=False)
            self.w_curr = nn.Linear(hidden, hidden, bias=False)
            self.v = nn.Linear(hidden, 1, bias=False)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -init_range, init_range)

    def step(self, x: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        for layer, cell in enumerate(self.cells):
            state[layer] = cell(x, state[layer])
            x = state[layer][0]
        return x

    def walk(
        self,
        space: Space,
        *,
        trial_index: int,
        actions: Sequence[Action] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[list[Action], dict, torch.Tensor, torch.Tensor]:
        """Run the decision program: sample (actions=None) or teacher-force `actions`.
        Returns the actions, the architecture, and the sequence's log-prob and entropy."""
        zeros = torch.zeros(1, self.hidden)
        state = [(zeros, zeros) for _ in self.cells]
        x = self.start
        anchor_keys: list[torch.Tensor] = []  # W_prev·h_j of each earlier anchor
        log_prob = torch.zeros(())
        entropy = torch.zeros(())
        taken: list[Action] = []
        program = space.decisions(trial_index=trial_index)
        decision = next(program)
        while True:
            h = self.step(x, state)
            forced = None if actions is None else _forced(actions, len(taken))
            if isinstance(decision, Choice):
                logits = self.softmax_heads[decision.head](h)[0]
                if decision.allowed is not None:
                    logits = logits.masked_fill(~torch.tensor(decision.allowed), float("-inf"))
                log_p = torch.log_softmax(logits, dim=-1)
                p = log_p.exp()
                action = forced if forced is not None else int(torch.multinomial(p, 1, generator=generator))
                check_action(decision, action, position=len(taken))
                log_prob = log_prob + log_p[action]
                entropy = entropy - (p * log_p.masked_fill(p == 0, 0.0)).sum()
                x = self.embeddings[decision.head](torch.tensor([action]))
            else:
                keys = torch.cat(anchor_keys) if anchor_keys else torch.zeros(0, self.hidden)
                logits = self.v(torch.tanh(keys + self.w_curr(h)))[:, 0]
                if forced is not None:
                    bits = forced
                else:
                    bits = [int(b) for b in torch.bernoulli(torch.sigmoid(logits), generator=generator)]
                action = bits
                check_action(decision, action, position=len(taken))
                chosen = torch.tensor(bits, dtype=torch.float32)
                # log σ(z) for a 1, log σ(-z) for a 0: stable Bernoulli log-likelihood.
                log_prob = log_prob + (chosen * nn.functional.logsigmoid(logits) + (1 - chosen) * nn.functional.logsigmoid(-logits)).sum()
                p = torch.sigmoid(logits)
                entropy = entropy + nn.functional.binary_cross_entropy_with_logits(logits, p, reduction="sum")
                # Next input: the mean of the chosen layers' keys (zero when none is chosen).
                x = (chosen @ keys).unsqueeze(0) / (1.0 + chosen.sum())
                anchor_keys.append(self.w_prev(h))
            taken.append(action)
            try:
                decision = program.send(action)
            except StopIteration as done:
                if actions is not None and len(actions) != len(taken):
                    raise ValueError(f"{len(actions)} recorded actions, the program took {len(taken)}") from None
                return taken, done.value, log_prob, entropy


def _forced(actions: Sequence[Action], position: int) -> Action:
    if position >= len(actions):
        raise ValueError(f"only {len(actions)} recorded actions; the program asks for more")
    action = actions[position]
    return list(action) if isinstance(action, (list, tuple)) else int(action)


class ReinforceController:
    """REINFORCE: ∇ = (1/m) Σₖ Σₜ ∇log P(aₜ|a₁:ₜ₋₁)(Rₖ − b), b an exponential moving average."""

    strategy = "reinforce"

    def __init__(self, *, space: Space, config: specs.Controller, seed: int) -> None:
        self.space = space
        self.config = config
        torch.manual_seed(seed)  # the initial weights depend on the seed alone
        self.policy = PolicyNetwork(
            heads=space.heads,
            hidden=config.lstm_size,
            layers=config.lstm_layers,
            anchors=space.uses_anchors,
            init_range=config.init_range,
        )
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.learning_rate)
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline: float | None = None
        self.version = 0

    def sample(self, *, trial_index: int) -> Sample:
        with torch.no_grad():
            actions, architecture, log_prob, _ = self.policy.walk(
                self.space, trial_index=trial_index, generator=self.generator
            )
        return Sample(actions=actions, architecture=architecture, log_prob=float(log_prob))

    def score(self, *, trial_index: int, actions: Sequence[Action]) -> Scored:
        _, _, log_prob, entropy = self.policy.walk(self.space, trial_index=trial_index, actions=actions)
        return Scored(log_prob=log_prob, entropy=entropy)

    def update(self, batch: Sequence[Experience]) -> UpdateStats:
        rewards = [experience.reward for experience in batch]
        mean_reward = sum(rewards) / len(rewards)
        baseline, new_baseline = _moving_baseline(self.baseline, rewards, decay=self.config.baseline_decay)
        scored = [self.score(trial_index=e.trial_index, actions=e.actions) for e in batch]
        policy_loss = -sum((e.reward - baseline) * s.log_prob for e, s in zip(batch, scored)) / len(batch)
        entropy = sum(s.entropy for s in scored) / len(batch)
        loss = policy_loss - self.config.entropy_weight * entropy
        self.optimizer.zero_grad()
        loss.backward()
        max_norm = self.config.grad_clip_norm or math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), max_norm))
        self.optimizer.step()
        self.baseline = new_baseline
        self.version += 1
        return UpdateStats(
            version=self.version,
            baseline=new_baseline,
            advantage_baseline=baseline,
            mean_reward=mean_reward,
            loss=loss.item(),
            entropy=entropy.item(),
            grad_norm=grad_norm,
        )

    def state_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "baseline": self.baseline,
            "version": self.version,
        }

    def load_state_dict(self, state: dict) -> None:
        _check_strategy(state, self.strategy)
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.baseline = state["baseline"]
        self.version = state["version"]


class RandomController:
    """Uniform sampling over the allowed options, anchors with probability ½: the
    baseline any search result must beat. Same interface; updates only count."""

    strategy = "random"

    def __init__(self, *, space: Space, config: specs.Controller, seed: int) -> None:
        self.space = space
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline: float | None = None
        self.version = 0

    def sample(self, *, trial_index: int) -> Sample:
        program = self.space.decisions(trial_index=trial_index)
        decision = next(program)
        actions: list[Action] = []
        log_prob = 0.0
        while True:
            if isinstance(decision, Choice):
                options = [i for i in range(decision.num_choices) if decision.allowed is None or decision.allowed[i]]
                action: Action = options[int(torch.randint(len(options), (1,), generator=self.generator))]
                log_prob -= math.log(len(options))
            else:
                action = [int(b) for b in torch.randint(2, (decision.layer,), generator=self.generator)]
                log_prob -= decision.layer * math.log(2)
            actions.append(action)
            try:
                decision = program.send(action)
            except StopIteration as done:
                return Sample(actions=actions, architecture=done.value, log_prob=log_prob)

    def update(self, batch: Sequence[Experience]) -> UpdateStats:
        rewards = [experience.reward for experience in batch]
        mean_reward = sum(rewards) / len(rewards)
        baseline, self.baseline = _moving_baseline(self.baseline, rewards, decay=self.config.baseline_decay)
        self.version += 1
        entropy = sum(_uniform_entropy(self.space, e) for e in batch) / len(batch)
        return UpdateStats(self.version, self.baseline, baseline, mean_reward, 0.0, entropy, 0.0)

    def state_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "generator": self.generator.get_state(),
            "baseline": self.baseline,
            "version": self.version,
        }

    def load_state_dict(self, state: dict) -> None:
        _check_strategy(state, self.strategy)
        self.generator.set_state(state["generator"])
        self.baseline = state["baseline"]
        self.version = state["version"]


def _moving_baseline(current: float | None, rewards: Sequence[float], *, decay: float) -> tuple[float, float]:
    """(the baseline this batch is compared against, the baseline after it). Before any
    update there is no history, so the first batch is its own baseline."""
    before = sum(rewards) / len(rewards) if current is None else current
    after = before
    for reward in rewards:
        after = decay * after + (1 - decay) * reward
    return before, after


def _uniform_entropy(space: Space, experience: Experience) -> float:
    program = space.decisions(trial_index=experience.trial_index)
    decision = next(program)
    total = 0.0
    for action in experience.actions:
        if isinstance(decision, Choice):
            total += math.log(decision.num_choices if decision.allowed is None else sum(decision.allowed))
        else:
            total += decision.layer * math.log(2)
        try:
            decision = program.send(action)
        except StopIteration:
            break
    return total


def _check_strategy(state: dict, strategy: str) -> None:
    if state.get("strategy") != strategy:
        raise ValueError(f"checkpoint is of a {state.get('strategy')!r} controller, not {strategy!r}")


Controller = ReinforceController | RandomController


def build_controller(*, space: Space, config: specs.Controller, seed: int) -> Controller:
    cls = ReinforceController if config.strategy == "reinforce" else RandomController
    return cls(space=space, config=config, seed=seed)


def to_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes) -> dict:
    # weights_only: a checkpoint read from a ConfigMap or a file can never run code.
    return torch.load(io.BytesIO(data), weights_only=True)
