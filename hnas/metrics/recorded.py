"""Quantities the forward pass recorded on its way, with no pass of their own: NASWOT's ReLU kernel
(`relu_kernel`) and the multiply-adds per image (`macs`)."""

from __future__ import annotations

from hnas.metrics.engine import register_quantity


@register_quantity("relu_kernel", needs=("forward",))
def relu_kernel(ctx):
    return ctx.forward.relu_kernel


@register_quantity("macs", needs=("forward",))
def macs(ctx):
    return ctx.forward.macs
