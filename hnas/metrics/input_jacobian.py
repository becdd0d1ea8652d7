"""The Jacobian of the sum of outputs with respect to the inputs (quantity `input_jacobian`, for jacob_cov)."""

from __future__ import annotations

import torch

from hnas.errors import HnasError
from hnas.metrics.engine import register_quantity


@register_quantity("input_jacobian", needs=("forward",), uses_graph=True)
def input_jacobian(ctx):
    """J[n] = d(sum of all outputs)/d(input n), flattened: one backward pass of input gradients."""
    fwd = ctx.forward
    if fwd.x is None or not fwd.x.requires_grad:
        raise HnasError("jacob_cov needs floating-point inputs (it differentiates the outputs by the inputs)")
    if not fwd.logits.requires_grad:
        return torch.zeros(fwd.x.shape[0], fwd.x[0].numel(), dtype=fwd.x.dtype, device=fwd.x.device)
    with fwd.activation_grads_only():
        (j,) = torch.autograd.grad(
            fwd.logits,
            fwd.x,
            torch.ones_like(fwd.logits),
            retain_graph=ctx.graph_needed_after("input_jacobian"),
            allow_unused=True,
        )
    if j is None:
        j = torch.zeros_like(fwd.x)
    return j.detach().reshape(j.shape[0], -1)
