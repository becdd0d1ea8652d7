"""MeCo (Jiang, Wang & Bie, NeurIPS 2023; proxies.md): the minimum eigenvalue of each module's channel
correlation matrix on one image (quantity `meco_terms`), from its own forward pass of the batch's first
image, as the reference scores a batch of 1.

Every module's output (containers and the model itself included, as the reference hooks every module of
`named_modules`) for that image, F of shape (C, H*W), gives R = corrcoef(F) (NaN and infinities set to 0),
and the term is the smallest real part of R's eigenvalues. BatchNorm uses the image's own statistics (train
mode, as the reference's one-image batch), and the model's running statistics are left as they were.
"""

from __future__ import annotations

import math

import torch

from hnas.metrics.engine import register_quantity, removing, substituted, training_mode


def channel_correlation_min_eigenvalue(feature):
    """lambda_min(corrcoef(F)) (real part), F = one image's output reshaped to (channels, -1)."""
    f = feature.detach().reshape(feature.shape[0], -1).to(torch.float64)
    if f.shape[1] < 2:  # no correlation from one position: the reference's NaN matrix, zeroed
        return 0.0
    corr = torch.corrcoef(f)
    corr = torch.where(torch.isfinite(corr), corr, torch.zeros_like(corr))
    return float(torch.linalg.eigvals(corr).real.min())


@register_quantity("meco_terms")
def meco_terms(ctx):
    """[lambda_min] per module output of the first image (the finite ones)."""
    terms = []

    def hook(module, args, out):
        if isinstance(out, torch.Tensor) and out.dim() >= 2 and out.shape[0] == 1 and out.is_floating_point():
            terms.append(channel_correlation_min_eigenvalue(out[0]))

    subs = {id(b): b.detach().clone() for _, b in ctx.named_buffers}  # running statistics stay as they were
    modules = [m for _, m in ctx.named_modules]
    handles = [m.register_forward_hook(hook) for m in modules]
    with removing(handles), training_mode(ctx.model, modules), substituted(ctx.named_modules, subs), torch.no_grad():
        ctx.model(ctx.inputs[:1])
    return [t for t in terms if math.isfinite(t)]
