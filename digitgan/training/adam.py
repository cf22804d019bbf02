"""Adam (Kingma & Ba 2015), the optimizer of both networks, as a few foreach operators over all of a network's
tensors, without torch.optim.

torch.optim imports Dynamo on an optimizer's first use, a third of a short training process's time on a CPU (a
4-step run took 6.33 s with it, 4.07 s with this: bench/results/startup.txt). This is the one optimizer training
needs and nothing more.
Its state_dict has torch.optim.Adam's layout, so a checkpoint made with either loads into either, and its steps
are torch.optim.Adam(foreach=True)'s bit for bit (tests/test_training.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

# torch.optim.Adam's group keys: a saved group has them all, whichever of the two wrote it
_GROUP = dict(
    weight_decay=0.0,
    amsgrad=False,
    maximize=False,
    foreach=True,
    capturable=False,
    differentiable=False,
    fused=None,
    decoupled_weight_decay=False,
)


class Adam:
    """Adam over one group of parameters: lr and betas are read from param_groups[0] at each step (the loop sets
    them from the schedule); a parameter without a gradient is left as it is, its state untouched."""

    def __init__(
        self, params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float], eps: float = 1e-8
    ) -> None:
        self.param_groups: list[dict[str, Any]] = [dict(params=list(params), lr=lr, betas=betas, eps=eps, **_GROUP)]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        """Drops the gradients (the next backward writes fresh ones instead of adding to zeros)."""
        for p in self.param_groups[0]["params"]:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for p in params:
            if p not in self.state:  # the step count on the CPU: reading it for the bias correction costs no sync
                m, v = (torch.zeros_like(p, memory_format=torch.preserve_format) for _ in range(2))
                self.state[p] = dict(step=torch.tensor(0.0), exp_avg=m, exp_avg_sq=v)
        states = [self.state[p] for p in params]
        steps, grads = [s["step"] for s in states], [p.grad for p in params]
        avg, avg_sq = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        torch._foreach_add_(steps, 1.0)
        torch._foreach_lerp_(avg, grads, 1 - beta1)  # the first moment
        torch._foreach_mul_(avg_sq, beta2)  # the second
        torch._foreach_addcmul_(avg_sq, grads, grads, 1 - beta2)
        counts = torch.stack(steps).tolist()  # one read of all the counts, not one a tensor
        # p -= lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps), v's correction applied to its root
        denom = torch._foreach_sqrt(avg_sq)
        torch._foreach_div_(denom, [(1 - beta2**t) ** 0.5 for t in counts])
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, avg, denom, [-lr / (1 - beta1**t) for t in counts])

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.Adam's layout: parameters by their index in the group."""
        group = self.param_groups[0]
        params = group["params"]
        return {
            "state": {i: self.state[p] for i, p in enumerate(params) if p in self.state},
            "param_groups": [{**{k: v for k, v in group.items() if k != "params"}, "params": list(range(len(params)))}],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A state_dict of this class or of torch.optim.Adam for the same parameters (moments on the parameter's
        device and in its dtype, step counts kept on the CPU)."""
        (saved,) = state_dict["param_groups"]
        params = self.param_groups[0]["params"]
        if len(saved["params"]) != len(params):
            raise ValueError(f"the saved optimizer holds {len(saved['params'])} tensors, this one {len(params)}")
        self.param_groups[0].update(lr=saved["lr"], betas=tuple(saved["betas"]), eps=saved["eps"])
        self.state = {}
        for i, p in zip(saved["params"], params):
            if i in state_dict["state"]:
                s = state_dict["state"][i]
                self.state[p] = dict(
                    step=s["step"].float().cpu(),
                    exp_avg=s["exp_avg"].to(p.device, p.dtype),
                    exp_avg_sq=s["exp_avg_sq"].to(p.device, p.dtype),
                )
