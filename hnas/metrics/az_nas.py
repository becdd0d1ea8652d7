"""AZ-NAS's three network-statistics proxies (Lee & Ham, CVPR 2024; proxies.md), quantity `az_scores`: its
own pass, as the reference's `compute_az_nas_score.py` runs it.

- The network is re-initialised (the model itself untouched: substituted tensors, seeded): Conv2d / Linear
  weights Kaiming-normal (fan_in, ReLU gain), biases 0, BatchNorm / GroupNorm affine weights 1 and biases 0;
  train mode (batch statistics), running statistics left as they were.
- The input is Gaussian noise of the probe batch's shape (the reference feeds `randn`, no labels).
- The features are the outputs of the model's `stem` and of each of its `cells`, in order (the reference's
  `extract_cell_features`), so a model without those attributes has no AZ-NAS score.
- expressivity: per feature F (B, C, H, W), the (B*H*W, C) matrix centred, Sigma = X^T X / n, p = its
  eigenvalues / their sum, H = -sum p log(p + 1e-8); the sum of H over the features. progressivity: the
  smallest H_i - H_{i-1}. trainability: per consecutive pair, last first, g_out a Rademacher tensor shaped like
  F_i, g_in = its vector-Jacobian product to F_{i-1} (pixel-unshuffled by the stride where the size changes),
  M = g_in^T g_out / (B*H*W) and sigma its largest singular value: -sigma - 1/(sigma + 1e-6) + 2 (-inf for a
  block that passes g_out through exactly), averaged. A NaN score is -inf, as the reference reports it.
The random draws (weights, input, g_out) come from a generator seeded with AZ_SEED, so the scores depend on
the architecture alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hnas.errors import HnasError
from hnas.metrics.engine import register_quantity, removing, substituted, training_mode
from hnas.metrics.reinit import kaiming_normal_fan_in, reinitialised

AZ_SEED = 0


def entropy_of_channels(feature):
    """In float64: float32 rounding can leave a near-zero eigenvalue negative enough to make the entropy NaN
    (which the reference, in float32, reports as -inf)."""
    b, c, h, w = feature.shape
    x = feature.detach().permute(0, 2, 3, 1).reshape(b * h * w, c).double()
    x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.eigvalsh(x.T @ x / x.shape[0])
    p = s / s.sum()
    return float((-p * torch.log(p + 1e-8)).sum())


def pair_trainability(f_in, f_out):
    g_out = (torch.bernoulli(torch.full_like(f_out, 0.5)) - 0.5) * 2
    (g_in,) = torch.autograd.grad(f_out, f_in, g_out, retain_graph=True)
    if g_in.shape == g_out.shape and bool(torch.equal(g_in, g_out)):
        return -math.inf
    if g_in.shape[2:] != g_out.shape[2:]:
        g_in = F.pixel_unshuffle(g_in, g_in.shape[2] // g_out.shape[2])
    bo, co, ho, wo = g_out.shape
    mat = g_in.permute(0, 2, 3, 1).reshape(-1, g_in.shape[1]).T @ g_out.permute(0, 2, 3, 1).reshape(-1, co)
    sigma = float(torch.linalg.svdvals(mat / (bo * ho * wo)).max())
    return -sigma - 1 / (sigma + 1e-6) + 2


def _finite_or_minus_inf(value):
    return -math.inf if math.isnan(value) else float(value)


@register_quantity("az_scores")
def az_scores(ctx):
    """{"expressivity", "progressivity", "trainability"} of the model (module docstring)."""
    model = ctx.model
    if not (isinstance(getattr(model, "stem", None), nn.Module) and isinstance(getattr(model, "cells", None),
                                                                               nn.Module)):
        raise HnasError(f"the AZ-NAS metrics read the outputs of a model's `stem` and `cells`; "
                        f"{type(model).__name__} has no such attributes")
    torch.manual_seed(AZ_SEED)  # compute_metrics forks the generators: the caller's stay as they were
    subs = reinitialised(ctx, kaiming_normal_fan_in)
    x = torch.randn(ctx.inputs.shape, device=ctx.device).requires_grad_(True)  # a graph to the features
    features = []
    hooks = [model.stem.register_forward_hook(lambda m, a, out: features.append(out))]
    hooks += [cell.register_forward_hook(lambda m, a, out: features.append(out)) for cell in model.cells]
    modules = [m for _, m in ctx.named_modules]
    with removing(hooks), training_mode(model, modules), substituted(ctx.named_modules, subs):
        model(x)
    if any(not isinstance(f, torch.Tensor) or f.dim() != 4 for f in features):
        raise HnasError("the AZ-NAS metrics need every stem and cell output to be one (B, C, H, W) tensor")
    entropies = [entropy_of_channels(f) for f in features]
    expressivity = sum(entropies)
    progressivity = min((b - a for a, b in zip(entropies, entropies[1:])), default=math.nan)
    pairs = [pair_trainability(features[i - 1], features[i]) for i in reversed(range(1, len(features)))]
    trainability = sum(pairs) / len(pairs) if pairs else math.nan
    return {"expressivity": _finite_or_minus_inf(expressivity), "progressivity": _finite_or_minus_inf(progressivity),
            "trainability": _finite_or_minus_inf(trainability)}
