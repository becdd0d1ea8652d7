"""TE-NAS's linear-region count (Chen et al., ICLR 2021; proxies.md), quantity `linear_regions`, on its own
pass, as the AZ-NAS port of TE-NAS that VKDNW's Table 1 runs on NB201 computes it
(`ZeroShotProxy/compute_te_nas_score.py`, `compute_RN_score`).

The network re-initialised Kaiming-normal fan_in as TE-NAS does (hnas.metrics.reinit; the model itself
untouched), one train-mode forward without gradients of LR_SAMPLES Gaussian images of the probe images' shape
(the port's `randn` batch, 32 by its default), the outputs of every nn.ReLU whose input is 4-D concatenated
per image into a binary code (on/off per neuron); LR = sum_i 1 / #{j : code_j = code_i}, the number of
distinct codes among the images. Seeded with LR_SEED. On full-size images almost every image has a code of
its own, so LR is close to the number of images for most networks (TE-NAS itself counts on a 1-channel
network of 3x3 crops, which needs a network of its own per space).
"""

from __future__ import annotations

import torch
from torch import nn

from hnas.metrics.engine import register_quantity, removing, substituted, training_mode
from hnas.metrics.reinit import kaiming_normal_fan_in, reinitialised

LR_SAMPLES = 32
LR_SEED = 0


@register_quantity("linear_regions")
def linear_regions(ctx):
    """The number of distinct ReLU on/off codes among the Gaussian images (module docstring)."""
    torch.manual_seed(LR_SEED)  # compute_metrics forks the generators: the caller's stay as they were
    subs = reinitialised(ctx, kaiming_normal_fan_in)
    x = torch.randn((min(LR_SAMPLES, ctx.batch_size), *ctx.inputs.shape[1:]), device=ctx.device)
    codes = []

    def hook(module, args, out):
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            codes.append((out.detach() > 0).reshape(out.shape[0], -1))

    modules = [m for _, m in ctx.named_modules]
    hooks = [m.register_forward_hook(hook) for m in modules if isinstance(m, nn.ReLU)]
    with removing(hooks), training_mode(ctx.model, modules), substituted(ctx.named_modules, subs), torch.no_grad():
        ctx.model(x)
    if not codes:
        return 1  # no ReLU: the network is linear, one region
    return int(torch.unique(torch.cat(codes, dim=1).to(torch.uint8), dim=0).shape[0])
