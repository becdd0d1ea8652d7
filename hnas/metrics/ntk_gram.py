"""Per-image gradients of Conv2d / Linear layers, reduced at once into an N x N Gram matrix.

For a layer call with input A (per image n: A_n) and gradient B of some scalar with respect to the call's
output, image n's own contribution to the weight gradient is G_n = B_n (x) A_n (for a convolution: the
correlation of B_n with the unfolded A_n), and to the bias gradient the sum of B_n over positions. The NTK
Gram matrix is Theta[n, m] = sum over layers of <G_n, G_m>. The helpers here add one layer's contribution to
Theta without ever holding more than one layer's per-image gradients (and, for a huge layer, not even that:
they work through blocks of output channels), and bound their temporaries by a byte budget, so that the
image chunking never changes a value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _chunk_size(per_image_bytes, n, budget, max_chunk):
    size = max(1, int(budget // max(per_image_bytes, 1)))
    if max_chunk is not None:
        size = min(size, int(max_chunk))
    return max(1, min(size, n))


def _gram_into(theta, g):
    g = g.reshape(g.shape[0], -1)
    theta += g @ g.T  # in the gradients' dtype, accumulated into float64


class GramAccumulator:
    """Adds the per-image gradient Gram matrices of layer calls to `theta` (float64, N x N)."""

    def __init__(self, n, device, chunk_bytes, max_chunk):
        self.theta = torch.zeros(n, n, dtype=torch.float64, device=device)
        self.chunk_bytes = chunk_bytes
        self.max_chunk = max_chunk
        self.pending = {}  # layer index -> [weight grads (N, ...), bias grads (N, O)] of multi-call layers

    # -- single-call layers: straight into theta ----------------------------------------------------------

    def add_call(self, module, a, b, has_bias):
        if isinstance(module, nn.Conv2d):
            self._conv_gram(module, a, b)
        else:
            self._linear_gram(a, b)
        if has_bias:
            _gram_into(self.theta, self._bias_grads(module, b))

    # -- layers called several times: per-image gradients summed over calls first ------------------------

    def add_partial(self, key, module, a, b, has_bias):
        gw = self._conv_grads(module, a, b) if isinstance(module, nn.Conv2d) else self._linear_grads(a, b)
        gb = self._bias_grads(module, b) if has_bias else None
        if key in self.pending:
            acc = self.pending[key]
            acc[0] += gw
            if gb is not None:
                acc[1] += gb
        else:
            self.pending[key] = [gw, gb]

    def finish(self, key):
        gw, gb = self.pending.pop(key)
        _gram_into(self.theta, gw)
        if gb is not None:
            _gram_into(self.theta, gb)

    def finish_all(self):
        for key in list(self.pending):
            self.finish(key)

    # -- the per-layer kernels -----------------------------------------------------------------------------

    @staticmethod
    def _bias_grads(module, b):
        if isinstance(module, nn.Conv2d):
            return b.sum(dim=(2, 3))
        return b.reshape(b.shape[0], -1, b.shape[-1]).sum(dim=1)

    def _conv_blocks(self, module, n, out_ch, k, itemsize):
        """Blocks (g0, g1, o0, o1) of groups / output channels whose per-image gradients fit the budget."""
        groups = module.groups
        og = out_ch // groups
        units = groups if groups > 1 else out_ch  # a unit is a group, or one output channel if ungrouped
        unit_bytes = n * (og if groups > 1 else 1) * k * itemsize
        per_block = max(1, int(self.chunk_bytes // max(unit_bytes, 1)))
        blocks = []
        for u0 in range(0, units, per_block):
            u1 = min(units, u0 + per_block)
            blocks.append((u0, u1, 0, og) if groups > 1 else (0, 1, u0, u1))
        return blocks

    def _conv_block_grads(self, module, a, b, g0, g1, o0, o1):
        """Per-image weight gradients (N, block's output channels, C/groups*kh*kw) of one block.

        A 1x1 convolution's are one batched matrix product. Otherwise the images are folded into the
        channels and groups of one convolution: its weight gradient with n*groups groups is the stack of
        the n per-image weight gradients (no im2col copy; measured faster here than F.unfold or gathered
        windows followed by a batched product).
        """
        n, groups = a.shape[0], module.groups
        cg, og = a.shape[1] // groups, b.shape[1] // groups
        gb = g1 - g0
        if groups > 1:
            a_sub, b_sub = a[:, g0 * cg : g1 * cg], b[:, g0 * og : g1 * og]
        else:
            a_sub, b_sub = a, b[:, o0:o1]
        ob = b_sub.shape[1] // gb
        kh, kw = module.kernel_size
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
            a_sub = F.pad(a_sub, module._reversed_padding_repeated_twice, mode=mode)
            padding = [0, 0]
        else:
            padding = list(module.padding)
        stride, dilation = list(module.stride), list(module.dilation)
        ho, wo = b.shape[2], b.shape[3]
        pointwise = (kh, kw) == (1, 1) and stride == [1, 1] and padding == [0, 0]
        per_image = gb * ob * cg * kh * kw * b.element_size()
        step = _chunk_size(per_image, n, self.chunk_bytes, self.max_chunk)
        out = None if step >= n else torch.empty(n, gb * ob, cg * kh * kw, dtype=b.dtype, device=b.device)
        for s in range(0, n, step):
            e = min(n, s + step)
            m = e - s
            if pointwise:
                bb = b_sub[s:e].reshape(m, gb, ob, ho * wo)
                u = a_sub[s:e].reshape(m, gb, cg, ho * wo)
                gw = torch.matmul(bb, u.transpose(-1, -2)).reshape(m, gb * ob, cg)
            else:
                aa = a_sub[s:e].reshape(1, m * gb * cg, *a_sub.shape[2:])
                bb = b_sub[s:e].reshape(1, m * gb * ob, ho, wo)
                # only the weight's shape matters: the weight gradient does not read the weight
                w = b.new_empty(m * gb * ob, cg, kh, kw)
                gw = torch.ops.aten.convolution_backward(
                    bb, aa, w, None, stride, padding, dilation, False, [0, 0], m * gb, [False, True, False],
                )[1].reshape(m, gb * ob, cg * kh * kw)
            if out is None:
                return gw
            out[s:e] = gw
        return out

    def _conv_gram(self, module, a, b):
        n, out_ch = b.shape[0], b.shape[1]
        k = module.weight.shape[1] * module.kernel_size[0] * module.kernel_size[1]
        for g0, g1, o0, o1 in self._conv_blocks(module, n, out_ch, k, b.element_size()):
            _gram_into(self.theta, self._conv_block_grads(module, a, b, g0, g1, o0, o1))

    def _conv_grads(self, module, a, b):
        groups, og = module.groups, b.shape[1] // module.groups
        return self._conv_block_grads(module, a, b, 0, groups, 0, og)

    @staticmethod
    def _rows(a, b):
        n = a.shape[0]
        return a.reshape(n, -1, a.shape[-1]), b.reshape(n, -1, b.shape[-1])

    def _linear_gram(self, a, b):
        a3, b3 = self._rows(a, b)
        n, t, i = a3.shape
        o = b3.shape[-1]
        if t == 1:  # <B_n A_n^T, B_m A_m^T> = (B_n . B_m)(A_n . A_m)
            a2, b2 = a3[:, 0], b3[:, 0]
            self.theta += (a2 @ a2.T) * (b2 @ b2.T)
            return
        explicit = n * t * o * i + n * n * o * i
        kernel = (n * t) ** 2 * (o + i)
        if kernel < explicit and (n * t) ** 2 * a3.element_size() * 2 <= self.chunk_bytes:
            fa, fb = a3.reshape(n * t, i), b3.reshape(n * t, o)
            prod = (fa @ fa.T) * (fb @ fb.T)
            self.theta += prod.reshape(n, t, n, t).sum(dim=(1, 3))
            return
        step = max(1, int(self.chunk_bytes // max(n * i * a3.element_size(), 1)))
        for o0 in range(0, o, step):
            _gram_into(self.theta, b3[:, :, o0 : o0 + step].transpose(1, 2) @ a3)

    def _linear_grads(self, a, b):
        a3, b3 = self._rows(a, b)
        return b3.transpose(1, 2) @ a3
