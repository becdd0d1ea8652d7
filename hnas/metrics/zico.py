"""ZiCo's gradients (quantity `half_batch_grads`): the cross-entropy gradients of every Conv2d/Linear weight
on each half of the probe batch, from a train-mode forward and backward pass of each half.

ZiCo (Li et al., ICLR 2023) takes B = 2 mini-batches; the engine has one probe batch, so its halves are the
two (with `probe.batch_size=128`, the reference's 2 x 64). Parameters and buffers are substituted as in the
shared pass, so the model (and its BatchNorm running statistics) is left as it was.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hnas.errors import HnasError
from hnas.metrics.engine import logits_of, register_quantity, substituted, tensor_substitutes, training_mode


@register_quantity("half_batch_grads")
def half_batch_grads(ctx):
    """[(grads of the first half, grads of the second half)] per Conv2d/Linear layer with a weight, a grad
    None where the weight got none."""
    n = ctx.batch_size
    if n < 2:
        raise HnasError("zico needs a probe batch of at least 2 images (it compares the gradients of its halves)")
    subs = tensor_substitutes(ctx, weights_require_grad=True)
    weights = [layer.weight for layer in ctx.layers]
    halves = []
    modules = [m for _, m in ctx.named_modules]
    with training_mode(ctx.model, modules), substituted(ctx.named_modules, subs):
        for part in (slice(0, n // 2), slice(n // 2, 2 * (n // 2))):
            loss = F.cross_entropy(logits_of(ctx.model(ctx.inputs[part])), ctx.targets[part])
            used = [w for w in weights if w is not None and w.requires_grad]
            grads = torch.autograd.grad(loss, used, allow_unused=True) if used and loss.requires_grad else []
            by_id = {id(w): g for w, g in zip(used, grads)}
            halves.append([None if w is None else by_id.get(id(w)) for w in weights])
    return list(zip(*halves))
