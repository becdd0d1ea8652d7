"""Gradients of the mean cross-entropy L (quantity `loss_grads`), the Fisher statistics collected in the
same backward pass (`fisher_stats`), and the Hessian-vector product H W that GraSP needs (`hvp`), one more
backward pass through the first one's graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hnas.metrics.engine import register_quantity, removing


@dataclass
class LossGrads:
    grads: list  # per layer (ctx.layers order): dL/dW, detached, or None when the weight got no gradient
    fisher: list | None = None  # per layer: the Fisher score (a float64 scalar tensor, or 0.0) when planned
    graph_grads: list | None = None  # per layer: dL/dW with its graph (create_graph), only for the HVP


def _weight_leaves(ctx):
    """Unique weight leaves (requiring grad) and, per layer, the index of its leaf in that list."""
    leaves, where, index = [], [], {}
    for layer in ctx.layers:
        w = layer.weight
        if w is None or not w.requires_grad:
            where.append(None)
            continue
        if id(w) not in index:
            index[id(w)] = len(leaves)
            leaves.append(w)
        where.append(index[id(w)])
    return leaves, where


@register_quantity("loss_grads", needs=("forward",), uses_graph=True)
def loss_grads(ctx):
    """dL/dW for every Conv2d/Linear weight from one backward pass of the mean cross-entropy."""
    fwd = ctx.forward
    loss = F.cross_entropy(fwd.logits, ctx.targets)
    leaves, where = _weight_leaves(ctx)
    fisher = [0.0] * len(ctx.layers) if ctx.planned("fisher_stats") else None
    handles = []
    if fisher is not None:
        for call in fwd.calls:
            if call.edge is not None:
                handles.append(call.edge.node.register_prehook(_fisher_hook(call, fisher)))
    create = ctx.planned("hvp")
    retain = create or ctx.graph_needed_after("loss_grads")
    grads = [None] * len(leaves)
    if leaves and loss.requires_grad:
        with removing(handles):
            grads = torch.autograd.grad(loss, leaves, allow_unused=True, create_graph=create, retain_graph=retain)
    per_layer = [None if i is None else grads[i] for i in where]
    return LossGrads(
        grads=[None if g is None else g.detach() for g in per_layer],
        fisher=fisher,
        graph_grads=per_layer if create else None,
    )


def _fisher_hook(call, fisher):
    """Per output channel c: 0.5 * mean_n (sum over positions of a*d)^2, a = output, d = dL/da."""

    def hook(grad_outputs):
        d = grad_outputs[call.edge.output_nr]
        if d is None:
            return None
        with torch.no_grad():
            a = call.output_value()
            d = d.detach()
            if isinstance(call.layer.module, nn.Conv2d):
                g = (a * d).sum(dim=tuple(range(2, a.dim()))) if a.dim() > 2 else a * d
            else:
                prod = a * d
                g = prod.reshape(prod.shape[0], -1, prod.shape[-1]).sum(dim=1)
            per_channel = g.double().pow(2).mean(0).mul(0.5)
            fan_in = call.layer.module.weight[0].numel()
            fisher[call.layer.index] = fisher[call.layer.index] + per_channel.sum() * fan_in  # no device sync
        return None

    return hook


@register_quantity("fisher_stats", needs=("loss_grads",))
def fisher_stats(ctx):
    return ctx.loss_grads.fisher


@register_quantity("hvp", needs=("loss_grads",), uses_graph=True)
def hvp(ctx):
    """H w restricted to the weights, w = the weights themselves: one backward pass of sum_l W_l . g_l(theta).

    GraSP needs -sum W * (H g) = -g . (H W) (H is symmetric); the product with the weights is the cheaper
    one, since a convolution's second-order terms in the direction of its own weight share a kernel.
    """
    lg = ctx.loss_grads
    leaves, where = _weight_leaves(ctx)
    seen, z = set(), None
    for i, g in zip(where, lg.graph_grads):
        if i is None or g is None or i in seen or not g.requires_grad:
            continue
        seen.add(i)
        term = (leaves[i].detach() * g).sum()
        z = term if z is None else z + term
    lg.graph_grads = None  # the double-backward graph lives only as long as z
    if z is None:
        return [None] * len(ctx.layers)
    retain = ctx.graph_needed_after("hvp")
    state = ctx.forward.second_order
    if state is not None:
        state.along_weights = True
    try:
        hw = torch.autograd.grad(z, leaves, allow_unused=True, retain_graph=retain)
    finally:
        if state is not None:
            state.along_weights = False
    return [None if i is None or hw[i] is None else hw[i].detach() for i in where]
