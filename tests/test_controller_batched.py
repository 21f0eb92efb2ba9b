"""The batched policy paths (one lockstep sampling pass, one teacher-forced scoring
pass for a whole batch) against the per-child reference `PolicyNetwork.walk`: the same
log-probs, entropies and gradients, on sampled children of every space."""

import math

import pytest
import torch

from kubenas import spaces
from kubenas.controller import Experience, ReinforceController
from kubenas.search import Search
from tests.helpers import nb201_spec, search_spec, succeeded

SMALL_IMAGE = {"imageSize": [8, 8], "minFeatureSize": 3}  # strides get masked often

SPACES = {
    "nb201": {"type": "NB201Cell"},
    "macro-anchors": {"macroCNN": {"depth": {"initialLayers": 5}}},
    "macro-anchors-strides": {"macroCNN": {"depth": {"initialLayers": 6}, "strides": {"enabled": True}, **SMALL_IMAGE}},
    "macro-chain-strides": {
        "macroCNN": {"depth": {"initialLayers": 6}, "skipConnections": False, "strides": {"enabled": True}, **SMALL_IMAGE}
    },
    # trial indices 0..11 span depths 2, 3, 4, 5 within one batch
    "macro-depth-changes": {
        "macroCNN": {
            "depth": {"initialLayers": 2, "increment": 1, "everyTrials": 3, "maxLayers": 5},
            "strides": {"enabled": True},
            **SMALL_IMAGE,
        }
    },
}


def controller_for(name: str, seed: int = 0) -> ReinforceController:
    spec = search_spec(searchSpace=SPACES[name], controller={"initRange": 0.5})  # far from uniform
    return ReinforceController(space=spaces.build_space(spec.search_space), config=spec.controller, seed=seed)


def reference(controller, trial_indices, actions):
    """Per-child walk: log-probs and entropies, one child at a time."""
    scored = [
        controller.policy.walk(controller.space, trial_index=t, actions=a)[2:] for t, a in zip(trial_indices, actions)
    ]
    return torch.stack([s[0] for s in scored]), torch.stack([s[1] for s in scored])


def gradients(controller, loss):
    params = list(controller.policy.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


@pytest.mark.parametrize("name", list(SPACES))
def test_batched_sampling_and_scoring_match_the_per_child_walk(name: str) -> None:
    controller = controller_for(name, seed=3)
    space = controller.space
    indices = list(range(12))
    generator = torch.Generator().manual_seed(5)
    drawn = controller.policy.sample_batch(space, indices, generator=generator)
    actions = [a for a, _, _ in drawn]
    if name == "macro-depth-changes":
        assert sorted({len(a["layers"]) for _, a, _ in drawn}) == [2, 3, 4, 5]
    if "strides" in name or name == "macro-depth-changes":  # masks were in play
        assert any(layer["strideHeight"] == 1 for _, a, _ in drawn for layer in a["layers"][1:])
    ref_log_prob, ref_entropy = reference(controller, indices, actions)
    for t, (taken, architecture, log_prob) in enumerate(drawn):
        assert space.decode(taken, trial_index=t) == architecture  # masks respected, same architecture
        assert log_prob == pytest.approx(ref_log_prob[t].item(), abs=1e-5)

    log_prob, entropy = controller.policy.score_batch(space, indices, actions)
    torch.testing.assert_close(log_prob, ref_log_prob, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, ref_entropy, atol=1e-5, rtol=0)

    # The gradient of a REINFORCE loss with an entropy bonus, arbitrary weights per child.
    weights = torch.linspace(-1.0, 1.5, len(indices))
    bonus = torch.linspace(0.3, -0.7, len(indices))
    batched = gradients(controller, (weights * log_prob).sum() + (bonus * entropy).sum())
    expected = gradients(controller, (weights * ref_log_prob).sum() + (bonus * ref_entropy).sum())
    assert any(g.abs().max() > 0 for g in expected)
    for (param_name, _), got, want in zip(controller.policy.named_parameters(), batched, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=lambda m: f"{param_name}: {m}")


@pytest.mark.parametrize("name", ["macro-anchors-strides", "macro-depth-changes"])
def test_scoring_in_any_order_and_grouping_is_the_same(name: str) -> None:
    controller = controller_for(name)
    indices = [7, 0, 11, 3, 3]
    drawn = controller.policy.sample_batch(controller.space, indices, generator=torch.Generator().manual_seed(1))
    actions = [a for a, _, _ in drawn]
    together, _ = controller.policy.score_batch(controller.space, indices, actions)
    alone = torch.cat([controller.policy.score_batch(controller.space, [t], [a])[0] for t, a in zip(indices, actions)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_batched_sampling_follows_the_policy_distribution() -> None:
    controller = controller_for("nb201", seed=1)
    drawn = controller.policy.sample_batch(controller.space, [0] * 4000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = controller.policy.step(controller.policy.start, [(torch.zeros(1, 35), torch.zeros(1, 35))] * 2)
        probabilities = torch.softmax(controller.policy.softmax_heads["operation"](h)[0], dim=-1)
    counts = torch.bincount(torch.tensor([a[0] for a, _, _ in drawn]), minlength=5).float() / 4000
    assert probabilities.max() - probabilities.min() > 0.1  # far from uniform: a real check
    torch.testing.assert_close(counts, probabilities, atol=0.03, rtol=0)


def test_update_matches_the_per_child_reference_update() -> None:
    controller = controller_for("macro-anchors-strides", seed=2)
    twin = controller_for("macro-anchors-strides", seed=2)
    batch = [Experience(t, controller.sample(trial_index=t).actions, reward=0.1 * t) for t in range(8)]
    stats = controller.update(batch)
    # The reference: the original per-child loss, by walk.
    rewards = [e.reward for e in batch]
    baseline = sum(rewards) / len(rewards)
    log_probs, _ = reference(twin, [e.trial_index for e in batch], [e.actions for e in batch])
    loss = -sum((e.reward - baseline) * lp for e, lp in zip(batch, log_probs)) / len(batch)
    twin.optimizer.zero_grad()
    loss.backward()
    twin.optimizer.step()
    assert stats.loss == pytest.approx(float(loss.detach()), abs=1e-5)
    for got, want in zip(controller.policy.parameters(), twin.policy.parameters()):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)  # Adam magnifies float noise in tiny gradients


def test_children_sampled_ahead_are_dropped_when_the_policy_changes_and_survive_checkpoints() -> None:
    spec = nb201_spec(controller={"batchSize": 4}, maxTrials=40)
    search = Search(spec)
    tickets = [search.ask() for _ in range(2)]  # 2 of the 4 children sampled ahead are handed out
    restored = Search.restore(spec, search.to_bytes())
    more = [search.ask() for _ in range(2)]
    assert [restored.ask() for _ in range(2)] == more  # the other 2 came back from the checkpoint
    fifth = search.ask()  # the 5th child: a new batch of 4 sampled ahead under version 0
    for ticket in tickets + more:
        search.tell(ticket.index, succeeded(0.5))
    assert search.controller.version == 1  # the policy changed: the 3 children left are dropped
    sixth = search.ask()
    assert (fifth.policy_version, sixth.policy_version) == (0, 1)
    assert search.controller._ready_version == 1 and len(search.controller._ready[None]) == 3


def test_old_checkpoints_without_children_sampled_ahead_still_load() -> None:
    controller = controller_for("nb201")
    state = controller.state_dict()
    for key in ("sampler", "ready", "ready_version"):
        del state[key]
    twin = controller_for("nb201", seed=9)
    twin.load_state_dict(state)
    assert twin.sample(trial_index=0) == controller.sample(trial_index=0)
    state["sampler"] = 99
    with pytest.raises(ValueError, match="sampler format 99"):
        twin.load_state_dict(state)


def test_log_prob_of_a_sample_is_finite_with_masks() -> None:
    controller = controller_for("macro-depth-changes")
    for t in range(12):
        assert math.isfinite(controller.sample(trial_index=t).log_prob)


@pytest.mark.parametrize("lstm_layers", [1, 3, 7])
def test_scoring_matches_the_walk_with_other_lstm_depths(lstm_layers: int) -> None:
    # The teacher-forced LSTM runs all layers in waves; 7 layers with anchors 4 steps
    # apart must drain and restart the waves (an input after an anchor would otherwise
    # read an earlier anchor's top state before it is made).
    spec = search_spec(
        searchSpace={"macroCNN": {"depth": {"initialLayers": 4, "increment": 1, "everyTrials": 3, "maxLayers": 6}}},
        controller={"initRange": 0.5, "lstmLayers": lstm_layers},
    )
    controller = ReinforceController(space=spaces.build_space(spec.search_space), config=spec.controller, seed=4)
    indices = list(range(8))
    drawn = controller.policy.sample_batch(controller.space, indices, generator=torch.Generator().manual_seed(2))
    actions = [a for a, _, _ in drawn]
    ref_log_prob, ref_entropy = reference(controller, indices, actions)
    log_prob, entropy = controller.policy.score_batch(controller.space, indices, actions)
    torch.testing.assert_close(log_prob, ref_log_prob, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, ref_entropy, atol=1e-5, rtol=0)
    weights = torch.linspace(-1.0, 1.5, len(indices))
    batched = gradients(controller, (weights * log_prob).sum() + 0.3 * entropy.sum())
    expected = gradients(controller, (weights * ref_log_prob).sum() + 0.3 * ref_entropy.sum())
    for (param_name, _), got, want in zip(controller.policy.named_parameters(), batched, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=lambda m: f"{param_name}: {m}")
