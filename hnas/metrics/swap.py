"""SWAP (Peng et al., ICLR 2024; proxies.md), quantity `swap_patterns`: the number of distinct sample-wise
activation patterns, on its own passes, as the reference's `correlation.py` computes it.

Of the probe batch's first SWAP_SAMPLES images: per repeat, the network re-initialised as the reference
does (Conv2d / Linear weights N(0, 1), biases 0, BatchNorm / GroupNorm weights 1 and biases 0; the model
itself untouched: substituted tensors, running statistics left alone), one train-mode forward without
gradients, the outputs of every nn.ReLU whose input is 4-D concatenated per image into A (images x neurons),
sign(A); SWAP is the number of distinct columns (per-neuron on/off patterns across the images). The score is
the mean over SWAP_REPEATS repeats, their draws seeded with SWAP_SEED, so it depends on the architecture only.
"""

from __future__ import annotations

import torch
from torch import nn

from hnas.metrics.engine import register_quantity, removing, substituted, training_mode
from hnas.metrics.reinit import reinitialised, standard_normal

SWAP_SAMPLES = 16  # the reference's --input_samples
SWAP_REPEATS = 32  # its --repeats
SWAP_SEED = 0


def distinct_patterns(activations):
    """The number of distinct columns of sign(activations) (images x neurons), at most 62 images: each
    column's on/off bits packed into one integer."""
    on = (activations > 0).to(torch.int64)
    weights = 2 ** torch.arange(on.shape[0], device=on.device, dtype=torch.int64)
    return int(torch.unique(weights @ on).numel())


@register_quantity("swap_patterns")
def swap_patterns(ctx):
    """The mean number of distinct activation patterns over the repeats (module docstring)."""
    torch.manual_seed(SWAP_SEED)  # compute_metrics forks the generators: the caller's stay as they were
    x = ctx.inputs[:SWAP_SAMPLES]
    outputs = []

    def hook(module, args, out):
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            outputs.append(out.detach().reshape(out.shape[0], -1))

    modules = [m for _, m in ctx.named_modules]
    hooks = [m.register_forward_hook(hook) for m in modules if isinstance(m, nn.ReLU)]
    counts = []
    with removing(hooks), training_mode(ctx.model, modules), torch.no_grad():
        for _ in range(SWAP_REPEATS):
            outputs.clear()
            with substituted(ctx.named_modules, reinitialised(ctx, standard_normal)):
                ctx.model(x)
            counts.append(distinct_patterns(torch.cat(outputs, dim=1)) if outputs else 0)
    return sum(counts) / len(counts)
