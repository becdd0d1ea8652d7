"""The shared quantities, in the order the engine computes them (each pass at most once).

forward        one train-mode forward pass of the batch (hooks record what the planned quantities need)
loss_grads     one backward pass of the mean cross-entropy L: dL/dW of every Conv2d/Linear weight, plus
               the Fisher statistics when planned; keeps its graph only when the HVP is planned
fisher_stats   (collected during the loss_grads pass)
hvp            H W, the Hessian times the weights (GraSP): one more backward pass, of sum_l W_l . g_l
theta          NTK Gram matrix, built layer by layer during one backward pass of sum_n f_n
theta_eigvals  its eigenvalues
input_jacobian d(sum of outputs)/d(inputs): one backward pass of input gradients only
relu_kernel    NASWOT's kernel of binary ReLU codes (collected during the forward pass)
macs           multiply-adds of the Conv2d/Linear calls of the forward pass, per image
synflow        its own float64 pass of one all-ones image, |parameters| substituted, BatchNorms bypassed
"""

from __future__ import annotations

import contextlib
import copy
import sys
import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.graph import get_gradient_edge

from hnas.errors import HnasError
from hnas.metrics.engine import (
    LAYER_TYPES,
    QUANTITIES,
    logits_of,
    register_quantity,
    removing,
    substituted,
    tensor_substitutes,
    training_mode,
)
from hnas.metrics.fastgrad2 import EngineKernels, SecondOrderState
from hnas.metrics.pergrad import GramAccumulator

_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


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
    rec.macs = macs[0] / n
    return rec


@dataclass
class LossGrads:
    grads: list  # per layer (ctx.layers order): dL/dW, detached, or None when the weight got no gradient
    fisher: list | None = None  # per layer: the Fisher score (a float64 scalar tensor, or 0.0) when planned
    graph_grads: list | None = None  # per layer: dL/dW with its graph (create_graph), only for the HVP


def _weight_leaves(ctx):
    """Unique weight leaves (requiring grad) and, per layer, the index of its leaf in that list."""
    leaves, where, index = [], [], {}
    for layer in ctx.layers:
        w = layer.weight
        if w is None or not w.requires_grad:
            where.append(None)
            continue
        if id(w) not in index:
            index[id(w)] = len(leaves)
            leaves.append(w)
        where.append(index[id(w)])
    return leaves, where


@register_quantity("loss_grads", needs=("forward",), uses_graph=True)
def loss_grads(ctx):
    """dL/dW for every Conv2d/Linear weight from one backward pass of the mean cross-entropy."""
    fwd = ctx.forward
    loss = F.cross_entropy(fwd.logits, ctx.targets)
    leaves, where = _weight_leaves(ctx)
    fisher = [0.0] * len(ctx.layers) if ctx.planned("fisher_stats") else None
    handles = []
    if fisher is not None:
        for call in fwd.calls:
            if call.edge is not None:
                handles.append(call.edge.node.register_prehook(_fisher_hook(call, fisher)))
    create = ctx.planned("hvp")
    retain = create or ctx.graph_needed_after("loss_grads")
    grads = [None] * len(leaves)
    if leaves and loss.requires_grad:
        with removing(handles):
            grads = torch.autograd.grad(loss, leaves, allow_unused=True, create_graph=create, retain_graph=retain)
    per_layer = [None if i is None else grads[i] for i in where]
    return LossGrads(
        grads=[None if g is None else g.detach() for g in per_layer],
        fisher=fisher,
        graph_grads=per_layer if create else None,
    )


def _fisher_hook(call, fisher):
    """Per output channel c: 0.5 * mean_n (sum over positions of a*d)^2, a = output, d = dL/da."""

    def hook(grad_outputs):
        d = grad_outputs[call.edge.output_nr]
        if d is None:
            return None
        with torch.no_grad():
            a = call.output_value()
            d = d.detach()
            if isinstance(call.layer.module, nn.Conv2d):
                g = (a * d).sum(dim=tuple(range(2, a.dim()))) if a.dim() > 2 else a * d
            else:
                prod = a * d
                g = prod.reshape(prod.shape[0], -1, prod.shape[-1]).sum(dim=1)
            per_channel = g.double().pow(2).mean(0).mul(0.5)
            fan_in = call.layer.module.weight[0].numel()
            fisher[call.layer.index] = fisher[call.layer.index] + per_channel.sum() * fan_in  # no device sync
        return None

    return hook


@register_quantity("fisher_stats", needs=("loss_grads",))
def fisher_stats(ctx):
    return ctx.loss_grads.fisher


@register_quantity("hvp", needs=("loss_grads",), uses_graph=True)
def hvp(ctx):
    """H w restricted to the weights, w = the weights themselves: one backward pass of sum_l W_l . g_l(theta).

    GraSP needs -sum W * (H g) = -g . (H W) (H is symmetric); the product with the weights is the cheaper
    one, since a convolution's second-order terms in the direction of its own weight share a kernel.
    """
    lg = ctx.loss_grads
    leaves, where = _weight_leaves(ctx)
    seen, z = set(), None
    for i, g in zip(where, lg.graph_grads):
        if i is None or g is None or i in seen or not g.requires_grad:
            continue
        seen.add(i)
        term = (leaves[i].detach() * g).sum()
        z = term if z is None else z + term
    lg.graph_grads = None  # the double-backward graph lives only as long as z
    if z is None:
        return [None] * len(ctx.layers)
    retain = ctx.graph_needed_after("hvp")
    state = ctx.forward.second_order
    if state is not None:
        state.along_weights = True
    try:
        hw = torch.autograd.grad(z, leaves, allow_unused=True, retain_graph=retain)
    finally:
        if state is not None:
            state.along_weights = False
    return [None if i is None or hw[i] is None else hw[i].detach() for i in where]


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


@register_quantity("input_jacobian", needs=("forward",), uses_graph=True)
def input_jacobian(ctx):
    """J[n] = d(sum of all outputs)/d(input n), flattened: one backward pass of input gradients."""
    fwd = ctx.forward
    if fwd.x is None or not fwd.x.requires_grad:
        raise HnasError("jacob_cov needs floating-point inputs (it differentiates the outputs by the inputs)")
    if not fwd.logits.requires_grad:
        return torch.zeros(fwd.x.shape[0], fwd.x[0].numel(), dtype=fwd.x.dtype, device=fwd.x.device)
    with fwd.activation_grads_only():
        (j,) = torch.autograd.grad(
            fwd.logits,
            fwd.x,
            torch.ones_like(fwd.logits),
            retain_graph=ctx.graph_needed_after("input_jacobian"),
            allow_unused=True,
        )
    if j is None:
        j = torch.zeros_like(fwd.x)
    return j.detach().reshape(j.shape[0], -1)


@register_quantity("relu_kernel", needs=("forward",))
def relu_kernel(ctx):
    return ctx.forward.relu_kernel


@register_quantity("macs", needs=("forward",))
def macs(ctx):
    return ctx.forward.macs


_BN = nn.modules.batchnorm._BatchNorm
_REMOVED_BY_MODEL = {}  # structural signature -> names of the BatchNorm modules without_batchnorm() removes
_REMOVED_LOCK = threading.Lock()


def _signature(model, named_modules):
    return (type(model), getattr(model, "layout", None), tuple((n, type(m)) for n, m in named_modules))


def synflow_removed_batchnorms(model, named_modules=None):
    """The BatchNorm modules synflow bypasses, or None when only the model's own copy will do.

    Without a `without_batchnorm()` method: every BatchNorm. With one (NB201's reference layout keeps the
    reduction blocks' BatchNorms, as the reference does), the set it removes, learnt once per module
    structure from one copy: a copy costs tens of milliseconds on a network with a thousand modules, and
    the set depends only on the structure (the architecture of a reference-layout NB201 network changes
    which op runs, not the modules). If the copy differs from the model by more than BatchNorms replaced,
    None: the copy itself is used every time.
    """
    named_modules = list(model.named_modules()) if named_modules is None else named_modules
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
