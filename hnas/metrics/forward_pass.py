"""The shared forward pass (quantity `forward`): one training-mode pass of the batch, whose graph every
later backward pass runs through. Hooks record what the planned quantities need: each Conv2d/Linear call
(its input for Theta and fisher, its output for fisher), NASWOT's ReLU kernel and the multiply-adds.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.graph import get_gradient_edge

from hnas.errors import HnasError
from hnas.metrics.engine import (
    QUANTITIES,
    logits_of,
    register_quantity,
    removing,
    substituted,
    tensor_substitutes,
    training_mode,
)
from hnas.metrics.kernels import EngineKernels, SecondOrderState


@dataclass
class Call:
    """One call of a Conv2d/Linear module during the shared forward pass."""

    layer: object
    inp: torch.Tensor | None
    inp_version: int
    out: torch.Tensor | None
    out_version: int
    edge: object  # GradientEdge of the output, or None when the output needs no gradient
    weight: torch.Tensor | None
    bias: torch.Tensor | None

    def output_value(self):
        """The call's output as the forward pass produced it (recomputed if modified in place since)."""
        if self.out is not None and self.out._version == self.out_version:
            return self.out.detach()
        if self.inp is None or self.inp._version != self.inp_version:
            raise HnasError(
                f"layer '{self.layer.name}': its output was modified in place after the forward pass and its "
                "input is no longer available to recompute it; use out-of-place ops around Conv2d/Linear"
            )
        with torch.no_grad():
            return _layer_forward(self.layer.module, self.inp, self.weight, self.bias)

    def input_value(self):
        if self.inp is None or self.inp._version != self.inp_version:
            raise HnasError(
                f"layer '{self.layer.name}': its input was modified in place after the forward pass; "
                "the per-image gradients need it unchanged"
            )
        return self.inp.detach()


def _layer_forward(module, x, weight, bias):
    if isinstance(module, nn.Conv2d):
        return module._conv_forward(x, weight, bias)
    return F.linear(x, weight, bias)


@dataclass
class ForwardRecord:
    x: torch.Tensor | None
    logits: torch.Tensor | None
    calls: list = field(default_factory=list)
    relu_kernel: torch.Tensor | None = None
    classes: int = 0  # the model's number of outputs (kept after the graph is released)
    macs: float = 0.0
    second_order: object = None  # SecondOrderState of the graph's custom Functions, when the HVP is planned

    @contextlib.contextmanager
    def activation_grads_only(self):
        """A backward pass that needs no parameter gradient: tell the graph's custom Functions."""
        state = self.second_order
        if state is None:
            yield
            return
        state.parameter_grads = False
        try:
            yield
        finally:
            state.parameter_grads = True

    def release(self):
        """Drop every reference into the autograd graph so that it is freed."""
        self.x = None
        self.logits = None
        self.calls = []


def _relu_codes_into(kernel, inp, chunk_bytes):
    """K += c c^T + (1-c)(1-c)^T for the binary codes c of this ReLU's input (exact integer arithmetic),
    a block of units at a time."""
    n = inp.shape[0]
    flat = inp.detach().reshape(n, -1)
    d = flat.shape[1]
    # float32 sums of 0/1 products are exact below 2**24 terms
    step = max(1, min(2**23, int(chunk_bytes // (4 * n))))
    for s in range(0, d, step):
        cs = (flat[:, s : s + step] > 0).to(torch.float32)
        both_on = (cs @ cs.T).to(torch.float64)
        on = cs.sum(1, dtype=torch.float64)
        kernel += 2 * both_on - on[:, None] - on[None, :] + cs.shape[1]


@register_quantity("forward")
def forward(ctx):
    """The shared forward pass in training mode (batch statistics), recording what the plan needs."""
    plan = ctx.plan
    graph = any(QUANTITIES[q].uses_graph for q in plan)
    keep_inputs = "theta" in plan or "fisher_stats" in plan
    keep_outputs = "fisher_stats" in plan
    subs = tensor_substitutes(ctx, weights_require_grad=graph)
    x = ctx.inputs.detach()
    if x.is_inference():
        x = x.clone()
    if ("theta" in plan or "input_jacobian" in plan) and x.is_floating_point():
        x.requires_grad_(True)
    n = x.shape[0]
    rec = ForwardRecord(x=x, logits=None)
    if "relu_kernel" in plan:
        rec.relu_kernel = torch.zeros(n, n, dtype=torch.float64, device=ctx.device)
    macs = [0]

    def layer_hook(layer):
        def hook(module, args, out):
            inp = args[0] if args else None
            if not isinstance(out, torch.Tensor) or not isinstance(inp, torch.Tensor):
                return
            w = module.weight
            macs[0] += out.numel() * (w[0].numel() if isinstance(module, nn.Conv2d) else module.in_features)
            edge = get_gradient_edge(out) if out.requires_grad else None
            rec.calls.append(
                Call(
                    layer,
                    inp if keep_inputs else None,
                    inp._version,
                    out if keep_outputs else None,
                    out._version,
                    edge,
                    w,
                    module.bias,
                )
            )

        return hook

    def relu_hook(module, args, out):
        if args and isinstance(args[0], torch.Tensor):
            _relu_codes_into(rec.relu_kernel, args[0], ctx.options.chunk_bytes)

    handles = [layer.module.register_forward_hook(layer_hook(layer)) for layer in ctx.layers]
    if rec.relu_kernel is not None:
        handles += [m.register_forward_hook(relu_hook) for _, m in ctx.named_modules if isinstance(m, nn.ReLU)]
    # The HVP differentiates the backward pass: give convolutions and BatchNorm a cheaper double backward.
    # On the CPU, average pooling runs as a convolution. (It was measured slow on the CPU only; on CUDA the
    # function mode, whose Python dispatch every torch call then pays, stays reserved for the HVP.)
    rec.second_order = SecondOrderState() if "hvp" in plan else None
    cpu = ctx.device.type == "cpu"
    kernels = contextlib.nullcontext()
    if rec.second_order or cpu:
        kernels = EngineKernels(rec.second_order, fast_pooling=cpu)
    modules = [m for _, m in ctx.named_modules]
    with removing(handles), training_mode(ctx.model, modules), substituted(ctx.named_modules, subs):
        with torch.set_grad_enabled(graph), kernels:
            out = ctx.model(x)
    logits = logits_of(out)
    if logits.dim() != 2 or logits.shape[0] != n:
        raise HnasError(f"the model's logits have shape {tuple(logits.shape)}; expected ({n}, classes)")
    classes = logits.shape[1]
    if ctx.targets.numel() and (int(ctx.targets.min()) < 0 or int(ctx.targets.max()) >= classes):
        raise HnasError(f"targets must be class indices in 0..{classes - 1} (the model has {classes} outputs)")
    rec.logits = logits
    rec.classes = classes
    rec.macs = macs[0] / n
    return rec
