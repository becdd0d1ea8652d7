"""Quantities the forward pass recorded on its way, with no pass of their own: NASWOT's ReLU kernel
(`relu_kernel`), the multiply-adds per image (`macs`) and the Conv2d/Linear modules that ran
(`called_layers`)."""

from __future__ import annotations

from hnas.metrics.engine import register_quantity


@register_quantity("relu_kernel", needs=("forward",))
def relu_kernel(ctx):
    return ctx.forward.relu_kernel


@register_quantity("macs", needs=("forward",))
def macs(ctx):
    return ctx.forward.macs


@register_quantity("called_layers", needs=("forward",))
def called_layers(ctx):
    """The number of distinct Conv2d/Linear modules the forward pass called (counted during the pass: its
    record of calls is released with the graph)."""
    return ctx.forward.layers_called
