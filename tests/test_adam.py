"""The controller's Adam against torch.optim.Adam: same parameters step after step, and
state dicts that load into each other."""

from __future__ import annotations

import torch

from kubenas.adam import Adam


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.LSTM(4, 8, num_layers=2)
    model.unused = torch.nn.Parameter(torch.ones(3))  # never gets a gradient, like an unused anchor head
    return model


def _loss(model: torch.nn.Module, step: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(step)
    out, _ = model(torch.randn(5, 2, 4, generator=generator))
    return (out**2).sum() * (step + 1)


def _train(model, optimizer, steps: range) -> None:
    for step in steps:
        optimizer.zero_grad()
        _loss(model, step).backward()
        optimizer.step()


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


def test_matches_torch_adam_step_for_step():
    ours, reference = _model(0), _model(0)
    _train(ours, Adam(ours.parameters(), lr=0.05), range(20))
    _train(reference, torch.optim.Adam(reference.parameters(), lr=0.05), range(20))
    _assert_same(ours, reference)
    assert torch.equal(ours.unused, torch.ones(3))
    assert not torch.equal(ours.weight_ih_l0, _model(0).weight_ih_l0)


def test_state_dicts_load_both_ways():
    reference = _model(1)
    torch_adam = torch.optim.Adam(reference.parameters(), lr=0.01)
    _train(reference, torch_adam, range(5))

    resumed = _model(1)
    resumed.load_state_dict(reference.state_dict())
    ours = Adam(resumed.parameters(), lr=0.01)
    ours.load_state_dict(torch_adam.state_dict())
    _train(reference, torch_adam, range(5, 10))
    _train(resumed, ours, range(5, 10))
    _assert_same(resumed, reference)

    back = _model(1)
    back.load_state_dict(resumed.state_dict())
    torch_again = torch.optim.Adam(back.parameters(), lr=0.01)
    torch_again.load_state_dict(ours.state_dict())
    _train(back, torch_again, range(10, 13))
    _train(resumed, ours, range(10, 13))
    _assert_same(back, resumed)


def test_refuses_state_of_another_shape():
    model = _model(2)
    state = Adam(model.parameters(), lr=0.01).state_dict()
    state["param_groups"][0]["params"] = [0, 1]
    try:
        Adam(model.parameters(), lr=0.01).load_state_dict(state)
    except ValueError as error:
        assert "2 parameters" in str(error)
    else:
        raise AssertionError("a state dict for 2 parameters loaded into 9")
