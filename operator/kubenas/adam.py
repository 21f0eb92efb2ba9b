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
        """One Adam step for every parameter with a gradient, as multi-tensor (foreach)
        ops: a handful of kernel calls for the whole policy instead of a few per tensor."""
        beta1, beta2 = self.betas
        indices = [index for index, param in enumerate(self.params) if param.grad is not None]
        if not indices:
            return
        for index in indices:
            if index not in self.state:
                param = self.params[index]
                self.state[index] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(param),
                                     "exp_avg_sq": torch.zeros_like(param)}
        states = [self.state[index] for index in indices]
        params = [self.params[index] for index in indices]
        grads = [param.grad for param in params]
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        for state in states:
            state["step"] += 1
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        # Parameters get their first gradient together (the whole policy is scored each
        # update), so their step counts agree; grouped by count all the same, to be exact.
        by_step: dict[float, list[int]] = {}
        for position, state in enumerate(states):
            by_step.setdefault(float(state["step"]), []).append(position)
        for step, positions in by_step.items():
            step_size = self.lr / (1 - beta1**step)
            denoms = torch._foreach_sqrt([exp_avg_sqs[k] for k in positions])
            torch._foreach_div_(denoms, math.sqrt(1 - beta2**step))
            torch._foreach_add_(denoms, self.eps)
            torch._foreach_addcdiv_([params[k] for k in positions], [exp_avgs[k] for k in positions], denoms,
                                    value=-step_size)

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
