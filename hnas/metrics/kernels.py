"""The engine's own kernels for its shared forward graph (`EngineKernels`, a TorchFunctionMode):

- a cheaper exact double backward for convolution and training-mode BatchNorm (GraSP's Hessian-vector
  product differentiates the backward pass);
- average pooling on the CPU as a depthwise convolution (`avg_pool_as_conv`), about ten times faster than
  PyTorch's channels-first CPU kernel.

With a `SecondOrderState`, every `F.conv2d` and training-mode `F.batch_norm` call (what `nn.Conv2d` and
`nn.BatchNorm*` call) goes through an autograd Function whose backward pass is itself an autograd Function
with a hand-written double backward; other calls pass through untouched. The first-order
kernels are PyTorch's own, so first-order gradients are bitwise the same; second-order values agree up to
float rounding (checked with gradgradcheck in the tests).

- Convolution: the double backward takes one convolution and one `convolution_backward` call. In the
  engine's HVP, which runs along the weights themselves (ggW = W), conv(ggx, W) + conv(x, W) is the single
  convolution conv(ggx + x, W), and dgrad(go, ggW) = dgrad(go, W) is the first-order input gradient,
  saved from the first backward pass. PyTorch's generic version runs four convolutions.
- BatchNorm: closed-form second derivatives in about ten elementwise passes (the per-channel sums it needs
  come from the first-order kernel), against some two dozen in PyTorch's generic formula.

`SecondOrderState` is shared by the Functions of one forward graph: the engine switches off parameter
gradients in passes that need activation gradients only (a custom Function cannot tell which of its inputs
the current pass asks for) and announces the HVP along the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def _shape(x):
    return [1, -1] + [1] * (x.dim() - 2)


def _dims(x):
    return [0] + list(range(2, x.dim()))


class _BatchNormTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, state):
        out, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        ctx.state = state
        return out

    @staticmethod
    def backward(ctx, gy):
        x, weight, mean, invstd = ctx.saved_tensors
        need = ctx.needs_input_grad
        want = ctx.state.parameter_grads
        gx, gw, gb = _BatchNormBackward.apply(
            gy, x, weight, mean, invstd, ctx.eps, need[0], need[1] and want, need[2] and want
        )
        return gx, gw, gb, None, None, None, None, None


class _BatchNormBackward(torch.autograd.Function):
    """(gy, x, weight) -> (gx, g_weight, g_bias) of training-mode batch norm; mean/invstd are functions of x.

    The double backward, per channel over the M = numel / C values, with r = invstd, x^ = (x - mean) r,
    a = mean(gy), b = mean(gy x^) (both from the first-order kernel's own sums), and for the incoming ggx:
    mg = mean(ggx), p = mean(ggx x^), q = mean(ggx gy) - a mg:
        d/dgy = g r (ggx - mg - x^ p) + ggw x^ + ggb
        d/dx  = g r^2 (x^ (3 b p - q) - p (gy - a) - b (ggx - mg)) + ggw r (gy - a - x^ b)
        d/dg  = r M (q - b p)
    with g the BatchNorm weight (1 without one). Each is one to three fused passes (x^ is affine in x).
    """

    @staticmethod
    def forward(ctx, gy, x, weight, mean, invstd, eps, need_x, need_w, need_b):
        gx, sum_gy_xhat, sum_gy = torch.ops.aten.native_batch_norm_backward(
            gy, x, weight, None, None, mean, invstd, True, eps, [need_x, True, True]
        )
        m = x.numel() // x.shape[1]
        ctx.save_for_backward(gy, x, weight, mean, invstd, sum_gy / m, sum_gy_xhat / m)
        ctx.set_materialize_grads(False)  # an output nothing used gets None in backward, not zeros
        return gx, sum_gy_xhat if need_w else None, sum_gy if need_b else None

    @staticmethod
    def backward(ctx, ggx, ggw, ggb):
        gy, x, weight, mean, invstd, a, b = ctx.saved_tensors
        shp, dims = _shape(x), _dims(x)
        m = x.numel() // x.shape[1]
        r = invstd
        gr = weight * r if weight is not None else r
        if ggx is not None:
            mg = ggx.mean(dims)
            p = r * ((ggx * x).mean(dims) - mean * mg)
            q = (ggx * gy).mean(dims) - a * mg
        g_gy = g_x = g_w = None
        need_gy, need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if need_gy:
            # coefficient of x (x^ = r x - r mean) and constant term, per channel
            cx = -gr * p * r if ggx is not None else torch.zeros_like(r)
            const = -gr * mg if ggx is not None else torch.zeros_like(r)
            if ggw is not None:
                cx = cx + ggw * r
            const = const - cx * mean
            if ggb is not None:
                const = const + ggb
            if ggx is not None:
                g_gy = torch.addcmul(const.view(shp), ggx, gr.view(shp))
                g_gy.addcmul_(x, cx.view(shp))
            else:
                g_gy = torch.addcmul(const.view(shp), x, cx.view(shp))
        if need_x and (ggx is not None or ggw is not None):
            gr2 = gr * r
            if ggx is not None:
                c1 = gr2 * (3 * b * p - q)  # x^
                c2 = -gr2 * p  # gy
                c4 = gr2 * (p * a + b * mg)  # constant
            else:
                c1 = c2 = c4 = torch.zeros_like(r)
            if ggw is not None:
                c1 = c1 - ggw * r * b
                c2 = c2 + ggw * r
                c4 = c4 - ggw * r * a
            g_x = torch.addcmul((c4 - c1 * r * mean).view(shp), x, (c1 * r).view(shp))
            g_x.addcmul_(gy, c2.view(shp))
            if ggx is not None:
                g_x.addcmul_(ggx, (-gr2 * b).view(shp))
        if need_w and weight is not None and ggx is not None:
            g_w = r * m * (q - b * p)
        return g_gy, g_x, g_w, None, None, None, None, None, None


_SIG = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_DEFAULTS = {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5}


def _pair(v):
    return [int(v), int(v)] if isinstance(v, int) else [int(t) for t in v]


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, state):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups, bias is not None)
        ctx.state = state
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, go):
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        want = ctx.state.parameter_grads  # off in passes that only need activation gradients
        gx, gw, gb = _Conv2dBackward.apply(
            go, x, weight, ctx.conf, ctx.state, need[0], need[1] and want, need[2] and want and ctx.conf[4]
        )
        return gx, gw, gb, None, None, None, None, None


class _Conv2dBackward(torch.autograd.Function):
    """(go, x, W) -> (gx, gW, gb) of a convolution, with a two-kernel double backward."""

    @staticmethod
    def forward(ctx, go, x, weight, conf, state, need_x, need_w, need_b):
        stride, padding, dilation, groups, has_bias = conf
        ctx.state = state
        gx, gw, gb = torch.ops.aten.convolution_backward(
            go, x, weight, [weight.shape[0]] if has_bias else None, stride, padding, dilation,
            False, [0, 0], groups, [need_x, need_w, need_b],
        )
        ctx.save_for_backward(go, x, weight, gx)
        ctx.conf = conf
        ctx.set_materialize_grads(False)
        return gx, gw, gb

    @staticmethod
    def backward(ctx, ggx, ggw, ggb):
        go, x, weight, gx = ctx.saved_tensors
        # In the engine's HVP pass the cotangent of every weight gradient is the weight itself (it
        # differentiates sum_l W_l . g_l); elsewhere check.
        along_weight = ggw is not None and (ctx.state.along_weights or torch.equal(ggw, weight))
        stride, padding, dilation, groups, _ = ctx.conf
        need_go, need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        g_go = g_x = g_w = None
        if need_go:
            # d/d(go) of <ggx, dgrad(go, W)> + <ggw, wgrad(x, go)> = conv(ggx, W) + conv(x, ggw)
            if ggx is not None and along_weight:
                # the HVP in the direction of the weights themselves: conv(ggx, W) + conv(x, W) = conv(ggx + x, W)
                g_go = F.conv2d(ggx + x, weight, None, stride, padding, dilation, groups)
            elif ggx is not None and ggw is not None:
                n, c = x.shape[:2]
                cg = c // groups
                inp = torch.stack(
                    (ggx.reshape(n, groups, cg, *x.shape[2:]), x.reshape(n, groups, cg, *x.shape[2:])), dim=2
                ).reshape(n, 2 * c, *x.shape[2:])
                g_go = F.conv2d(inp, torch.cat((weight, ggw), dim=1), None, stride, padding, dilation, groups)
            elif ggx is not None:
                g_go = F.conv2d(ggx, weight, None, stride, padding, dilation, groups)
            elif ggw is not None:
                g_go = F.conv2d(x, ggw, None, stride, padding, dilation, groups)
            if ggb is not None:
                shaped = ggb.view(1, -1, 1, 1)
                g_go = shaped.expand_as(go).clone() if g_go is None else g_go + shaped
        # d/dx of <ggw, wgrad(x, go)> = dgrad(go, ggw); d/dW of <ggx, dgrad(go, W)> = wgrad(ggx, go):
        # one convolution_backward call with input ggx and weight ggw gives both.
        want_x = need_x and ggw is not None
        want_w = need_w and ggx is not None
        if want_x and along_weight and gx is not None:
            g_x, want_x = gx, False  # dgrad(go, W) is the first-order input gradient itself
        if want_x or want_w:
            gi, gw, _ = torch.ops.aten.convolution_backward(
                go, ggx if ggx is not None else x, ggw if ggw is not None else weight, None, stride, padding,
                dilation, False, [0, 0], groups, [want_x, want_w, False],
            )
            g_x = gi if want_x else g_x
            g_w = gw if want_w else None
        return g_go, g_x, g_w, None, None, None, None, None


class SecondOrderState:
    """Shared by the Functions of one forward graph. The engine turns `parameter_grads` off for backward
    passes that need activation gradients only (a custom Function cannot tell which of its inputs the
    current pass asks for)."""

    def __init__(self):
        self.parameter_grads = True
        self.along_weights = False  # set while differentiating sum_l W_l . g_l (the HVP along the weights)


def _counts(size, k, s, p):
    """How many of the `size` input positions each output position's window covers (padding excluded)."""
    return [min(i * s - p + k, size) - max(i * s - p, 0) for i in range((size + 2 * p - k) // s + 1)]


_POOL_SIG = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")


def plain_conv(x, weight, stride, padding, groups):
    """The convolution `avg_pool_as_conv` runs outside the HVP: PyTorch's own, no bias, no dilation."""
    return F.conv2d(x, weight, None, stride, padding, 1, groups)


def avg_pool_as_conv(bound, conv):
    """F.avg_pool2d (floor mode, no divisor override) as a depthwise convolution of ones, divided by the
    window counts (equal to PyTorch's kernel up to float rounding), which is faster on the CPU than its
    channels-first kernel (0.35 ms against 3.6 ms for a 3x3 window over 64 x 16 x 32 x 32, two threads).
    `conv(x, weight, stride, padding, groups)` runs the convolution. None where this does not apply."""
    x = bound["input"]
    if bound.get("ceil_mode") or bound.get("divisor_override") is not None or x.dim() != 4:
        return None
    if not x.is_floating_point() or x.device.type != "cpu":
        return None
    k = _pair(bound["kernel_size"])
    stride = bound.get("stride")
    s = _pair(stride) if stride not in (None, [], ()) else k
    p = _pair(bound.get("padding", 0))
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        return None  # invalid for pooling: let PyTorch's own kernel say so
    c, h, w = x.shape[1:]
    weight = torch.ones(c, 1, k[0], k[1], dtype=x.dtype, device=x.device)
    summed = conv(x, weight, s, p, c)
    if bound.get("count_include_pad", True):
        return summed / (k[0] * k[1])
    rows = torch.tensor(_counts(h, k[0], s[0], p[0]), dtype=x.dtype, device=x.device)
    cols = torch.tensor(_counts(w, k[1], s[1], p[1]), dtype=x.dtype, device=x.device)
    return summed / torch.outer(rows, cols)


class EngineKernels(TorchFunctionMode):
    """Context manager for the engine's shared forward pass.

    `second_order` (a SecondOrderState): F.conv2d and training-mode F.batch_norm calls use the Functions
    above. `fast_pooling`: F.avg_pool2d on the CPU runs as a depthwise convolution (`avg_pool_as_conv`).
    """

    def __init__(self, second_order=None, fast_pooling=False):
        super().__init__()
        self.state = second_order
        self.fast_pooling = fast_pooling

    def _conv(self, x, weight, stride, padding, groups):
        if self.state is not None:
            return _Conv2d.apply(x, weight, None, stride, padding, [1, 1], groups, self.state)
        return plain_conv(x, weight, stride, padding, groups)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.avg_pool2d and self.fast_pooling:
            bound = dict(zip(_POOL_SIG, args))
            bound.update(kwargs)
            out = avg_pool_as_conv(bound, self._conv)
            if out is not None:
                return out
        if self.state is None:
            return func(*args, **kwargs)
        if func is F.conv2d:
            bound = dict(zip(("input", "weight", "bias", "stride", "padding", "dilation", "groups"), args))
            bound.update(kwargs)
            padding = bound.get("padding", 0)
            x = bound["input"]
            if not isinstance(padding, str) and x.dim() == 4:
                return _Conv2d.apply(
                    x, bound["weight"], bound.get("bias"), _pair(bound.get("stride", 1)), _pair(padding),
                    _pair(bound.get("dilation", 1)), int(bound.get("groups", 1)), self.state,
                )
        if func is F.batch_norm:
            bound = dict(_DEFAULTS)
            bound.update(zip(_SIG, args))
            bound.update(kwargs)
            if bound["training"]:
                x = bound["input"]
                F._verify_batch_size(x.size())
                return _BatchNormTrain.apply(
                    x, bound["weight"], bound["bias"], bound["running_mean"], bound["running_var"],
                    bound["momentum"] if bound["momentum"] is not None else 0.0, bound["eps"], self.state,
                )
        return func(*args, **kwargs)
