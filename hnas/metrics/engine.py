"""The metric engine: a registry of metrics and of the shared quantities they are computed from.

A *metric* is one decorated function that turns shared quantities into a float::

    @register_metric("snip", needs=("loss_grads",))
    def snip(ctx):
        return sum(...)  # reads ctx.loss_grads

A *quantity* is an intermediate result several metrics share (the train-mode forward pass, the loss
gradients, the Hessian-vector product, the NTK Gram matrix Theta, the input Jacobian, ...). Each one is
registered with the quantities it needs itself. `compute_metrics` takes the union of what the requested
metrics need, closes it under dependencies (the *plan*), computes every planned quantity exactly once in
registration order (which is a topological order: a quantity may only need quantities registered before
it) and then calls the metric functions. Providers look at the plan to fuse work into one pass: the forward
pass records layer inputs only when Theta is planned, the loss backward pass collects the Fisher statistics
only when they are planned and keeps its graph only when the Hessian-vector product is planned, and so on.

The model is never modified: gradients are taken with `torch.autograd.grad` (the model's `.grad` is never
written), frozen weights are replaced by detached aliases for the duration (their `requires_grad` stays
False), buffers by clones (BatchNorm running statistics stay as they were), and the train/eval flags, the
substituted tensors and every hook are restored or removed afterwards, also on error.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from hnas.errors import HnasError
from hnas.registry import Registry

METRICS = Registry("metric")
QUANTITIES: dict[str, "Quantity"] = {}

# Module types whose weights the metrics sum over (DESIGN.md section 3: "every Conv2d and Linear layer").
LAYER_TYPES = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class Metric:
    name: str
    fn: object
    needs: tuple


@dataclass(frozen=True)
class Quantity:
    name: str
    fn: object
    needs: tuple
    uses_graph: bool  # runs a backward pass through the shared forward graph


def register_metric(name, needs=()):
    """Decorator: register `fn(ctx) -> float` as metric `name`, computed from the quantities in `needs`."""
    needs = tuple(needs)
    for q in needs:
        if q not in QUANTITIES:
            raise ValueError(f"metric '{name}' needs unknown quantity '{q}'; known: {', '.join(QUANTITIES)}")

    def add(fn):
        METRICS.register(name)(Metric(name, fn, needs))
        return fn

    return add


def register_quantity(name, needs=(), uses_graph=False):
    """Decorator: register `fn(ctx) -> value` as shared quantity `name` (needs only earlier quantities)."""
    needs = tuple(needs)
    for q in needs:
        if q not in QUANTITIES:
            raise ValueError(f"quantity '{name}' needs '{q}', which must be registered before it")

    def add(fn):
        if name in QUANTITIES:
            raise ValueError(f"quantity '{name}' is registered twice")
        QUANTITIES[name] = Quantity(name, fn, needs, uses_graph)
        return fn

    return add


def list_metrics():
    """Names of all registered metrics, sorted."""
    return METRICS.names()


def plan_for(names):
    """The set of quantities needed (directly or not) by the metrics `names`."""
    plan, stack = set(), [q for n in names for q in METRICS.get(n).needs]
    while stack:
        q = stack.pop()
        if q not in plan:
            plan.add(q)
            stack.extend(QUANTITIES[q].needs)
    return plan


@dataclass
class Layer:
    """One Conv2d / Linear module of the model, with the tensors the engine feeds it."""

    index: int
    name: str
    module: nn.Module
    weight: torch.Tensor | None = None  # the leaf the forward pass used (the parameter, or its alias)
    bias: torch.Tensor | None = None


@dataclass
class Options:
    max_chunk: int | None = None  # at most this many images per chunk in per-image computations
    chunk_bytes: int = 64 * 2**20  # memory budget of one per-image temporary (gathered windows, gradients)
    oom_retry: bool = False  # on out-of-memory in the per-image stage, shrink the chunks and retry


class Context:
    """Lazily computed shared quantities for one (model, inputs, targets) and one plan.

    Metric and quantity functions read `ctx.<quantity>`; a quantity is computed on first access, once.
    Reading a quantity outside the plan is an error: every metric must declare what it uses, so that the
    engine can fuse passes.
    """

    def __init__(self, model, inputs, targets, plan, options):
        self.model = model
        self.inputs = inputs
        self.targets = targets
        self.device = inputs.device
        self.plan = frozenset(plan)
        self.options = options
        self.batch_size = inputs.shape[0]
        # one traversal of the module tree each (a reference-layout NB201 network has 1,144 modules)
        self.named_modules = list(model.named_modules())
        self.named_parameters = list(model.named_parameters())
        self.named_buffers = list(model.named_buffers())
        self.layers = [
            Layer(i, name, m)
            for i, (name, m) in enumerate((n, m) for n, m in self.named_modules if isinstance(m, LAYER_TYPES))
        ]
        self._values = {}
        self._graph_users = [q for q in QUANTITIES if q in self.plan and QUANTITIES[q].uses_graph]

    def planned(self, name):
        return name in self.plan

    def graph_needed_after(self, name):
        """True when a planned quantity after `name` still runs a backward pass through the shared graph."""
        users = self._graph_users
        return name in users and users.index(name) < len(users) - 1

    def __getattr__(self, name):
        if name.startswith("_") or name not in QUANTITIES:
            raise AttributeError(name)
        if name not in self._values:
            if name not in self.plan:
                raise RuntimeError(
                    f"quantity '{name}' was read but no requested metric declared it in `needs`"
                )
            self._values[name] = QUANTITIES[name].fn(self)
            if QUANTITIES[name].uses_graph and self._graph_users and name == self._graph_users[-1]:
                self.release_graph()
        return self._values[name]

    def release_graph(self):
        fwd = self._values.get("forward")
        if fwd is not None:
            fwd.release()


# ----------------------------------------------------------------------------------------------------------
# Guarding the model


def _is_dropout(m):
    return isinstance(m, (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout))


@contextlib.contextmanager
def _modes(modules, training_of):
    flags = [(m, m.training) for m in modules]
    try:
        for m, _ in flags:  # (the instance dict directly: nn.Module.__setattr__ is slow on 1,000 modules)
            m.__dict__["training"] = training_of(m)
        yield
    finally:
        for m, flag in flags:
            m.__dict__["training"] = flag


def training_mode(model, modules=None):
    """Train mode (batch-statistics BatchNorm) with dropout off; every module's flag restored afterwards."""
    return _modes(model.modules() if modules is None else modules, lambda m: not _is_dropout(m))


def eval_mode(model, modules=None):
    """Eval mode (running-statistics BatchNorm where it tracks them); every module's flag restored afterwards."""
    return _modes(model.modules() if modules is None else modules, lambda m: False)


@contextlib.contextmanager
def removing(handles):
    try:
        yield handles
    finally:
        for h in handles:
            h.remove()
        handles.clear()


def logits_of(output):
    """The logits tensor of a model output (a tensor, or the first item of a tuple/list, or dict['logits'])."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    raise HnasError(
        f"the model returned {type(output).__name__}; the metrics need a logits tensor of shape "
        "(batch, classes), or a tuple/list whose first item is one, or a dict with key 'logits'"
    )


def tensor_substitutes(ctx, weights_require_grad):
    """{id(original): substitute} for the model's tensors, and the leaves of Conv2d/Linear weights/biases.

    Parameters are used as they are (autograd.grad never touches `.grad`), except those on another device
    than the inputs (moved copies) and frozen Conv2d/Linear weights and biases when gradients are needed
    (detached aliases that require grad). Buffers are always substituted by clones, so that BatchNorm's
    running statistics stay as they were.
    """
    dev = ctx.device
    layer_tensors = set()
    for layer in ctx.layers:
        for attr in ("weight", "bias"):
            t = getattr(layer.module, attr, None)
            if isinstance(t, torch.Tensor):
                layer_tensors.add(id(t))
    subs = {}
    for _, p in ctx.named_parameters:
        if id(p) in subs:
            continue
        leaf = p
        if p.device != dev:
            leaf = p.detach().to(dev)
        if weights_require_grad and id(p) in layer_tensors and not leaf.requires_grad:
            leaf = leaf.detach().requires_grad_(True)
        if leaf is not p:
            subs[id(p)] = leaf
    for _, b in ctx.named_buffers:
        subs[id(b)] = b.detach().to(dev, copy=True)
    for layer in ctx.layers:
        w, b = getattr(layer.module, "weight", None), getattr(layer.module, "bias", None)
        layer.weight = subs.get(id(w), w) if isinstance(w, torch.Tensor) else None
        layer.bias = subs.get(id(b), b) if isinstance(b, torch.Tensor) else None
    return subs


@contextlib.contextmanager
def substituted(named_modules, subs):
    """The model's parameters and buffers replaced by `subs` ({id(tensor): substitute}) for the duration.

    Like torch.func.functional_call, but keyed by tensor identity (tied tensors follow) and without its
    per-call traversals of the module tree; the originals are put back in every case.
    """
    undo = []
    try:
        for _, module in named_modules:
            for store in (module._parameters, module._buffers):
                for name, t in store.items():
                    if t is not None and id(t) in subs:
                        undo.append((store, name, t))
                        store[name] = subs[id(t)]
        yield
    finally:
        for store, name, t in reversed(undo):
            store[name] = t


# ----------------------------------------------------------------------------------------------------------
# Public entry point


def _check_inputs(model, inputs, targets):
    if not isinstance(model, nn.Module):
        raise HnasError(f"compute_metrics needs a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2 or inputs.shape[0] < 1:
        raise HnasError("inputs must be a batched tensor of shape (batch, ...)")
    if inputs.is_floating_point() and not bool(torch.isfinite(inputs).all()):
        bad = int((~torch.isfinite(inputs)).sum())
        raise HnasError(f"inputs hold {bad} NaN or infinite value(s): every metric would be meaningless; "
                        "check the data and its normalisation")
    if not isinstance(targets, torch.Tensor) or targets.dim() != 1 or targets.dtype.is_floating_point:
        raise HnasError("targets must be a 1-D tensor of class indices, one per input")
    if targets.shape[0] != inputs.shape[0]:
        raise HnasError(f"{inputs.shape[0]} inputs but {targets.shape[0]} targets")
    if torch.is_inference_mode_enabled():
        raise HnasError("compute_metrics needs autograd: call it outside torch.inference_mode()")


def compute_metrics(model, inputs, targets, names, *, max_chunk=None, chunk_bytes=None, oom_retry=None):
    """Compute the metrics `names` (a name or a list of names) of `model` on one labelled batch.

    Returns {name: float} in the order requested. Runs on the device of `inputs`; the model is not modified
    (parameters, buffers, gradients, requires_grad and train/eval flags are as before, even on error).

    `max_chunk` / `chunk_bytes` bound the per-image computations (Theta, ...); they never change a value.
    `oom_retry` (default: on for CUDA) halves the chunk and retries when a per-image stage runs out of memory.
    """
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise HnasError(f"names must be a metric name or a list of them, got {names!r}; see list_metrics()")
    names = list(dict.fromkeys(names))
    metrics = [METRICS.get(n) for n in names]  # unknown name -> HnasError listing the choices
    _check_inputs(model, inputs, targets)
    options = Options(max_chunk=max_chunk)
    if chunk_bytes is not None:
        options.chunk_bytes = int(chunk_bytes)
    options.oom_retry = inputs.device.type == "cuda" if oom_retry is None else bool(oom_retry)
    if max_chunk is not None and int(max_chunk) < 1:
        raise HnasError("max_chunk must be a positive number of images")

    targets = targets.to(inputs.device)
    ctx = Context(model, inputs, targets, plan_for(names), options)
    rng_devices = [inputs.device.index or 0] if inputs.device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), torch.enable_grad():
        try:
            for q in QUANTITIES:  # registration order: dependencies first, passes in a fixed order
                if q in ctx.plan:
                    getattr(ctx, q)
            ctx.release_graph()
            return {m.name: float(m.fn(ctx)) for m in metrics}
        finally:
            ctx.release_graph()
            ctx._values.clear()
