"""VKDNW (Tybl & Neumann, CVPR 2025; proxies.md), quantity `vkdnw`: the entropy of the spectrum of the
Fisher information of a few scalar parameters, on its own pass, as the reference's
`NB201/ZeroShotProxy/compute_vkdnw_score.py` computes it.

- The network is re-initialised as AZ-NAS does (hnas.metrics.reinit: Kaiming-normal fan_in, biases 0, norm
  weights 1 and biases 0; the model itself untouched) and put in eval mode (BatchNorm with running
  statistics where it tracks them, which are cloned and stay as they were).
- The input: VKDNW_SAMPLES Gaussian images of the probe images' shape (the reference's default batch of 32
  `randn` images, no labels).
- theta_S: element 0 of every parameter tensor (the reference's `param_idx=0`) of the modules the forward
  pass calls, so that the unused candidate ops of NB201's reference layout add no zero column; `dim` = their
  number (the reference's `vkdnw_dim`, `len(named_parameters)` of its network, where every module runs).
- J_b = d logits(x_b) / d theta_S (K x P) per image, as if each image went through the network alone (the
  reference's `vmap` of `jacrev` over single images): here one forward and K backward passes of the
  activations only, each first-element gradient read from its module's input, output and output gradient
  (Conv2d, Linear, norm layers), so no per-image weight gradient is ever formed. Images are passed one at a
  time only where a BatchNorm normalises with batch statistics in eval mode. On the CPU the pass pools with
  the engine's kernel (hnas.metrics.kernels.avg_pool_as_conv, whose backward is a convolution's): PyTorch's
  channels-first average pooling and its backward took about a quarter of the metric's time. It equals
  PyTorch's up to float rounding; recomputed shipped rows moved by no more than they move between CPUs.
- L_b = the lower-triangular Cholesky factor of C_b = diag(pi) - pi pi^T (L_b L_b^T = C_b), pi = 0.95
  softmax(logits(x_b)) + 0.05 / K, in the reference's closed form (for j < i: L_ij = -pi_i d_j / q_j,
  L_jj = d_j, d_j = sqrt(pi_j q_j / q_{j-1}), q_j = 1 - sum_{i <= j} pi_i; its last column is 0). The
  Fisher is F = mean_b (L_b J_b)^T (L_b J_b) = mean_b J_b^T L_b^T L_b J_b, as the reference multiplies: not
  J^T C J, which L_b^T J_b would give.
- lambda = the singular values of F; q = their deciles 0.1 ... 0.9 (torch.quantile, linear interpolation);
  p = q / (sum q + 1e-10); VKDNW = -sum p log(p + 1e-10) (the reference's notebook), at most log 9.

The products and the spectrum are computed in float64 (F has rank at most B (K - 1), so its small
eigenvalues are rounding noise in float32). The draws (weights, input) are seeded with VKDNW_SEED.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hnas.errors import HnasError
from hnas.metrics.engine import eval_mode, logits_of, register_quantity, removing, substituted
from hnas.metrics.kernels import EngineKernels
from hnas.metrics.reinit import NORMS, kaiming_normal_fan_in, reinitialised

VKDNW_SAMPLES = 32  # the reference's default --batch_size
VKDNW_SEED = 0
# pi = (1 - alpha) softmax + alpha / K; the reference holds its 0.05 in a float16 tensor
VKDNW_ALPHA = float(torch.tensor(0.05, dtype=torch.float16))
VKDNW_QUANTILES = tuple(i / 10 for i in range(1, 10))


def cholesky_factor(logits, alpha=VKDNW_ALPHA):
    """(B, K, K): per row of `logits`, the closed-form lower-triangular L with L L^T = diag(pi) - pi pi^T,
    pi = (1 - alpha) softmax + alpha / K (module docstring)."""
    pi = torch.softmax(logits, dim=1) * (1 - alpha) + alpha / logits.shape[1]
    q = (1 - torch.cumsum(pi, dim=1)).clamp_min(0)
    q[:, -1] = 0
    q_before = torch.cat([torch.ones_like(q[:, :1]), q[:, :-1]], dim=1)
    d = torch.sqrt(pi * q / q_before)
    below = -pi[:, :, None] * (d / torch.where(q > 0, q, torch.ones_like(q)))[:, None, :]
    return torch.tril(below, diagonal=-1) + torch.diag_embed(d)


def spectrum_entropy(eigenvalues):
    """-sum p log(p + 1e-10) of the normalised deciles p of `eigenvalues`."""
    q = torch.quantile(eigenvalues, torch.tensor(VKDNW_QUANTILES, dtype=eigenvalues.dtype,
                                                 device=eigenvalues.device))
    p = q / (q.abs().sum() + 1e-10)
    return float(-(p * torch.log(p + 1e-10)).sum())


def _first_element_grads(module, tensors, inp, out, grad):
    """{id(tensor): (B,) d/d tensor.flat[0] of the summed output, per image} for the parameters `tensors`
    ({name: substitute}) `module` used on this call, from its input, output and the output's gradient."""
    grads = {}
    weight, bias = tensors.get("weight"), tensors.get("bias")
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise HnasError(f"vkdnw: {module} pads in a way its first-weight gradient does not handle")
        (ph, pw), (sh, sw) = module.padding, module.stride
        h, w = grad.shape[2:]
        window = nn.functional.pad(inp[:, 0], (pw, pw, ph, ph))[:, :(h - 1) * sh + 1:sh, :(w - 1) * sw + 1:sw]
        if weight is not None:
            grads[id(weight)] = (grad[:, 0] * window).sum(dim=(1, 2))
        if bias is not None:
            grads[id(bias)] = grad[:, 0].sum(dim=(1, 2))
    elif isinstance(module, nn.Linear):
        g, a = grad[..., 0].reshape(grad.shape[0], -1), inp[..., 0].reshape(inp.shape[0], -1)
        if weight is not None:
            grads[id(weight)] = (g * a).sum(dim=1)
        if bias is not None:
            grads[id(bias)] = g.sum(dim=1)
    elif isinstance(module, NORMS):
        # out = weight * normalised + bias per channel, so d out / d weight_0 = (out - bias_0) / weight_0
        g = grad[:, 0].reshape(grad.shape[0], -1)
        if weight is not None:
            normalised = (out[:, 0] - (bias[0] if bias is not None else 0)) / weight[0]
            grads[id(weight)] = (g * normalised.reshape(g.shape)).sum(dim=1)
        if bias is not None:
            grads[id(bias)] = g.sum(dim=1)
    elif tensors:
        raise HnasError(f"vkdnw takes gradients of the parameters of Conv2d, Linear and norm layers; "
                        f"{type(module).__name__} has parameters of its own")
    return grads


def _jacobians(ctx, subs, x):
    """The eval-mode logits (B, K), the per-image Jacobians (B, K, P) of the logits with respect to
    theta_S and P, over the parameters of the modules the forward pass calls, in order of first call."""
    calls = []

    def hook(module, args, out):
        if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            calls.append((module, args[0], out))

    modules = [m for _, m in ctx.named_modules]
    own = {m: {n: subs[id(p)] for n, p in m.named_parameters(recurse=False)} for m in modules}
    hooks = [m.register_forward_hook(hook) for m in modules if own[m]]
    with removing(hooks), substituted(ctx.named_modules, subs), EngineKernels(fast_pooling=True):
        logits = logits_of(ctx.model(x.detach().requires_grad_(True)))  # a graph of activations only
    order = list(dict.fromkeys(id(t) for m, _, _ in calls for t in own[m].values()))
    rows = []
    for k in range(logits.shape[1]):  # one backward per class (batched with is_grads_batched: slower on CPU)
        grads = torch.autograd.grad(logits[:, k].sum(), [out for _, _, out in calls], retain_graph=True,
                                    allow_unused=True)
        column = {}
        for (module, inp, out), grad in zip(calls, grads):
            if grad is None:
                continue
            for key, value in _first_element_grads(module, own[module], inp.detach(), out.detach(), grad).items():
                column[key] = column[key] + value if key in column else value
        zeros = torch.zeros(x.shape[0], device=x.device)
        rows.append(torch.stack([column.get(key, zeros) for key in order], dim=1))
    return logits.detach(), torch.stack(rows, dim=1), len(order)


def _couples_images(module):
    """True for a norm layer that normalises with the statistics of the batch even in eval mode."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is None


@register_quantity("vkdnw")
def vkdnw(ctx):
    """{"entropy", "dim"} of the model (module docstring)."""
    torch.manual_seed(VKDNW_SEED)  # compute_metrics forks the generators: the caller's stay as they were
    subs = reinitialised(ctx, kaiming_normal_fan_in)
    x = torch.randn((min(VKDNW_SAMPLES, ctx.batch_size), *ctx.inputs.shape[1:]), device=ctx.device)
    modules = [m for _, m in ctx.named_modules]
    # the reference passes each image through the network alone; without batch statistics the images of
    # one batch are independent, and one pass gives the same per-image Jacobians
    chunks = x.split(1) if any(_couples_images(m) for m in modules) else [x]
    with eval_mode(ctx.model, modules):
        parts = [_jacobians(ctx, subs, chunk) for chunk in chunks]
    logits = torch.cat([p[0] for p in parts]).double()
    jac = torch.cat([p[1] for p in parts]).double()
    scaled = cholesky_factor(logits) @ jac  # (B, K, P)
    fisher = torch.einsum("bkp,bkq->pq", scaled, scaled) / jac.shape[0]
    eigenvalues = torch.linalg.svdvals(fisher)
    entropy = spectrum_entropy(eigenvalues) if bool(torch.isfinite(eigenvalues).all()) else math.nan
    return {"entropy": entropy, "dim": parts[0][2]}
