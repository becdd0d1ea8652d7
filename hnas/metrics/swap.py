"""SWAP (Peng et al., ICLR 2024; proxies.md), quantity `swap_patterns`: the number of distinct sample-wise
activation patterns, on its own passes, as the reference's `correlation.py` computes it.

Of the probe batch's first SWAP_SAMPLES images: per repeat, the network re-initialised as the reference
does (Conv2d / Linear weights N(0, 1), biases 0, BatchNorm / GroupNorm weights 1 and biases 0; the model
itself untouched: substituted tensors, running statistics left alone), one train-mode forward without
gradients, the outputs of every nn.ReLU whose input is 4-D concatenated per image into A (images x neurons),
sign(A); SWAP is the number of distinct columns (per-neuron on/off patterns across the images). The score is
the mean over SWAP_REPEATS repeats, their draws seeded with SWAP_SEED, so it depends on the architecture only.

On the CPU the forwards pool with the engine's kernel (hnas.metrics.kernels.avg_pool_as_conv): PyTorch's
channels-first average pooling took over a quarter of the metric's time there. It equals PyTorch's up to float
rounding, which can flip a sign only for a pre-activation within rounding of 0: the counts came out identical
on the architectures compared (tests/test_metrics_newer.py, the shipped rows).
"""

from __future__ import annotations

import torch
from torch import nn

from hnas.metrics.engine import register_quantity, removing, substituted, training_mode
from hnas.metrics.kernels import EngineKernels
from hnas.metrics.reinit import reinitialised, standard_normal

SWAP_SAMPLES = 16  # the reference's --input_samples
SWAP_REPEATS = 32  # its --repeats
SWAP_SEED = 0


def pattern_codes(activations):
    """Each neuron's on/off pattern across the images (activations: images x neurons, at most SWAP_SAMPLES
    images) as the bits of one int32, image i the bit 2**i."""
    # one weighted sum, not a shift and an or per image: those were a fifth of the metric's time on the CPU
    bits = torch.pow(2, torch.arange(activations.shape[0], dtype=torch.int32, device=activations.device))
    return ((activations > 0).to(torch.int32) * bits[:, None]).sum(0, dtype=torch.int32)


def distinct_patterns(codes, num_images):
    """The number of distinct codes of `num_images` bits: a count per possible code (2**16 at most), linear in
    the neurons (widening them to int64 and sorting them took about a quarter of the metric's time)."""
    return int(torch.bincount(codes, minlength=2**num_images).count_nonzero())


@register_quantity("swap_patterns")
def swap_patterns(ctx):
    """The mean number of distinct activation patterns over the repeats (module docstring)."""
    torch.manual_seed(SWAP_SEED)  # compute_metrics forks the generators: the caller's stay as they were
    x = ctx.inputs[:SWAP_SAMPLES]
    codes = []  # of every ReLU output of the current forward

    def hook(module, args, out):
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            codes.append(pattern_codes(out.detach().reshape(out.shape[0], -1)))

    modules = [m for _, m in ctx.named_modules]
    hooks = [m.register_forward_hook(hook) for m in modules if isinstance(m, nn.ReLU)]
    counts = []
    with removing(hooks), training_mode(ctx.model, modules), torch.no_grad(), EngineKernels(fast_pooling=True):
        for _ in range(SWAP_REPEATS):
            codes.clear()
            with substituted(ctx.named_modules, reinitialised(ctx, standard_normal)):
                ctx.model(x)
            counts.append(distinct_patterns(torch.cat(codes), len(x)) if codes else 0)
    return sum(counts) / len(counts)
