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
from kubenas.spaces import Action, Choice, Decision, InvalidActions, Space, check_action

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
        # (space, program key, actions) -> (signatures, decisions) of recently sampled children
        self._seen: dict[tuple, tuple[list[tuple], list[Decision]]] = {}

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
    # The policy is tiny (a batch of a few children, 35 units), so these paths cost per op, not
    # per flop: they call the functional ops with the weights (no Module __call__), take
    # the common case (every child at the same decision) without indexing, and keep
    # autograd out of the sequential part (see _TeacherForcedLSTM).

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
        seen: list[list[Decision]] = [[] for _ in range(n)]  # for scoring (see _remember)
        signatures: list[list[tuple]] = [[] for _ in range(n)]
        architectures: list[dict | None] = [None] * n
        cells = [(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh) for cell in self.cells]
        heads = {name: (head.weight, head.bias, self.embeddings[name].weight) for name, head in self.softmax_heads.items()}
        anchors_taken = [0] * n
        active = list(range(n))
        with torch.inference_mode():
            log_prob = torch.zeros(n)
            zeros = torch.zeros(n, hidden)
            state = [(zeros, zeros) for _ in cells]
            x = self.start.expand(n, hidden)
            key_buffer = torch.zeros(n, 4, hidden)  # W_prev·h of each child's earlier anchors
            while active:
                for layer, weights in enumerate(cells):
                    state[layer] = torch.lstm_cell(x, state[layer], *weights)
                    x = state[layer][0]
                h = x
                groups: dict[tuple, list[int]] = {}
                for i in active:
                    signature = _signature(decisions[i])
                    signatures[i].append(signature)
                    groups.setdefault(signature, []).append(i)
                # Usually every child is at the same decision: its rows are all rows.
                everyone = len(groups) == 1 and len(active) == n
                x = zeros if everyone else torch.zeros(n, hidden)  # inputs of the next step
                chosen_actions: dict[int, Action] = {}
                for (kind, what), members in groups.items():
                    rows = slice(None) if everyone else torch.tensor(members)
                    h_rows = h if everyone else h[rows]
                    step_log_prob = None
                    if kind == "choice":
                        weight, bias, embedding = heads[what]
                        logits = nn.functional.linear(h_rows, weight, bias)
                        masks = tuple(decisions[i].allowed for i in members)
                        if any(mask is not None for mask in masks):
                            logits = logits.masked_fill(_forbidden(masks, logits.shape[1]), float("-inf"))
                        log_p = torch.log_softmax(logits, dim=-1)
                        picked = torch.multinomial(log_p.exp(), 1, generator=generator)
                        step_log_prob = log_p.gather(1, picked).view(-1)
                        picked = picked.view(-1)
                        inputs = nn.functional.embedding(picked, embedding)
                        actions: list = picked.tolist()
                    else:
                        layer = what
                        inputs = None  # the layer-0 anchor has no earlier layer: a zero input
                        actions = [[] for _ in members]
                        if layer > 0:
                            keys = key_buffer[rows, :layer]
                            current = nn.functional.linear(h_rows, self.w_curr.weight).unsqueeze(1)
                            logits = nn.functional.linear(torch.tanh(keys + current), self.v.weight)[..., 0]
                            bits = torch.bernoulli(torch.sigmoid(logits), generator=generator)
                            # log σ(z) for a 1, log σ(-z) for a 0, as in `walk`.
                            step_log_prob = nn.functional.logsigmoid(logits * (2 * bits - 1)).sum(1)
                            inputs = (bits.unsqueeze(1) @ keys)[:, 0] / (1.0 + bits.sum(1, keepdim=True))
                            actions = bits.to(torch.int64).tolist()
                        if layer >= key_buffer.shape[1]:
                            key_buffer = torch.cat([key_buffer, torch.zeros_like(key_buffer)], dim=1)
                        key_buffer[rows, layer] = nn.functional.linear(h_rows, self.w_prev.weight)
                        for i in members:
                            if anchors_taken[i] != layer:  # `walk` would have given it the wrong number of bits
                                raise InvalidActions(f"anchor of layer {layer} after {anchors_taken[i]} anchors")
                            anchors_taken[i] += 1
                    if step_log_prob is not None:
                        if everyone:
                            log_prob += step_log_prob
                        else:
                            log_prob.index_add_(0, rows, step_log_prob)
                    if inputs is not None:
                        if everyone:
                            x = inputs
                        else:
                            x.index_copy_(0, rows, inputs)
                    chosen_actions.update(zip(members, actions))
                # (No check_action: a masked option has probability 0, and an anchor gets
                # as many bits as it has earlier layers, as checked above.)
                for i, action in chosen_actions.items():
                    taken[i].append(action)
                    seen[i].append(decisions[i])
                    try:
                        decisions[i] = programs[i].send(action)
                    except StopIteration as done:
                        decisions[i] = None
                        architectures[i] = done.value
                active = [i for i in active if decisions[i] is not None]
            log_probs = log_prob.tolist()
        for t, *plan in zip(trial_indices, taken, signatures, seen):
            self._remember(space, t, *plan)
        return [(taken[i], architectures[i], log_probs[i]) for i in range(n)]

    def score_batch(
        self, space: Space, trial_indices: Sequence[int], actions: Sequence[Sequence[Action]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-force recorded children in one pass (with autograd): the log-prob and
        entropy of each child's decision sequence, as tensors of shape (children,)."""
        n = len(trial_indices)
        plans = [self._recall(space, t, a) for t, a in zip(trial_indices, actions)]
        groups = _compatible_groups([signature for signature, _ in plans])
        if len(groups) == 1:  # the common case: no merging needed
            return self._score_group([d for _, d in plans], [list(a) for a in actions], [s for s, _ in plans])
        log_prob, entropy = torch.zeros(n), torch.zeros(n)
        for members in groups:
            group_log_prob, group_entropy = self._score_group(
                [plans[i][1] for i in members], [list(actions[i]) for i in members], [plans[i][0] for i in members]
            )
            index = torch.tensor(members)
            log_prob = log_prob.index_add(0, index, group_log_prob)
            entropy = entropy.index_add(0, index, group_entropy)
        return log_prob, entropy

    # Children sampled here are usually scored here soon after: their decisions are kept
    # (at most this many children) so that scoring need not run their programs again.
    _REMEMBERED = 512

    def _remember(
        self, space: Space, trial_index: int, actions: list[Action], signatures: list[tuple], decisions: list[Decision]
    ) -> None:
        self._seen[_recording_key(space, trial_index, actions)] = (signatures, decisions)
        if len(self._seen) > self._REMEMBERED:
            del self._seen[next(iter(self._seen))]  # the oldest

    def _recall(self, space: Space, trial_index: int, actions: Sequence[Action]) -> tuple[list[tuple], list[Decision]]:
        """_replay's answer, from memory when this policy sampled the same actions in the
        same decision program (`Space.program_key`): the program would take the same path."""
        plan = self._seen.get(_recording_key(space, trial_index, actions))
        return plan if plan is not None else _replay(space, trial_index, actions)

    def _score_group(
        self, decisions: list[list[Decision]], actions: list[list[Action]], signatures: list[list[tuple]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Children whose decision signatures are prefixes of the longest one: one
        teacher-forced LSTM pass for all (an anchor's successor input depends on earlier
        anchors' states, nothing else does), then every choice of a head and every anchor
        scored at once."""
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
        blank = offset  # the zero row: padding, and the input after an anchor (mixed in by the LSTM)
        rows = [[blank] * g for _ in range(steps)]
        for i in range(g):
            if lengths[i]:
                rows[0][i] = 0
            for s, (decision, action) in enumerate(zip(decisions[i][:-1], actions[i]), start=1):
                if isinstance(decision, Choice):
                    rows[s][i] = offsets[decision.head] + action
        inputs = table[torch.tensor(rows)]  # (steps, g, hidden)
        anchor_steps = [s for s, (kind, _) in enumerate(template) if kind == "anchor"]
        for ordinal, s in enumerate(anchor_steps):
            if template[s][1] != ordinal:
                raise ValueError(f"the anchor at step {s} is of layer {template[s][1]}, but {ordinal} anchors precede it")
        count = len(anchor_steps)
        # bits[k, i, j]: child i's bit "layer j feeds layer k" (zero for j >= k, or when i stops before anchor k).
        bits = torch.tensor(
            [
                [*actions[i][s], *[0] * (count - k)] if s < lengths[i] else [0] * count
                for k, s in enumerate(anchor_steps)
                for i in range(g)
            ],
            dtype=torch.float32,
        ).reshape(count, g, count)
        # The input after anchor k: the mean of the chosen earlier keys (zero when none is chosen).
        mixing = bits / (1.0 + bits.sum(2, keepdim=True))
        mixes = {s + 1: mixing[k, :, :k] for k, s in enumerate(anchor_steps) if k > 0 and s + 1 < steps}
        weights = [p for cell in self.cells for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
        if count:
            states = _TeacherForcedLSTM.apply(inputs, anchor_steps, mixes, self.w_prev.weight, *weights)
        else:  # nothing cuts the sequence: one torch.lstm call (C++, a single autograd node)
            zeros = torch.zeros(len(self.cells), g, hidden)
            states = torch.lstm(inputs, (zeros, zeros), weights, True, len(self.cells), 0.0, False, False, False)[0]
        flat_states = states.reshape(steps * g, hidden)
        log_prob = torch.zeros(g)
        entropy = torch.zeros(g)
        # Choices, every head at once: one softmax over all heads' options, where another
        # head's options and masked ones are -inf (probability exactly 0).
        starts, total = {}, 0
        for head in heads:
            starts[head] = total
            total += self.softmax_heads[head].out_features
        flat, child, target, mask_of = [], [], [], []
        mask_ids: dict[tuple, int] = {}  # (head, allowed) -> row of `allowed` below
        for i in range(g):
            for s, (decision, action) in enumerate(zip(decisions[i], actions[i])):
                if isinstance(decision, Choice):
                    flat.append(s * g + i)
                    child.append(i)
                    target.append(starts[decision.head] + action)
                    mask_of.append(mask_ids.setdefault((decision.head, decision.allowed), len(mask_ids)))
        if flat:
            allowed = torch.zeros(len(mask_ids), total, dtype=torch.bool)
            for (head, mask), row in mask_ids.items():
                options = slice(starts[head], starts[head] + self.softmax_heads[head].out_features)
                allowed[row, options] = True if mask is None else torch.tensor(mask)
            weight = torch.cat([self.softmax_heads[head].weight for head in heads])
            bias = torch.cat([self.softmax_heads[head].bias for head in heads])
            logits = nn.functional.linear(flat_states[torch.tensor(flat)], weight, bias)
            logits = logits.masked_fill(~allowed[torch.tensor(mask_of)], float("-inf"))
            log_p = torch.log_softmax(logits, dim=-1)
            p = log_p.exp()
            index = torch.tensor(child)
            log_prob = log_prob.index_add(0, index, log_p.gather(1, torch.tensor(target).unsqueeze(1))[:, 0])
            entropy = entropy.index_add(0, index, -(p * log_p.masked_fill(p == 0, 0.0)).sum(1))
        # Anchors, all at once: z[k, j, i] = vᵀ tanh(W_prev·h_j + W_curr·h_k) of child i, j < k.
        if count > 1:
            anchor_states = states[torch.tensor(anchor_steps)]  # (count, g, hidden)
            keys = nn.functional.linear(anchor_states, self.w_prev.weight)
            current = nn.functional.linear(anchor_states, self.w_curr.weight)
            z = nn.functional.linear(torch.tanh(keys.unsqueeze(0) + current.unsqueeze(1)), self.v.weight)[..., 0]
            reached = torch.tensor([[float(s < length) for length in lengths] for s in anchor_steps])  # (count, g)
            valid = torch.ones(count, count).tril(-1).unsqueeze(2) * reached.unsqueeze(1)  # (k, j, g)
            # log σ(z) for a 1, log σ(-z) for a 0 (masked where invalid), as in `walk`.
            log_likelihood = nn.functional.logsigmoid(z * (2 * bits.permute(0, 2, 1) - 1))
            bernoulli_entropy = nn.functional.binary_cross_entropy_with_logits(z, torch.sigmoid(z), reduction="none")
            log_prob = log_prob + (valid * log_likelihood).sum((0, 1))
            entropy = entropy + (valid * bernoulli_entropy).sum((0, 1))
        return log_prob, entropy


class _TeacherForcedLSTM(torch.autograd.Function):
    """The policy's LSTM over a teacher-forced decision sequence, as one autograd node.

    Anchors cut the sequence (the input after anchor k is Σⱼ mixes[k][·, j]·W_prev·hⱼ
    over earlier anchors' top-layer states), so torch.lstm would run piece by piece at
    ~0.4 ms of fixed cost per piece in backward, and a graph of per-step cell ops costs
    more still. Here forward and backward (backpropagation through time, written out)
    run without autograd in waves: in wave t the first layer takes step t and layer l
    step t - l, which needs only what earlier waves made, so one batched op serves every
    layer (see _waves).

    forward(inputs (steps, g, hidden), anchor_steps, mixes {step: (g, k)}, w_prev,
    *weights (w_ih, w_hh, b_ih, b_hh per layer, every layer hidden -> hidden)) -> the top
    layer's h at every step. The input at a step in `mixes` is its row of `inputs` plus
    the mix of earlier keys."""

    @staticmethod
    def forward(ctx, inputs, anchor_steps, mixes, w_prev, *weights):  # type: ignore[override]
        steps, g, hidden = inputs.shape
        layers = len(weights) // 4
        # Layer l's gates = [its input, its previous h] @ w[l] + b[l].
        w = torch.stack([torch.cat(weights[i : i + 2], dim=1).t() for i in range(0, len(weights), 4)])
        b = torch.stack([weights[i + 2] + weights[i + 3] for i in range(0, len(weights), 4)]).unsqueeze(1)
        waves = _waves(steps, layers, anchor_steps)
        anchor_at = {s: k for k, s in enumerate(anchor_steps)}
        keys = inputs.new_zeros(g, len(anchor_steps), hidden)  # W_prev·h at anchor k
        h = c = inputs.new_zeros(layers, g, hidden)
        blank = inputs.new_zeros(1, g, hidden)
        layer_inputs, all_gates, cell_states, states = [], [], [c], []
        rows = inputs.unsqueeze(1).unbind(0)  # (1, g, hidden) each
        for t, active in waves:
            x = rows[t] if t < steps else blank
            mix = mixes.get(t)
            if mix is not None and (active is None or active[0]):
                x = x + torch.bmm(mix.unsqueeze(1), keys[:, : mix.shape[1]]).transpose(0, 1)
            z = torch.cat([torch.cat([x, h[:-1]]), h], dim=2)
            gates = torch.baddbmm(b, z, w)
            i, f, _, o = torch.sigmoid(gates).chunk(4, dim=2)
            c_new = torch.addcmul(f * c, i, torch.tanh(gates[..., 2 * hidden : 3 * hidden]))
            h_new = o * torch.tanh(c_new)
            if active is None:
                h, c = h_new, c_new
            else:  # a layer outside its steps keeps its state
                h, c = torch.where(active, h_new, h), torch.where(active, c_new, c)
            layer_inputs.append(z)
            all_gates.append(gates)
            cell_states.append(c)
            states.append(h)
            top = t - layers + 1  # the top layer's step
            if top in anchor_at and (active is None or active[-1]):
                keys[:, anchor_at[top]] = torch.mm(h[-1], w_prev.t())
        top_waves = [n for n, (_, active) in enumerate(waves) if active is None or active[-1]]
        out = torch.stack(states)[torch.tensor(top_waves), -1]  # in step order
        ctx.waves, ctx.mixes, ctx.anchor_steps = waves, mixes, anchor_steps
        ctx.save_for_backward(torch.stack(layer_inputs), torch.stack(all_gates), torch.stack(cell_states), out, w, w_prev)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        layer_inputs, gates, cell_states, out, w, w_prev = ctx.saved_tensors
        waves, mixes, anchor_steps = ctx.waves, ctx.mixes, ctx.anchor_steps
        count, (n_waves, layers, g, four) = len(anchor_steps), gates.shape
        steps, hidden = grad_out.shape[0], four // 4
        anchor_at = {s: k for k, s in enumerate(anchor_steps)}
        # Per wave, all at once: ∂(pre-activations)/∂(dc, dc, dc, dh), ∂c/∂h, and f.
        i, f, _, o = torch.sigmoid(gates).chunk(4, dim=3)
        cell_input = torch.tanh(gates[..., 2 * hidden : 3 * hidden])
        c_prev, tanh_c = cell_states[:-1], torch.tanh(cell_states[1:])
        scales = torch.cat(
            [cell_input * i * (1 - i), c_prev * f * (1 - f), i * (1 - cell_input**2), tanh_c * o * (1 - o)], dim=3
        ).unbind(0)
        cell_grads, forgets = (o * (1 - tanh_c**2)).unbind(0), f.unbind(0)
        d_gates = torch.empty_like(gates)
        d_gates_at = d_gates.unbind(0)
        w_t = w.transpose(1, 2)
        d_keys = grad_out.new_zeros(g, count, hidden)
        d_first_inputs = {}  # step -> gradient of the first layer's input there
        zero = grad_out.new_zeros(1, g, hidden)
        grad_rows = grad_out.unsqueeze(1).unbind(0)  # (1, g, hidden) each

        def d_top(n: int) -> torch.Tensor:
            """Gradient of the top layer's h made in wave n (zero when it made none)."""
            t, active = waves[n]
            if active is not None and not active[-1]:
                return zero
            top = t - layers + 1
            if top in anchor_at:  # its key fed later inputs
                return grad_rows[top] + torch.mm(d_keys[:, anchor_at[top]], w_prev)
            return grad_rows[top]

        # dh, dc: gradients of the states after the wave at hand (as later waves read them).
        dh = torch.cat([zero.expand(layers - 1, g, hidden), d_top(n_waves - 1)])
        dc = grad_out.new_zeros(layers, g, hidden)
        for n in reversed(range(n_waves)):
            t, active = waves[n]
            d_c = torch.addcmul(dc, dh, cell_grads[n])
            d_gate = torch.mul(torch.cat([d_c, d_c, d_c, dh], dim=2), scales[n], out=d_gates_at[n])
            if active is not None:
                d_gate.mul_(active)  # a layer outside its steps did nothing
            d_z = torch.bmm(d_gate, w_t)  # [d input, d previous h] of each layer
            d_input, dh_prev, dc_prev = d_z[..., :hidden], d_z[..., hidden:], d_c * forgets[n]
            if active is not None:  # its state passed through
                dh_prev, dc_prev = torch.where(active, dh_prev, dh), torch.where(active, dc_prev, dc)
            if active is None or active[0]:
                d_first_inputs[t] = d_input[0]
                mix = mixes.get(t)
                if mix is not None:
                    d_keys[:, : mix.shape[1]] += mix.unsqueeze(2) * d_input[0].unsqueeze(1)
            if n:
                # The state after wave n - 1 fed this wave's own layer and the layer above
                # it; the top layer's also was an output.
                dh = dh_prev + torch.cat([d_input[1:], d_top(n - 1)])
                dc = dc_prev
        # Weights: Σ over waves of [input, previous h]ᵀ · d gates, one batched product.
        flat_inputs = layer_inputs.permute(1, 3, 0, 2).reshape(layers, 2 * hidden, n_waves * g)
        d_w = torch.bmm(flat_inputs, d_gates.transpose(0, 1).reshape(layers, n_waves * g, four))
        d_b = d_gates.sum((0, 2))
        grads = []
        for layer in range(layers):
            d_w_ih, d_w_hh = d_w[layer].t().split(hidden, dim=1)
            grads += [d_w_ih, d_w_hh, d_b[layer], d_b[layer]]
        d_inputs = torch.stack([d_first_inputs[t] for t in range(steps)])
        anchor_states = out[torch.tensor(anchor_steps)].reshape(-1, hidden)
        d_w_prev = d_keys.transpose(0, 1).reshape(-1, hidden).t() @ anchor_states
        return d_inputs, None, None, d_w_prev, *grads


def _waves(steps: int, layers: int, anchor_steps: Sequence[int]) -> list[tuple[int, torch.Tensor | None]]:
    """The schedule of _TeacherForcedLSTM: (t, active) per wave, where the first layer
    takes step t and layer l step t - l; `active` is None when every layer has a step,
    else a (layers, 1, 1) mask. Layer l reads layer l - 1 and itself one step back, both
    made by the wave before. The input after anchor k reads the top layer's state at
    anchor k - 1, made in wave s(k-1) + layers - 1: when that comes too late (only with
    deep LSTMs and anchors close together), the waves drain and start over there."""
    starts = [0]
    for previous, anchor in zip(anchor_steps, anchor_steps[1:]):
        after = anchor + 1
        if after < steps and previous >= starts[-1] and previous + layers - 1 >= after:
            starts.append(after)
    waves = []
    for start, stop in zip(starts, [*starts[1:], steps]):
        for t in range(start, stop + layers - 1):
            active = [start <= t - layer < stop for layer in range(layers)]
            waves.append((t, None if all(active) else torch.tensor(active).view(layers, 1, 1)))
    return waves


def _signature(decision: Decision) -> tuple:
    return ("choice", decision.head) if isinstance(decision, Choice) else ("anchor", decision.layer)


def _recording_key(space: Space, trial_index: int, actions: Sequence[Action]) -> tuple:
    return space, space.program_key(trial_index), tuple(tuple(a) if isinstance(a, (list, tuple)) else a for a in actions)


_FORBIDDEN: dict[tuple, torch.Tensor] = {}


def _forbidden(masks: tuple[tuple[bool, ...] | None, ...], size: int) -> torch.Tensor:
    """The masked-out options of a batch of decisions, (decisions, size). Cached, as the
    same few masks come back over and over: never modify the tensor."""
    forbidden = _FORBIDDEN.get((masks, size))
    if forbidden is None:
        if len(_FORBIDDEN) >= 256:
            _FORBIDDEN.clear()
        with torch.inference_mode(False):  # a normal tensor: scoring saves it for backward
            forbidden = ~torch.tensor([mask if mask is not None else (True,) * size for mask in masks])
        _FORBIDDEN[(masks, size)] = forbidden
    return forbidden


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
    return [_signature(d) for d in decisions], decisions


def _compatible_groups(signatures: Sequence[list[tuple]]) -> list[list[int]]:
    """Children grouped so that within a group every signature is a prefix of the
    longest (e.g. MacroCNN children of several depths): one teacher-forced pass each."""
    groups: list[tuple[list[tuple], list[int]]] = []
    for i in sorted(range(len(signatures)), key=lambda i: -len(signatures[i])):
        for template, members in groups:
            if template is signatures[i] or template[: len(signatures[i])] == signatures[i]:
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
        return sampler_state(self)

    def load_state_dict(self, state: dict) -> None:
        load_sampler_state(self, state)


def sampler_state(controller: RandomController | EvolutionController) -> dict:
    """The checkpoint of a strategy without a policy: its RNG, baseline and version."""
    return {"strategy": controller.strategy, "generator": controller.generator.get_state(),
            "baseline": controller.baseline, "version": controller.version}


def load_sampler_state(controller: RandomController | EvolutionController, state: dict) -> None:
    _check_strategy(state, controller.strategy)
    controller.generator.set_state(state["generator"])
    controller.baseline = state["baseline"]
    controller.version = state["version"]


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
