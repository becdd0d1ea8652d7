"""Synflow (quantity `synflow`): its own float64 forward+backward pass of one all-ones image, through the
model with |parameters| and |buffers| substituted and its BatchNorms bypassed (or, where that cannot be
done, through a BatchNorm-free copy)."""

from __future__ import annotations

import contextlib
import copy
import sys
import threading

import torch
from torch import nn

from hnas.errors import HnasError
from hnas.metrics.engine import LAYER_TYPES, logits_of, register_quantity, substituted, training_mode


_BN = nn.modules.batchnorm._BatchNorm
_REMOVED_BY_MODEL = {}  # structural signature -> names of the BatchNorm modules without_batchnorm() removes
_REMOVED_LOCK = threading.Lock()


def _signature(model, named_modules):
    return (type(model), getattr(model, "layout", None), tuple((n, type(m)) for n, m in named_modules))


def synflow_removed_batchnorms(model, named_modules):
    """The BatchNorm modules synflow bypasses, or None when only the model's own copy will do.

    Without a `without_batchnorm()` method: every BatchNorm. With one (NB201's reference layout keeps the
    reduction blocks' BatchNorms, as the reference does), the set it removes, learnt once per module
    structure from one copy: a copy costs tens of milliseconds on a network with a thousand modules, and
    the set depends only on the structure (the architecture of a reference-layout NB201 network changes
    which op runs, not the modules). If the copy differs from the model by more than BatchNorms replaced,
    None: the copy itself is used every time.
    """
    if not callable(getattr(model, "without_batchnorm", None)):
        return [m for _, m in named_modules if isinstance(m, _BN)]
    sig = _signature(model, named_modules)
    with _REMOVED_LOCK:
        names = _REMOVED_BY_MODEL.get(sig, False)
    if names is False:
        copy_modules = dict(model.without_batchnorm().named_modules())
        names = []
        for name, module in named_modules:
            other = copy_modules.get(name)
            if isinstance(module, _BN) and (other is None or not isinstance(other, _BN)):
                names.append(name)
            elif other is None or type(other) is not type(module):
                names = None
                break
        if names is not None and len(copy_modules) > len(named_modules):
            names = None
        with _REMOVED_LOCK:
            if len(_REMOVED_BY_MODEL) > 32:
                _REMOVED_BY_MODEL.clear()
            _REMOVED_BY_MODEL[sig] = names
    if names is None:
        return None
    modules = dict(named_modules)
    return [modules[n] for n in names]


def batchnorm_free_copy(model):
    """The model without BatchNorm as a copy: `model.without_batchnorm()`, else every BatchNorm -> Identity."""
    if callable(getattr(model, "without_batchnorm", None)):
        net = model.without_batchnorm()
        if net is model:
            raise HnasError("without_batchnorm() must return a copy, not the model itself")
        return net
    net = copy.deepcopy(model)
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, _BN):
                setattr(module, name, nn.Identity())
    return net


def _identity_forward(x, *args, **kwargs):
    return x


@contextlib.contextmanager
def _bypassed(modules):
    """Each module's forward returns its input, for the duration (an instance attribute, removed after)."""
    patched = []
    try:
        for m in modules:
            if "forward" not in m.__dict__:
                m.forward = _identity_forward
                patched.append(m)
        yield
    finally:
        for m in patched:
            del m.forward


@register_quantity("synflow")
def synflow(ctx):
    """sum over Conv2d/Linear weights of |W * dR/dW|, R = sum of outputs of the BatchNorm-free network with
    |parameters| and |buffers| in float64, for one all-ones image."""
    ones = torch.ones((1,) + tuple(ctx.inputs.shape[1:]), dtype=torch.float64, device=ctx.device)
    removed = synflow_removed_batchnorms(ctx.model, ctx.named_modules)
    if removed is None:  # the model's own copy, made float64 and positive
        net = batchnorm_free_copy(ctx.model).to(device=ctx.device, dtype=torch.float64)
        with torch.no_grad():
            for t in net.state_dict().values():
                if t.is_floating_point():
                    t.abs_()
        weights = []
        for m in net.modules():
            if isinstance(m, LAYER_TYPES):
                m.weight.requires_grad_(True)
                weights.append(m.weight)
        with training_mode(net):
            r = logits_of(net(ones)).sum()
    else:  # no copy: the model itself, fed |parameters| in float64, with those BatchNorms bypassed
        def positive(t):
            t = t.detach().to(ctx.device)
            return t.to(torch.float64).abs() if t.is_floating_point() else t.clone()

        subs = {}
        for _, t in ctx.named_parameters + ctx.named_buffers:
            if id(t) not in subs:
                subs[id(t)] = positive(t)
        weights = []
        for layer in ctx.layers:
            w = subs.get(id(layer.module.weight))
            if w is not None:
                if not w.requires_grad:
                    w.requires_grad_(True)
                weights.append(w)
        modules = [m for _, m in ctx.named_modules]
        with training_mode(ctx.model, modules), _bypassed(removed), substituted(ctx.named_modules, subs):
            r = logits_of(ctx.model(ones)).sum()
    grads = torch.autograd.grad(r, weights, allow_unused=True) if r.requires_grad else [None] * len(weights)
    total = torch.zeros((), dtype=torch.float64, device=ctx.device)
    with torch.no_grad():
        for w, g in zip(weights, grads):
            if g is not None:
                total += (w * g).abs().sum()
    total = float(total)
    if total != total:  # NaN: no defined value
        raise HnasError("synflow is NaN: the network produces NaN on an all-ones input")
    return min(total, sys.float_info.max)  # float64 holds up to 1.8e308; never return inf
