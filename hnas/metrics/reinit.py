"""Re-initialised networks for the proxies that score an architecture at an initialisation of their own
(AZ-NAS, SWAP, Zen): substitutes for the model's tensors (hnas.metrics.engine.substituted), so the model
itself is never modified."""

from __future__ import annotations

import torch
from torch import nn

NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)


def reinitialised(ctx, weight_init):
    """{id(tensor): substitute}: every Conv2d / Linear weight drawn by `weight_init(weight)` (a new tensor of its
    shape, on the inputs' device), their biases 0, every affine BatchNorm / GroupNorm weight 1 and bias 0, the
    other parameters as they are, and clones of the buffers (running statistics stay as they were)."""
    subs = {id(b): b.detach().clone() for _, b in ctx.named_buffers}
    for _, m in ctx.named_modules:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            subs[id(m.weight)] = weight_init(torch.empty(m.weight.shape, device=ctx.device))
            if m.bias is not None:
                subs[id(m.bias)] = torch.zeros_like(m.bias, device=ctx.device)
        elif isinstance(m, NORMS) and m.affine:
            subs[id(m.weight)] = torch.ones_like(m.weight, device=ctx.device)
            subs[id(m.bias)] = torch.zeros_like(m.bias, device=ctx.device)
    for _, p in ctx.named_parameters:
        subs.setdefault(id(p), p.detach().to(ctx.device))
    return subs


def kaiming_normal_fan_in(weight):
    """AZ-NAS's initialisation: Kaiming-normal, fan_in, the ReLU gain."""
    return nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")


def standard_normal(weight):
    """SWAP's and Zen-NAS's network_weight_gaussian_init: N(0, 1)."""
    return nn.init.normal_(weight)
