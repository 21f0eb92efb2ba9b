import math

import pytest
import torch

from kubenas import spaces
from kubenas.controller import Experience, RandomController, ReinforceController, from_bytes, to_bytes
from tests.helpers import nb201_spec, search_spec


def reinforce(spec, seed=0):
    return ReinforceController(space=spaces.build_space(spec.search_space), config=spec.controller, seed=seed)


def lstm_by_hand(cell: torch.nn.LSTMCell, x, h, c):
    gates = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def log_prob_by_hand(controller: ReinforceController, space, actions) -> float:
    """Walk the recorded decisions with explicit LSTM, softmax and sigmoid arithmetic."""
    policy = controller.policy
    hidden = policy.hidden
    states = [(torch.zeros(1, hidden), torch.zeros(1, hidden)) for _ in policy.cells]
    x = policy.start
    anchors = []  # h of each anchor step
    total = 0.0
    program = space.decisions(trial_index=0)
    decision = next(program)
    with torch.no_grad():
        for action in actions:
            for layer, cell in enumerate(policy.cells):
                states[layer] = lstm_by_hand(cell, x, *states[layer])
                x = states[layer][0]
            h = x
            if isinstance(decision, spaces.Choice):
                head = policy.softmax_heads[decision.head]
                logits = (h @ head.weight.T + head.bias)[0]
                total += float(logits[action] - torch.log(torch.exp(logits).sum()))
                x = policy.embeddings[decision.head].weight[action].unsqueeze(0)
            else:
                keys = []
                for j, bit in enumerate(action):
                    key = anchors[j] @ policy.w_prev.weight.T
                    keys.append(key)
                    score = float(torch.tanh(key + h @ policy.w_curr.weight.T) @ policy.v.weight[0])
                    p = 1 / (1 + math.exp(-score))
                    total += math.log(p if bit else 1 - p)
                chosen = [k for k, bit in zip(keys, action) if bit]
                x = sum(chosen, torch.zeros(1, hidden)) / (1 + len(chosen))
                anchors.append(h)
            try:
                decision = program.send(action)
            except StopIteration:
                pass
    return total


@pytest.mark.parametrize("space_type", ["NB201Cell", "MacroCNN"])
def test_log_prob_is_the_sum_of_the_sampled_actions_log_softmaxes(space_type: str) -> None:
    spec = search_spec(
        searchSpace={"type": space_type, "macroCNN": {"depth": {"initialLayers": 4}, "strides": {"enabled": True}}},
        controller={"initRange": 0.5},  # larger weights: far from uniform, a stronger check
    )
    controller = reinforce(spec, seed=3)
    space = controller.space
    for index in range(3):
        sample = controller.sample(trial_index=0)
        expected = log_prob_by_hand(controller, space, sample.actions)
        assert sample.log_prob == pytest.approx(expected, abs=1e-5)
        scored = controller.score(trial_index=0, actions=sample.actions)
        assert scored.log_prob.item() == pytest.approx(expected, abs=1e-5)
        assert scored.log_prob.requires_grad


def test_initial_weights_are_uniform_in_init_range() -> None:
    controller = reinforce(search_spec())
    values = torch.cat([p.detach().flatten() for p in controller.policy.parameters()])
    assert values.abs().max() <= 0.08 and values.abs().max() > 0.07
    assert len(controller.policy.cells) == 2 and controller.policy.cells[0].hidden_size == 35


def test_reinforce_learns_a_toy_reward_on_nb201() -> None:
    spec = nb201_spec(controller={"learningRate": 0.05})
    controller = reinforce(spec, seed=1)
    target = controller.space.config.operations.index("nor_conv_3x3")

    def mean_probability_of_target() -> float:  # geometric mean over the 6 decisions
        with torch.no_grad():
            return math.exp(float(controller.score(trial_index=0, actions=[target] * 6).log_prob) / 6)

    assert mean_probability_of_target() == pytest.approx(0.2, abs=0.02)  # uniform at first
    rewards = []
    for _ in range(50):
        batch = []
        for _ in range(8):
            sample = controller.sample(trial_index=0)
            reward = sum(a == target for a in sample.actions) / len(sample.actions)
            batch.append(Experience(trial_index=0, actions=sample.actions, reward=reward))
            rewards.append(reward)
        controller.update(batch)
    assert sum(rewards[-40:]) / 40 > 0.8
    assert mean_probability_of_target() > 0.8


def test_reinforce_learns_filters_and_skip_connections() -> None:
    spec = search_spec(searchSpace={"macroCNN": {"depth": {"initialLayers": 3}}}, controller={"learningRate": 0.05})
    controller = reinforce(spec, seed=2)
    three = controller.space.config.filter_heights.index(3)

    def score(actions):
        architecture = controller.space.decode(actions, trial_index=0)
        layers = architecture["layers"]
        heights = sum(layer["filterHeight"] == 3 for layer in layers) / len(layers)
        bits = [bit for action in actions if isinstance(action, list) for bit in action]
        return heights, sum(bits) / len(bits)

    history = []
    for _ in range(60):
        batch = []
        for _ in range(8):
            sample = controller.sample(trial_index=0)
            heights, links = score(sample.actions)
            history.append((heights, links))
            batch.append(Experience(trial_index=0, actions=sample.actions, reward=(heights + links) / 2))
        controller.update(batch)
    last = history[-40:]
    assert sum(h for h, _ in last) / len(last) > 0.6  # 1/4 at random
    assert sum(k for _, k in last) / len(last) > 0.75  # 1/2 at random
    assert three == 1


def test_update_uses_ema_baseline_and_counts_versions() -> None:
    spec = nb201_spec(controller={"baselineDecay": 0.5})
    controller = reinforce(spec)
    def batch(reward):
        return [Experience(0, controller.sample(trial_index=0).actions, reward) for _ in range(2)]
    first = controller.update(batch(1.0))
    assert first.advantage_baseline == 1.0 and first.baseline == 1.0 and first.version == 1
    second = controller.update(batch(0.0))
    assert second.advantage_baseline == 1.0 and second.baseline == pytest.approx(0.25) and second.version == 2
    assert second.loss != 0.0 and second.grad_norm > 0


def test_same_seed_same_children_and_state_round_trip() -> None:
    spec = search_spec(searchSpace={"macroCNN": {"strides": {"enabled": True}}})
    a, b = reinforce(spec, seed=7), reinforce(spec, seed=7)
    assert [a.sample(trial_index=0).actions for _ in range(3)] == [b.sample(trial_index=0).actions for _ in range(3)]
    assert a.sample(trial_index=0).actions != reinforce(spec, seed=8).sample(trial_index=0).actions
    a.update([Experience(0, a.sample(trial_index=0).actions, 0.5), Experience(0, a.sample(trial_index=0).actions, 0.9)])
    restored = reinforce(spec, seed=99)
    restored.load_state_dict(from_bytes(to_bytes(a.state_dict())))
    assert restored.baseline == a.baseline and restored.version == a.version
    for _ in range(3):
        assert restored.sample(trial_index=0) == a.sample(trial_index=0)


def test_random_controller_is_uniform_and_respects_masks() -> None:
    spec = search_spec(
        controller={"strategy": "random"},
        searchSpace={"macroCNN": {"strides": {"enabled": True}, "imageSize": [8, 8], "minFeatureSize": 3}},
    )
    space = spaces.build_space(spec.search_space)
    controller = RandomController(space=space, config=spec.controller, seed=0)
    heights = []
    for _ in range(300):
        sample = controller.sample(trial_index=0)
        assert space.decode(sample.actions, trial_index=0) == sample.architecture
        size = {}
        for i, layer in enumerate(sample.architecture["layers"]):
            in_h = max((size[j][0] for j in layer["inputs"]), default=8)
            in_w = max((size[j][1] for j in layer["inputs"]), default=8)
            size[i] = (math.ceil(in_h / layer["strideHeight"]), math.ceil(in_w / layer["strideWidth"]))
            assert min(size[i]) >= 3
            heights.append(layer["filterHeight"])
    for value in (1, 3, 5, 7):
        assert 0.2 < heights.count(value) / len(heights) < 0.3
    with pytest.raises(ValueError, match="'random' controller"):
        reinforce(spec).load_state_dict(controller.state_dict())
