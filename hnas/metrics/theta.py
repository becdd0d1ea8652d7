"""The NTK Gram matrix Theta (quantity `theta`) and its eigenvalues (`theta_eigvals`).

Theta is built during one backward pass of the true-class logits: each Conv2d/Linear call's output
gradient, as it arrives, goes with the call's recorded input to `GramAccumulator`, which adds that layer's
per-image gradient Gram matrix. An out-of-memory error there shrinks the chunks and runs the pass again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hnas.metrics.engine import register_quantity, removing
from hnas.metrics.ntk_gram import GramAccumulator

_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class NTK:
    theta: torch.Tensor  # float64, N x N
    eps: float  # machine epsilon of the per-image gradients' dtype


@register_quantity("theta", needs=("forward",), uses_graph=True)
def theta(ctx):
    """Theta[n, m] = <grad f_n, grad f_m> over all Conv2d/Linear weights and biases, layer by layer.

    f_n is the logit of image n's true class. One backward pass of sum_n f_n gives, at each layer call,
    the output gradient B; image n's gradient contribution is B_n with its own input A_n (BatchNorm in
    batch-statistics mode couples the images only through B, as in the reference).
    """
    fwd = ctx.forward
    logits = fwd.logits
    onehot = torch.zeros_like(logits)
    onehot.scatter_(1, ctx.targets.view(-1, 1), 1.0)
    opts = ctx.options
    attempts = 0
    while True:
        try:
            acc = _theta_pass(ctx, fwd, onehot)
            break
        except _OOM:
            attempts += 1
            if not opts.oom_retry or attempts > 8:
                raise
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
            opts.chunk_bytes = max(1, opts.chunk_bytes // 4)
            opts.max_chunk = max(1, (opts.max_chunk or ctx.batch_size) // 2)
    dtype = next((c.inp.dtype for c in fwd.calls if c.inp is not None), logits.dtype)
    return NTK(acc.theta, torch.finfo(dtype).eps if dtype.is_floating_point else 1e-7)


def _theta_pass(ctx, fwd, onehot):
    opts = ctx.options
    acc = GramAccumulator(ctx.batch_size, ctx.device, opts.chunk_bytes, opts.max_chunk)
    ncalls = {}
    for call in fwd.calls:
        ncalls[call.layer.index] = ncalls.get(call.layer.index, 0) + 1
    seen = {}
    done = set()

    def process(k, b):
        call = fwd.calls[k]
        if k in done:
            return
        done.add(k)
        module = call.layer.module
        has_bias = call.bias is not None
        with torch.no_grad():
            b = b.detach()
            a = call.input_value()
            if ncalls[call.layer.index] == 1:
                acc.add_call(module, a, b, has_bias)
            else:
                key = call.layer.index
                acc.add_partial(key, module, a, b, has_bias)
                seen[key] = seen.get(key, 0) + 1
                if seen[key] == ncalls[key]:
                    acc.finish(key)

    def prehook(k):
        nr = fwd.calls[k].edge.output_nr

        def hook(grad_outputs):
            if grad_outputs[nr] is not None:
                process(k, grad_outputs[nr])
            return None

        return hook

    if not fwd.logits.requires_grad:
        return acc  # nothing depends on a parameter or the input: Theta = 0
    reachable = [k for k, c in enumerate(fwd.calls) if c.edge is not None]
    handles = [fwd.calls[k].edge.node.register_prehook(prehook(k)) for k in reachable]
    with removing(handles), fwd.activation_grads_only():
        if fwd.x is not None and fwd.x.requires_grad:
            torch.autograd.grad(fwd.logits, fwd.x, onehot, retain_graph=True, allow_unused=True)
    # Layer calls the pass through the inputs did not reach (applied to tensors that do not depend on the
    # inputs, or with integer inputs): ask for their output gradients directly.
    rest = [k for k in reachable if k not in done]
    if rest:
        edges = [fwd.calls[k].edge for k in rest]
        with fwd.activation_grads_only():
            grads = torch.autograd.grad(fwd.logits, edges, onehot, retain_graph=True, allow_unused=True)
        for k, b in zip(rest, grads):
            if b is not None:
                process(k, b)
    acc.finish_all()
    return acc


@register_quantity("theta_eigvals", needs=("theta",))
def theta_eigvals(ctx):
    return torch.linalg.eigvalsh(ctx.theta.theta)
