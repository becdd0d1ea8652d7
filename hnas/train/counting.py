"""What a trained network's result reports of its size, counted as DARTS counts it (darts.md §4.5)."""

import torch
from torch import nn


def count_parameters(model):
    """The parameter count as DARTS's `count_parameters_in_MB` counts it (times 1e6): every parameter whose
    name does not contain "auxiliary", so an auxiliary head (a training aid) is left out."""
    return sum(p.numel() for name, p in model.named_parameters() if "auxiliary" not in name)


def count_macs(model, input_size):
    """Multiply-adds of Conv2d and Linear layers for one image of `input_size` (channels, height, width),
    in eval mode (no auxiliary head, no drop path); the model's modes are restored afterwards."""
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            total[0] += output[0].numel() * module.weight[0].numel()
        else:
            total[0] += module.in_features * module.out_features

    param = next(model.parameters())
    x = torch.zeros(1, *input_size, device=param.device, dtype=param.dtype)
    modes = [(m, m.training) for m in model.modules()]
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
    return total[0]
