"""Adam for the controller, without `torch.optim`.

Why not `torch.optim.Adam`: every `torch.optim.Optimizer` method is wrapped in
`torch._disable_dynamo`, whose first call imports `torch._dynamo` (about 1.5 s and
100 MiB, half of `kubenas search`'s run time on a 500-child table search). This is the
same update (Kingma & Ba 2015, as `torch.optim.Adam` computes it with its defaults: no
weight decay, no AMSGrad), and its `state_dict` has `torch.optim`'s layout, so
checkpoints written with `torch.optim.Adam` load and the other way round;
`tests/test_adam.py` holds the two to the same parameters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class Adam:
    def __init__(
        self, params: Iterable[torch.nn.Parameter], *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr = lr
        self.betas = betas
        self.eps = eps
        # Per parameter index: step (float), first and second moment; absent until its first gradient.
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for index, param in enumerate(self.params):
            if param.grad is None:
                continue
            grad = param.grad
            state = self.state.get(index)
            if state is None:
                state = self.state[index] = {
                    "step": torch.tensor(0.0),
                    "exp_avg": torch.zeros_like(param),
                    "exp_avg_sq": torch.zeros_like(param),
                }
            state["step"] += 1
            step = float(state["step"])
            state["exp_avg"].lerp_(grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = self.lr / (1 - beta1**step)
            denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**step)).add_(self.eps)
            param.addcdiv_(state["exp_avg"], denom, value=-step_size)

    def state_dict(self) -> dict:
        """`torch.optim.Adam.state_dict()`'s layout (the tensors are copies)."""
        return {
            "state": {index: {key: value.clone() for key, value in state.items()} for index, state in self.state.items()},
            "param_groups": [{
                "lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": 0, "amsgrad": False,
                "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
                "fused": None, "decoupled_weight_decay": False, "params": list(range(len(self.params))),
            }],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        (group,) = state_dict["param_groups"]
        if len(group["params"]) != len(self.params):
            raise ValueError(f"optimizer state holds {len(group['params'])} parameters, the policy has {len(self.params)}")
        if group.get("weight_decay", 0) or group.get("amsgrad") or group.get("maximize"):
            raise ValueError("optimizer state uses Adam options the controller does not (weight decay, AMSGrad, maximize)")
        self.lr, self.eps = group["lr"], group["eps"]
        self.betas = tuple(group["betas"])
        position = {saved: index for index, saved in enumerate(group["params"])}
        self.state = {}
        for saved, state in state_dict["state"].items():
            index = position[saved]
            param = self.params[index]
            self.state[index] = {
                "step": torch.as_tensor(state["step"], dtype=torch.float32).clone(),
                "exp_avg": state["exp_avg"].to(param).clone(),
                "exp_avg_sq": state["exp_avg_sq"].to(param).clone(),
            }
