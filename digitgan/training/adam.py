"""Adam (Kingma & Ba 2015), the optimizer of both networks, as a few foreach operators over all of a network's
tensors, without torch.optim.

torch.optim imports Dynamo on an optimizer's first use, a third of a short training process's time on a CPU (a
4-step run took 6.33 s with it, 4.07 s with this: bench/results/startup.txt). This is the one optimizer training
needs and nothing more.
Its state_dict has torch.optim.Adam's layout, so a checkpoint made with either loads into either, and its steps
are torch.optim.Adam(foreach=True)'s bit for bit (tests/test_training.py).

Nothing in a step reads the device back: each tensor's step count is a Python int (how many steps it took), its
bias corrections and the learning rate are worked out from it on the host in double precision, as torch.optim
does, and written into one device tensor (`scales`, one copy a step) that the foreach operators read. A captured
CUDA graph of the arithmetic (arithmetic()) would replay with the scales written before each replay (prepare()).
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
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}  # the moments, on the parameter's device
        self.steps: dict[torch.Tensor, int] = {}  # how many steps each parameter has taken
        params_ = self.param_groups[0]["params"]
        device = params_[0].device if params_ else torch.device("cpu")
        # per parameter: 1 / the root of v's bias correction, and -lr / m's bias correction (float32, as the
        # foreach operators turn a Python scalar into one)
        self.scales = torch.zeros(2, len(params_), device=device)
        self._rows = (list(self.scales[0].unbind()), list(self.scales[1].unbind()))  # made once: views that stay
        # written through numpy (no operator), then copied to the device in one (on the CPU: the scales themselves)
        self._staging = self.scales if device.type == "cpu" else torch.zeros(2, len(params_))
        self._values = self._staging.numpy()  # made once: Tensor.numpy() is an operator

    def zero_grad(self) -> None:
        """Drops the gradients (the next backward writes fresh ones instead of adding to zeros)."""
        for p in self.param_groups[0]["params"]:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        taking = self.prepare()
        if taking:
            self.arithmetic(taking)

    def prepare(self) -> list[int]:
        """The indices of the parameters that take this step (those with a gradient), their counts advanced, their
        moments made on their first step, and this step's scales written to the device."""
        group = self.param_groups[0]
        lr, (beta1, beta2) = group["lr"], group["betas"]
        taking = [i for i, p in enumerate(group["params"]) if p.grad is not None]
        values = [[0.0] * len(group["params"]), [0.0] * len(group["params"])]
        for i in taking:
            p = group["params"][i]
            if p not in self.state:
                m, v = (torch.zeros_like(p, memory_format=torch.preserve_format) for _ in range(2))
                self.state[p], self.steps[p] = dict(exp_avg=m, exp_avg_sq=v), 0
            self.steps[p] += 1
            t = self.steps[p]
            # p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), in torch.optim's order
            values[0][i], values[1][i] = (1 - beta2**t) ** 0.5, -lr / (1 - beta1**t)
        if taking:
            self._values[:] = values  # float64 to float32 as a foreach operator rounds a Python scalar
            if self._staging is not self.scales:  # from pageable memory: the host may write it again at once
                self.scales.copy_(self._staging, non_blocking=True)
        return taking

    @torch.no_grad()
    def arithmetic(self, taking: list[int]) -> None:
        """The update of the parameters at these indices, from their gradients and the scales on the device."""
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        params = [group["params"][i] for i in taking]
        grads = [p.grad for p in params]
        avg, avg_sq = [self.state[p]["exp_avg"] for p in params], [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_lerp_(avg, grads, 1 - beta1)  # the first moment
        torch._foreach_mul_(avg_sq, beta2)  # the second
        torch._foreach_addcmul_(avg_sq, grads, grads, 1 - beta2)
        denom = torch._foreach_sqrt(avg_sq)
        torch._foreach_div_(denom, [self._rows[0][i] for i in taking])
        torch._foreach_add_(denom, group["eps"])
        change = torch._foreach_mul(avg, [self._rows[1][i] for i in taking])  # addcdiv's (value * m) / denom
        torch._foreach_div_(change, denom)
        torch._foreach_add_(params, change)

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.Adam's layout: parameters by their index in the group, each step count a float tensor."""
        group = self.param_groups[0]
        params = group["params"]
        return {
            "state": {
                i: {"step": torch.tensor(float(self.steps[p])), **self.state[p]}
                for i, p in enumerate(params)
                if p in self.state
            },
            "param_groups": [{**{k: v for k, v in group.items() if k != "params"}, "params": list(range(len(params)))}],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A state_dict of this class or of torch.optim.Adam for the same parameters (moments on the parameter's
        device and in its dtype)."""
        (saved,) = state_dict["param_groups"]
        params = self.param_groups[0]["params"]
        if len(saved["params"]) != len(params):
            raise ValueError(f"the saved optimizer holds {len(saved['params'])} tensors, this one {len(params)}")
        self.param_groups[0].update(lr=saved["lr"], betas=tuple(saved["betas"]), eps=saved["eps"])
        self.state, self.steps = {}, {}
        for i, p in zip(saved["params"], params):
            if i in state_dict["state"]:
                s = state_dict["state"][i]
                self.state[p] = dict(
                    exp_avg=s["exp_avg"].to(p.device, p.dtype), exp_avg_sq=s["exp_avg_sq"].to(p.device, p.dtype)
                )
                self.steps[p] = round(float(s["step"]))
