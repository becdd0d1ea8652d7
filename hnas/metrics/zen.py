"""Zen-score (Lin et al., ICCV 2021; proxies.md), quantity `zen`: its own two forward passes, as the
reference's `compute_zen_score.py` computes one repeat (the setting of its evolutionary search).

The network re-initialised as SWAP's reference does (Conv2d / Linear weights N(0, 1), biases 0, norm weights
1 and biases 0: hnas.metrics.reinit; the model itself untouched), train mode without
gradients; x and e Gaussian of the probe batch's first ZEN_SAMPLES images' shape, and f the input of the
model's last nn.AdaptiveAvgPool2d (the feature map before global pooling). Delta = the mean over images of
sum |f(x) - f(x + 0.01 e)|; Zen = log Delta + sum over BatchNorms of log sqrt(mean(running_var)), the running
variances as the two passes left them (on substituted copies). Seeded with ZEN_SEED.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hnas.errors import HnasError
from hnas.metrics.engine import register_quantity, removing, substituted, training_mode
from hnas.metrics.reinit import reinitialised, standard_normal

ZEN_SAMPLES = 16
ZEN_MIXUP = 1e-2
ZEN_SEED = 0


@register_quantity("zen")
def zen(ctx):
    pools = [m for _, m in ctx.named_modules if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not pools:
        raise HnasError(f"zen reads the feature map before global pooling; {type(ctx.model).__name__} has no "
                        "nn.AdaptiveAvgPool2d")
    torch.manual_seed(ZEN_SEED)  # compute_metrics forks the generators: the caller's stay as they were
    subs = reinitialised(ctx, standard_normal)
    shape = (min(ZEN_SAMPLES, ctx.batch_size), *ctx.inputs.shape[1:])
    x = torch.randn(shape, device=ctx.device)
    mixed = x + ZEN_MIXUP * torch.randn(shape, device=ctx.device)
    features = []
    hooks = [pools[-1].register_forward_hook(lambda m, args, out: features.append(args[0]))]
    modules = [m for _, m in ctx.named_modules]
    with removing(hooks), training_mode(ctx.model, modules), substituted(ctx.named_modules, subs), torch.no_grad():
        ctx.model(x)
        ctx.model(mixed)
    delta = float((features[0] - features[1]).abs().sum(dim=tuple(range(1, features[0].dim()))).mean())
    scaling = sum(math.log(math.sqrt(float(subs[id(m.running_var)].mean())))
                  for _, m in ctx.named_modules if isinstance(m, nn.BatchNorm2d) and m.running_var is not None)
    return (math.log(delta) if delta > 0 else -math.inf) + scaling
