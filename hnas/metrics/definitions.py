"""The registered metrics (DESIGN.md section 3). Each one is a single decorated function of the context.

"Weights" are the weight tensors of every Conv2d and Linear module; a weight that got no gradient (its
module never ran, or nothing depends on it) counts 0, as in the reference.
"""

from __future__ import annotations

import math

import torch

from hnas.metrics.engine import register_metric

# condnum's value when Theta is singular (to its working precision) or the ratio is not finite.
CONDNUM_SENTINEL = 1e5
# jacob_cov's regulariser k in -sum(log(v + k) + 1/(v + k)).
JACOB_K = 1e-5


def _weight_sum(ctx, grads, term):
    """sum over layers of term(W, G) (each a scalar tensor), accumulated in float64 with one device sync."""
    total = None
    with torch.no_grad():
        for layer, g in zip(ctx.layers, grads):
            if g is not None and layer.weight is not None:
                t = term(layer.weight, g).double()
                total = t if total is None else total + t
    return 0.0 if total is None else float(total)


@register_metric("grad_norm", needs=("loss_grads",))
def grad_norm(ctx):
    """Sum over layers of the Frobenius norm of dL/dW."""
    return _weight_sum(ctx, ctx.loss_grads.grads, lambda w, g: g.norm())


@register_metric("snip", needs=("loss_grads",))
def snip(ctx):
    """Sum over all weights of |W * dL/dW|."""
    return _weight_sum(ctx, ctx.loss_grads.grads, lambda w, g: (w * g).abs().sum())


@register_metric("plain", needs=("loss_grads",))
def plain(ctx):
    """Sum over all weights of W * dL/dW (signed)."""
    return _weight_sum(ctx, ctx.loss_grads.grads, lambda w, g: (w * g).sum())


@register_metric("grasp", needs=("loss_grads", "hvp"))
def grasp(ctx):
    """Sum over all weights of -W * (H g), g = dL/dW held constant (signed); computed as -g . (H W)."""
    total = None
    with torch.no_grad():
        for g, hw in zip(ctx.loss_grads.grads, ctx.hvp):
            if g is not None and hw is not None:
                t = -(g * hw).sum().double()
                total = t if total is None else total + t
    return 0.0 if total is None else float(total)


@register_metric("fisher", needs=("fisher_stats",))
def fisher(ctx):
    """Per Conv2d/Linear output channel: 0.5 * mean over images of (sum over positions of a * dL/da)^2,
    counted once per weight of the channel."""
    return float(sum(ctx.fisher_stats))  # per-layer float64 tensors (or 0.0 for layers without gradient)


@register_metric("synflow", needs=("synflow",))
def synflow(ctx):
    """Sum of |W * dR/dW| on the BatchNorm-free float64 network with |parameters|, R = sum of outputs for
    one all-ones image."""
    return ctx.synflow


def jacob_cov_score(jac, k=JACOB_K):
    """-sum(log(v + k) + 1/(v + k)) over the eigenvalues v of the correlation matrix of the rows of `jac`.

    A row with zero variance (for example an all-zero Jacobian, when the output does not depend on the
    input) has no defined correlation. It is treated as the limit of identical rows: perfectly correlated
    (1) with every other zero-variance row, and uncorrelated (0) with the others. A batch whose Jacobian
    rows are all constant gets the worst (lowest) score of any batch of that size instead of NaN.
    """
    j = jac.to(torch.float64)
    n, d = j.shape
    finite = torch.isfinite(j).all(dim=1)
    j = torch.where(finite[:, None], j, torch.zeros_like(j))
    centred = j - j.mean(dim=1, keepdim=True)
    norms = centred.norm(dim=1)
    scale = j.abs().amax(dim=1) if d else torch.zeros(n, dtype=j.dtype, device=j.device)
    degenerate = (~finite) | (norms <= 8 * torch.finfo(torch.float64).eps * math.sqrt(max(d, 1)) * scale)
    z = centred / torch.where(degenerate, torch.ones_like(norms), norms)[:, None]
    z[degenerate] = 0.0
    corr = (z @ z.T).clamp_(-1.0, 1.0)
    corr[degenerate[:, None] & degenerate[None, :]] = 1.0
    corr.fill_diagonal_(1.0)
    v = torch.linalg.eigvalsh(corr)
    return float(-(torch.log(v + k) + 1.0 / (v + k)).sum())


@register_metric("jacob_cov", needs=("input_jacobian",))
def jacob_cov(ctx):
    """Score of the correlation matrix of the per-image input Jacobians J = d(sum of outputs)/dx."""
    return jacob_cov_score(ctx.input_jacobian)


@register_metric("l2_norm")
def l2_norm(ctx):
    """Sum over Conv2d/Linear modules of the Frobenius norm of W."""
    with torch.no_grad():
        total = 0.0
        by_device = {}
        for layer in ctx.layers:
            w = layer.module.weight.detach()
            by_device.setdefault(w.device, []).append(w.norm().double())
        for norms in by_device.values():  # one device sync per device
            total += float(torch.stack(norms).sum())
        return total


@register_metric("naswot", needs=("relu_kernel",))
def naswot(ctx):
    """log|det K|, K = c c^T + (1-c)(1-c)^T over the binary codes c of every ReLU's input.

    K is an integer matrix, so |det K| >= 1 whenever K is nonsingular: a singular K (two images with the
    same codes, as in a network whose activations do not depend on the input) gets 0, the floor.
    """
    sign, logdet = torch.linalg.slogdet(ctx.relu_kernel)
    value = float(logdet)
    if float(sign) == 0.0 or not math.isfinite(value):
        return 0.0
    return max(value, 0.0)


@register_metric("ntk_trace", needs=("theta",))
def ntk_trace(ctx):
    """sqrt(trace(Theta) / N) of the per-image gradients of the true-class logits."""
    theta = ctx.theta.theta
    return math.sqrt(max(float(torch.diagonal(theta).sum()), 0.0) / theta.shape[0])


def condition_number(eigvals, n, eps):
    """lambda_max / lambda_min; CONDNUM_SENTINEL where Theta is singular to its working precision
    (lambda_min <= N * eps * lambda_max, which includes lambda_min <= 0) or the ratio is not finite."""
    lmin, lmax = float(eigvals[0]), float(eigvals[-1])
    if not (math.isfinite(lmin) and math.isfinite(lmax)) or lmax <= 0 or lmin <= n * eps * lmax:
        return CONDNUM_SENTINEL
    value = lmax / lmin
    return value if math.isfinite(value) else CONDNUM_SENTINEL


@register_metric("condnum", needs=("theta", "theta_eigvals"))
def condnum(ctx):
    """lambda_max(Theta) / lambda_min(Theta) (see condition_number for the degenerate cases)."""
    return condition_number(ctx.theta_eigvals, ctx.batch_size, ctx.theta.eps)


@register_metric("params")
def params(ctx):
    """Number of parameters of the model (shared parameters counted once)."""
    return float(sum(p.numel() for p in ctx.model.parameters()))


@register_metric("flops", needs=("macs",))
def flops(ctx):
    """Multiply-adds per image of the Conv2d and Linear calls that actually run (bias additions excluded)."""
    return float(ctx.macs)


@register_metric("trainable_layers", needs=("loss_grads",))
def trainable_layers(ctx):
    """The number of Conv2d/Linear modules whose weight the loss trains (VKDNW's layer count): a module that
    does not run, or whose output reaches the loss only through `none` edges (a gradient of exact zeros), is
    no trainable layer."""
    with torch.no_grad():
        return float(sum(1 for g in ctx.loss_grads.grads if g is not None and bool(g.ne(0).any())))


@register_metric("meco", needs=("meco_terms",))
def meco(ctx):
    """Sum over module outputs of the first image of lambda_min of its channel correlation matrix."""
    return float(sum(ctx.meco_terms))


@register_metric("zico", needs=("half_batch_grads",))
def zico(ctx):
    """Sum over layers of log(sum over weights with sigma != 0 of mu / sigma), mu and sigma the mean of |g|
    and the (population) standard deviation of g over the two half-batch gradients g; a layer whose sum is
    0 adds nothing."""
    total = 0.0
    with torch.no_grad():
        for g1, g2 in ctx.half_batch_grads:
            if g1 is None or g2 is None:
                continue
            g = torch.stack([g1.reshape(-1), g2.reshape(-1)]).double()
            sigma = g.std(dim=0, unbiased=False)
            keep = sigma != 0
            inner = float((g.abs().mean(dim=0)[keep] / sigma[keep]).sum())
            if inner > 0:
                total += math.log(inner)
    return total


EPE_CLASS_LIMIT = 100  # above this many classes EPE-NAS compares the classes' scores pairwise


@register_metric("epe_nas", needs=("input_jacobian",))
def epe_nas(ctx):
    """EPE-NAS: per class c of the batch, s_c = sum log(|corrcoef(J_c)| + 1e-5) over the input Jacobians of
    its images (divided by their number above 100 classes); sum of |s_c| (above 100 classes: the mean over
    classes of the summed |s_c - s_c'|). NaN where a Jacobian row is constant (no correlation is defined)."""
    jac = ctx.input_jacobian.double()
    labels = ctx.targets
    classes = ctx.forward.classes
    scores = []
    for c in torch.unique(labels).tolist():
        rows = jac[labels == c]
        corr = torch.corrcoef(rows) if len(rows) > 1 else torch.ones(1, 1, dtype=rows.dtype, device=rows.device)
        s = float(torch.log(corr.abs() + 1e-5).sum())
        scores.append(s / len(rows) if classes > EPE_CLASS_LIMIT else s)
    if classes <= EPE_CLASS_LIMIT:
        return float(sum(abs(s) for s in scores))
    return float(sum(abs(a - b) for a in scores for b in scores) / classes)


def _az(part, doc):
    def metric(ctx):
        return ctx.az_scores[part]

    metric.__doc__ = doc
    register_metric(f"az_{part}", needs=("az_scores",))(metric)


_az("expressivity", "AZ-NAS: the summed entropy of the channel covariance spectra of the stem and cell outputs.")
_az("progressivity", "AZ-NAS: the smallest increase of that entropy from one feature to the next.")
_az("trainability", "AZ-NAS: the mean over consecutive features of -s - 1/s + 2, s the largest singular value "
    "of the block's Jacobian probed by a Rademacher vector.")


@register_metric("swap", needs=("swap_patterns",))
def swap(ctx):
    """SWAP: the mean number of distinct activation patterns of 16 images over 32 Gaussian re-inits."""
    return float(ctx.swap_patterns)


@register_metric("zen", needs=("zen",))
def zen_score(ctx):
    """Zen-score: log of the feature map's response to a small input perturbation plus the BatchNorms'
    log scaling, on a Gaussian re-init (hnas.metrics.zen)."""
    return float(ctx.zen)


# VKDNW_single orders by (dim, entropy) lexicographically, as its reference's dense rank of the pair does; the
# entropy of 9 deciles is at most log 9 < VKDNW_DIM_WEIGHT, so dim * VKDNW_DIM_WEIGHT + entropy keeps that order.
VKDNW_DIM_WEIGHT = 10.0


@register_metric("vkdnw", needs=("vkdnw",))
def vkdnw_entropy(ctx):
    """VKDNW: the entropy of the normalised deciles of the Fisher spectrum of one scalar per parameter
    tensor, on a Kaiming re-init in eval mode with Gaussian input (hnas.metrics.vkdnw)."""
    return float(ctx.vkdnw["entropy"])


@register_metric("vkdnw_single", needs=("vkdnw",))
def vkdnw_single(ctx):
    """VKDNW_single: the number of parameter tensors that run, ties broken by the VKDNW entropy."""
    return VKDNW_DIM_WEIGHT * ctx.vkdnw["dim"] + float(ctx.vkdnw["entropy"])


@register_metric("te_nas_lr", needs=("linear_regions",))
def te_nas_lr(ctx):
    """TE-NAS's linear regions: the number of distinct ReLU codes of 32 Gaussian images on a Kaiming re-init."""
    return float(ctx.linear_regions)
