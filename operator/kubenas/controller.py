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
from typing import TYPE_CHECKING, Union

import torch
from torch import nn

from kubenas import spec as specs
from kubenas.adam import Adam
from kubenas.spaces import Action, Anchor, Choice, Decision, InvalidActions, Space, check_action

if TYPE_CHECKING:
    from kubenas.evolution import EvolutionController


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

    # -- batched paths: the same distribution and gradient as `walk`, many children at once --

    def sample_batch(
        self, space: Space, trial_indices: Sequence[int], *, generator: torch.Generator | None = None
    ) -> list[tuple[list[Action], dict, float]]:
        """Sample one child per trial index in one lockstep pass (no autograd): the LSTM
        steps run once for all children, each child's decision program (and its masks)
        is driven by its own generator. Returns (actions, architecture, log-prob) each."""
        n, hidden = len(trial_indices), self.hidden
        programs = [space.decisions(trial_index=t) for t in trial_indices]
        decisions: list[Decision | None] = [next(program) for program in programs]
        taken: list[list[Action]] = [[] for _ in range(n)]
        architectures: list[dict | None] = [None] * n
        log_prob = torch.zeros(n)
        zeros = torch.zeros(n, hidden)
        state = [(zeros, zeros) for _ in self.cells]
        x = self.start.expand(n, hidden)
        key_buffer = torch.zeros(n, 4, hidden)  # W_prev·h of each child's earlier anchors
        anchors_taken = [0] * n
        everyone = list(range(n))
        with torch.no_grad():
            while True:
                active = [i for i in everyone if decisions[i] is not None]
                if not active:
                    break
                h = self.step(x, state)
                x = torch.zeros(n, hidden)
                groups: dict[tuple, list[int]] = {}
                for i in active:
                    decision = decisions[i]
                    signature = ("choice", decision.head) if isinstance(decision, Choice) else ("anchor", decision.layer)
                    groups.setdefault(signature, []).append(i)
                chosen_actions: dict[int, Action] = {}
                for (kind, what), members in groups.items():
                    rows = slice(None) if len(members) == n else torch.tensor(members)
                    h_rows = h[rows]
                    if kind == "choice":
                        logits = self.softmax_heads[what](h_rows)
                        masks = [decisions[i].allowed for i in members]
                        if any(mask is not None for mask in masks):
                            size = logits.shape[1]
                            allowed = torch.tensor([mask if mask is not None else (True,) * size for mask in masks])
                            logits = logits.masked_fill(~allowed, float("-inf"))
                        log_p = torch.log_softmax(logits, dim=-1)
                        picked = torch.multinomial(log_p.exp(), 1, generator=generator)
                        log_prob[rows] += log_p.gather(1, picked)[:, 0]
                        x[rows] = self.embeddings[what](picked[:, 0])
                        for i, action in zip(members, picked[:, 0].tolist()):
                            chosen_actions[i] = action
                    else:
                        layer = what
                        if layer > 0:
                            keys = key_buffer[rows, :layer]
                            logits = self.v(torch.tanh(keys + self.w_curr(h_rows).unsqueeze(1)))[..., 0]
                            bits = torch.bernoulli(torch.sigmoid(logits), generator=generator)
                            log_prob[rows] += (
                                bits * nn.functional.logsigmoid(logits) + (1 - bits) * nn.functional.logsigmoid(-logits)
                            ).sum(1)
                            x[rows] = (bits.unsqueeze(1) @ keys)[:, 0] / (1.0 + bits.sum(1, keepdim=True))
                            bit_lists = bits.to(torch.int64).tolist()
                        else:
                            bit_lists = [[] for _ in members]
                        if layer >= key_buffer.shape[1]:
                            key_buffer = torch.cat([key_buffer, torch.zeros_like(key_buffer)], dim=1)
                        key_buffer[rows, layer] = self.w_prev(h_rows)
                        for i, action in zip(members, bit_lists):
                            if anchors_taken[i] != layer:  # `walk` would have given it the wrong number of bits
                                raise InvalidActions(f"anchor of layer {layer} after {anchors_taken[i]} anchors")
                            anchors_taken[i] += 1
                            chosen_actions[i] = action
                for i, action in chosen_actions.items():
                    check_action(decisions[i], action, position=len(taken[i]))
                    taken[i].append(action)
                    try:
                        decisions[i] = programs[i].send(action)
                    except StopIteration as done:
                        decisions[i] = None
                        architectures[i] = done.value
        return [(taken[i], architectures[i], float(log_prob[i])) for i in range(n)]

    def score_batch(
        self, space: Space, trial_indices: Sequence[int], actions: Sequence[Sequence[Action]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-force recorded children in one pass (with autograd): the log-prob and
        entropy of each child's decision sequence, as tensors of shape (children,)."""
        n = len(trial_indices)
        plans = [_replay(space, t, a) for t, a in zip(trial_indices, actions)]
        log_prob, entropy = torch.zeros(n), torch.zeros(n)
        for members in _compatible_groups([signature for signature, _ in plans]):
            group_log_prob, group_entropy = self._score_group(
                [plans[i][1] for i in members], [list(actions[i]) for i in members], [plans[i][0] for i in members]
            )
            index = torch.tensor(members)
            log_prob = log_prob.index_add(0, index, group_log_prob)
            entropy = entropy.index_add(0, index, group_entropy)
        return log_prob, entropy

    def _score_group(
        self, decisions: list[list[Decision]], actions: list[list[Action]], signatures: list[list[tuple]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Children whose decision signatures are prefixes of the longest one: the LSTM
        runs as a fused sequence between anchor points (an anchor's successor input
        depends on earlier anchors' states, nothing else does)."""
        g, hidden = len(decisions), self.hidden
        template = max(signatures, key=len)
        steps = len(template)
        lengths = [len(d) for d in decisions]
        heads = list(self.softmax_heads.keys())
        offsets, offset = {}, 1
        for head in heads:
            offsets[head] = offset
            offset += self.embeddings[head].num_embeddings
        table = torch.cat([self.start, *(self.embeddings[head].weight for head in heads), torch.zeros(1, hidden)])
        blank = offset  # the zero row: padding, and placeholders for anchor-derived inputs
        rows = [[blank] * g for _ in range(steps)]
        for i in range(g):
            if lengths[i]:
                rows[0][i] = 0
            for s in range(1, lengths[i]):
                previous = decisions[i][s - 1]
                if isinstance(previous, Choice):
                    rows[s][i] = offsets[previous.head] + actions[i][s - 1]
        inputs = table[torch.tensor(rows)]  # (steps, g, hidden)
        anchor_steps = [s for s, (kind, _) in enumerate(template) if kind == "anchor"]
        for ordinal, s in enumerate(anchor_steps):
            if template[s][1] != ordinal:
                raise ValueError(f"the anchor at step {s} is of layer {template[s][1]}, but {ordinal} anchors precede it")
        anchor_bits = []  # anchor k: (g, k) float bits, zero for children that stop before it
        for ordinal, s in enumerate(anchor_steps):
            bits = [actions[i][s] if s < lengths[i] else [0] * ordinal for i in range(g)]
            anchor_bits.append(torch.tensor(bits, dtype=torch.float32).reshape(g, ordinal))
        ordinal_at = {s: k for k, s in enumerate(anchor_steps)}
        params = [p for cell in self.cells for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
        layers = len(self.cells)
        h = torch.zeros(layers, g, hidden)
        c = torch.zeros(layers, g, hidden)
        bounds = sorted(set([0, *anchor_steps, steps]))
        outputs = []
        keys: list[torch.Tensor] = []  # W_prev·h of anchor k: (g, hidden)
        for start, stop in zip(bounds, bounds[1:]):
            segment = inputs[start:stop]
            replaced = [s for s in range(max(start, 1), stop) if (s - 1) in ordinal_at]
            if replaced:
                pieces = list(segment.unbind(0))
                for s in replaced:
                    k = ordinal_at[s - 1]
                    if k == 0:
                        pieces[s - start] = torch.zeros(g, hidden)
                    else:
                        bits = anchor_bits[k]
                        mixed = torch.einsum("gk,kgh->gh", bits, torch.stack(keys[:k]))
                        pieces[s - start] = mixed / (1.0 + bits.sum(1, keepdim=True))
                segment = torch.stack(pieces)
            out, h, c = torch.lstm(segment, (h, c), params, True, layers, 0.0, False, False, False)
            outputs.append(out)
            if start in ordinal_at:
                keys.append(self.w_prev(out[0]))
        states = torch.cat(outputs).reshape(steps * g, hidden)
        log_prob = torch.zeros(g)
        entropy = torch.zeros(g)
        # Choices, one head at a time.
        by_head: dict[str, tuple[list[int], list[int], list[int], list]] = {}
        for i in range(g):
            for s in range(lengths[i]):
                decision = decisions[i][s]
                if isinstance(decision, Choice):
                    flat, child, action, masks = by_head.setdefault(decision.head, ([], [], [], []))
                    flat.append(s * g + i)
                    child.append(i)
                    action.append(actions[i][s])
                    masks.append(decision.allowed)
        for head, (flat, child, action, masks) in by_head.items():
            logits = self.softmax_heads[head](states[torch.tensor(flat)])
            if any(mask is not None for mask in masks):
                size = logits.shape[1]
                allowed = torch.tensor([mask if mask is not None else (True,) * size for mask in masks])
                logits = logits.masked_fill(~allowed, float("-inf"))
            log_p = torch.log_softmax(logits, dim=-1)
            p = log_p.exp()
            index = torch.tensor(child)
            log_prob = log_prob.index_add(0, index, log_p.gather(1, torch.tensor(action).unsqueeze(1))[:, 0])
            entropy = entropy.index_add(0, index, -(p * log_p.masked_fill(p == 0, 0.0)).sum(1))
        # Anchors, all at once: z[k, j, i] = vᵀ tanh(W_prev·h_j + W_curr·h_k) of child i, j < k.
        count = len(anchor_steps)
        if count > 1:
            key_stack = torch.stack(keys)  # (count, g, hidden)
            current = self.w_curr(states.reshape(steps, g, hidden)[torch.tensor(anchor_steps)])
            z = self.v(torch.tanh(key_stack.unsqueeze(0) + current.unsqueeze(1)))[..., 0]  # (k, j, g)
            bits = torch.zeros(count, count, g)
            valid = torch.zeros(count, count, g)
            for k in range(1, count):
                bits[k, :k] = anchor_bits[k].T
                reached = torch.tensor([float(anchor_steps[k] < lengths[i]) for i in range(g)])
                valid[k, :k] = reached
            log_likelihood = bits * nn.functional.logsigmoid(z) + (1 - bits) * nn.functional.logsigmoid(-z)
            bernoulli_entropy = nn.functional.binary_cross_entropy_with_logits(z, torch.sigmoid(z), reduction="none")
            log_prob = log_prob + (valid * log_likelihood).sum((0, 1))
            entropy = entropy + (valid * bernoulli_entropy).sum((0, 1))
        return log_prob, entropy


def _replay(space: Space, trial_index: int, actions: Sequence[Action]) -> tuple[list[tuple], list[Decision]]:
    """The decisions a recorded child went through (validated as `walk` does), and their
    signatures: ("choice", head) or ("anchor", layer)."""
    program = space.decisions(trial_index=trial_index)
    decision = next(program)
    decisions: list[Decision] = []
    while True:
        action = _forced(actions, len(decisions))
        check_action(decision, action, position=len(decisions))
        decisions.append(decision)
        try:
            decision = program.send(action)
        except StopIteration:
            if len(actions) != len(decisions):
                raise ValueError(f"{len(actions)} recorded actions, the program took {len(decisions)}") from None
            break
    signature = [("choice", d.head) if isinstance(d, Choice) else ("anchor", d.layer) for d in decisions]
    return signature, decisions


def _compatible_groups(signatures: Sequence[list[tuple]]) -> list[list[int]]:
    """Children grouped so that within a group every signature is a prefix of the
    longest (e.g. MacroCNN children of several depths): one teacher-forced pass each."""
    groups: list[tuple[list[tuple], list[int]]] = []
    for i in sorted(range(len(signatures)), key=lambda i: -len(signatures[i])):
        for template, members in groups:
            if template[: len(signatures[i])] == signatures[i]:
                members.append(i)
                break
        else:
            groups.append((signatures[i], [i]))
    return [sorted(members) for _, members in groups]


def _forced(actions: Sequence[Action], position: int) -> Action:
    if position >= len(actions):
        raise ValueError(f"only {len(actions)} recorded actions; the program asks for more")
    action = actions[position]
    return list(action) if isinstance(action, (list, tuple)) else int(action)


SAMPLER_FORMAT = 2  # 2: children sampled in batches (1, unmarked: one at a time)


class ReinforceController:
    """REINFORCE: ∇ = (1/m) Σₖ Σₜ ∇log P(aₜ|a₁:ₜ₋₁)(Rₖ − b), b an exponential moving average."""

    strategy = "reinforce"
    # Search hands results over `batchSize` at a time; a failed child scores as failedTrials says.
    learns_from_failures = True

    @property
    def results_per_update(self) -> int:
        return self.config.batch_size

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
        self.optimizer = Adam(self.policy.parameters(), lr=config.learning_rate)
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline: float | None = None
        self.version = 0
        # Children sampled ahead (program key -> [(actions, architecture, log-prob)]),
        # valid while the policy is at `_ready_version`.
        self._ready: dict[object, list[tuple[list[Action], dict, float]]] = {}
        self._ready_version = 0

    def sample(self, *, trial_index: int) -> Sample:
        """A child drawn from the current policy. Children are sampled `batch_size` at a
        time (one lockstep pass for the next trial indices) and handed out in order; the
        ones left over when the policy changes are dropped, so every child still comes
        from the policy of the version it is handed out under."""
        if self._ready_version != self.version:
            self._ready = {}
        key = self.space.program_key(trial_index)
        queue = self._ready.get(key)
        if not queue:
            indices = [trial_index + k for k in range(max(1, self.config.batch_size))]
            self._ready = {}
            self._ready_version = self.version
            for t, drawn in zip(indices, self.policy.sample_batch(self.space, indices, generator=self.generator)):
                self._ready.setdefault(self.space.program_key(t), []).append(drawn)
            queue = self._ready[key]
        actions, architecture, log_prob = queue.pop(0)
        return Sample(actions=actions, architecture=architecture, log_prob=log_prob)

    def score(self, *, trial_index: int, actions: Sequence[Action]) -> Scored:
        log_prob, entropy = self.policy.score_batch(self.space, [trial_index], [actions])
        return Scored(log_prob=log_prob[0], entropy=entropy[0])

    def update(self, batch: Sequence[Experience]) -> UpdateStats:
        rewards = [experience.reward for experience in batch]
        mean_reward = sum(rewards) / len(rewards)
        baseline, new_baseline = _moving_baseline(self.baseline, rewards, decay=self.config.baseline_decay)
        log_probs, entropies = self.policy.score_batch(
            self.space, [e.trial_index for e in batch], [e.actions for e in batch]
        )
        advantages = torch.tensor([e.reward - baseline for e in batch], dtype=torch.float32)
        policy_loss = -(advantages * log_probs).sum() / len(batch)
        entropy = entropies.sum() / len(batch)
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
            "sampler": SAMPLER_FORMAT,
            "ready": [[key, list(drawn)] for key, queue in self._ready.items() for drawn in queue],
            "ready_version": self._ready_version,
        }

    def load_state_dict(self, state: dict) -> None:
        _check_strategy(state, self.strategy)
        sampler = state.get("sampler", 1)  # older checkpoints have no children sampled ahead
        if sampler not in (1, SAMPLER_FORMAT):
            raise ValueError(f"checkpoint sampler format {sampler} is not {SAMPLER_FORMAT} (made by a newer kubenas?)")
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.baseline = state["baseline"]
        self.version = state["version"]
        self._ready = {}
        for key, (actions, architecture, log_prob) in state.get("ready", []):
            key = tuple(key) if isinstance(key, list) else key
            self._ready.setdefault(key, []).append((actions, architecture, log_prob))
        self._ready_version = state.get("ready_version", self.version)


class RandomController:
    """Uniform sampling over the allowed options, anchors with probability ½: the
    baseline any search result must beat. Same interface; updates only count."""

    strategy = "random"
    # Search hands results over `batchSize` at a time; a failed child scores as failedTrials says.
    learns_from_failures = True

    @property
    def results_per_update(self) -> int:
        return self.config.batch_size

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
            action, action_log_prob = random_action(decision, self.generator)
            log_prob += action_log_prob
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


def random_action(decision: Decision, generator: torch.Generator) -> tuple[Action, float]:
    """A uniform draw among a decision's allowed options (anchor bits each ½), and its log-prob."""
    if isinstance(decision, Choice):
        options = [i for i in range(decision.num_choices) if decision.allowed is None or decision.allowed[i]]
        return options[int(torch.randint(len(options), (1,), generator=generator))], -math.log(len(options))
    return [int(b) for b in torch.randint(2, (decision.layer,), generator=generator)], -decision.layer * math.log(2)


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


Controller = Union[ReinforceController, RandomController, "EvolutionController"]


def build_controller(*, space: Space, config: specs.Controller, seed: int) -> Controller:
    from kubenas.evolution import EvolutionController  # it builds on this module

    # The policy's ops are tiny (a batch of a few children, 100 units): a second
    # intra-op thread only spins, and on a busy machine (the children, the plot worker,
    # another search) OpenMP's spinning makes every op ten to a hundred times slower.
    torch.set_num_threads(1)
    cls = {"reinforce": ReinforceController, "random": RandomController, "evolution": EvolutionController}[config.strategy]
    return cls(space=space, config=config, seed=seed)


def to_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes) -> dict:
    # weights_only: a checkpoint read from a ConfigMap or a file can never run code.
    return torch.load(io.BytesIO(data), weights_only=True)
