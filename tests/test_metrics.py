"""The metric engine on networks that are not NB201, against straightforward independent computations.

The independent computations follow the definitions of DESIGN.md section 3 one metric at a time, with
plain autograd (`.backward()` on a copy of the model, per-image loops, numpy), sharing no code with the
engine.
"""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hnas.errors import HnasError
from hnas.metrics import METRICS, compute_metrics, list_metrics, register_metric

torch.set_num_threads(2)

ALL = [
    "grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov", "plain",
    "l2_norm", "naswot", "ntk_trace", "condnum", "params", "flops",
]
LAYERS = (nn.Conv2d, nn.Linear)


class SmallCNN(nn.Module):
    """Conv + BN, 3x3 average pooling (NB201's), a grouped strided conv with bias, a dilated depthwise conv,
    two linear layers."""

    def __init__(self, classes=5, inplace=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.bn2 = nn.BatchNorm2d(8, affine=False)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, padding_mode="reflect")
        self.relu = nn.ReLU(inplace=inplace)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(32, 12)
        self.fc2 = nn.Linear(12, classes)
        self.unused = nn.Linear(12, classes)  # never called: its weight gets no gradient

    def forward(self, x):
        x = self.avg(self.relu(self.bn1(self.conv1(x))))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.conv3(x))
        x = self.pool(x).flatten(1)
        return self.fc2(self.relu(self.fc1(x)))


class NoBNNet(nn.Module):
    """No batch coupling: per-image gradients are true per-sample gradients. A conv used twice (weight
    sharing), grouped convs, a 1x1 conv and a Linear on a 3-D input (a sequence of positions)."""

    def __init__(self, classes=4, size=4):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.conv_g = nn.Conv2d(3, 6, 3, padding=1, groups=3, bias=False)
        self.point = nn.Conv2d(6, 6, 1)
        self.conv_b = nn.Conv2d(6, 6, 2, stride=2, groups=3)
        self.seq = nn.Linear(6, 5)
        self.head = nn.Linear(5 * (size // 2) ** 2, classes)

    def forward(self, x):
        x = torch.tanh(self.conv(x))
        x = torch.tanh(self.conv(x))  # second call of the same module
        x = torch.tanh(self.point(torch.tanh(self.conv_g(x))))
        x = self.conv_b(x)  # (n, 6, size/2, size/2)
        x = torch.tanh(self.seq(x.flatten(2).transpose(1, 2)))  # (n, positions, 5)
        return self.head(x.flatten(1))


def batch(n=6, size=8, classes=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def small_cnn(seed=0, **kw):
    torch.manual_seed(seed)
    return SmallCNN(**kw).double()


# ----------------------------------------------------------------------------------------------------------
# Independent reference computations


def ref_loss_grads(model, x, y):
    net = copy.deepcopy(model).train()
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    return [(m.weight.detach(), m.weight.grad) for m in net.modules() if isinstance(m, LAYERS)]


def ref_grasp(model, x, y):
    net = copy.deepcopy(model).train()
    weights = [m.weight for m in net.modules() if isinstance(m, LAYERS)]
    g1 = torch.autograd.grad(F.cross_entropy(net(x), y), weights, allow_unused=True)
    g2 = torch.autograd.grad(F.cross_entropy(net(x), y), weights, allow_unused=True, create_graph=True)
    z = sum((a.detach() * b).sum() for a, b in zip(g1, g2) if a is not None)
    hg = torch.autograd.grad(z, weights, allow_unused=True)
    return sum(float(-(w.detach() * h).sum()) for w, h in zip(weights, hg) if h is not None)


def ref_fisher(model, x, y):
    net = copy.deepcopy(model).train()
    acts = []

    def keep(module, inputs, out):
        out.retain_grad()
        acts.append((module, out))

    hooks = [m.register_forward_hook(keep) for m in net.modules() if isinstance(m, LAYERS)]
    F.cross_entropy(net(x), y).backward()
    for h in hooks:
        h.remove()
    total = 0.0
    for m, a in acts:
        d, a = a.grad, a.detach()
        g = (a * d).sum(dim=(2, 3)) if a.dim() == 4 else a * d
        total += float((0.5 * g.pow(2).mean(0)).sum()) * m.weight[0].numel()
    return total


def strip_batchnorm(model):
    net = copy.deepcopy(model)
    for mod in list(net.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(mod, name, nn.Identity())
    return net


def ref_synflow(model, x, without_batchnorm=strip_batchnorm):
    net = without_batchnorm(model).train().double()
    with torch.no_grad():
        for v in net.state_dict().values():
            v.abs_()
    net(torch.ones((1,) + tuple(x.shape[1:]), dtype=torch.float64)).sum().backward()
    return sum(float((m.weight.detach() * m.weight.grad).abs().sum())
               for m in net.modules() if isinstance(m, LAYERS) and m.weight.grad is not None)


def ref_jacob_cov(model, x):
    net = copy.deepcopy(model).train()
    x = x.clone().requires_grad_(True)
    out = net(x)
    out.backward(torch.ones_like(out))
    corr = np.corrcoef(x.grad.reshape(x.shape[0], -1).numpy())
    v, _ = np.linalg.eig(corr)
    return float(-np.sum(np.log(v + 1e-5) + 1.0 / (v + 1e-5)).real)


def ref_naswot(model, x):
    net = copy.deepcopy(model).train()
    codes = []
    hooks = [m.register_forward_hook(lambda m, i, o: codes.append((i[0] > 0).reshape(x.shape[0], -1)))
             for m in net.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    c = torch.cat(codes, 1).double().numpy()
    k = c @ c.T + (1 - c) @ (1 - c).T
    return float(np.linalg.slogdet(k)[1])


def ref_theta_per_sample(model, x, y):
    """Theta for a network without batch coupling: explicit per-sample gradients of f_n (weights+biases)."""
    params = [p for m in model.modules() if isinstance(m, LAYERS) for p in (m.weight, m.bias) if p is not None]
    rows = []
    for n in range(x.shape[0]):
        f = model(x[n : n + 1])[0, y[n]]
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(f, params)]))
    grads = torch.stack(rows)
    return grads @ grads.T


# ----------------------------------------------------------------------------------------------------------


def test_list_metrics_and_unknown_name():
    assert set(ALL) <= set(list_metrics())
    assert list_metrics() == sorted(list_metrics())
    x, y = batch()
    with pytest.raises(HnasError, match="unknown metric 'snipp'.*grad_norm"):
        compute_metrics(small_cnn(), x, y, ["snip", "snipp"])
    assert compute_metrics(small_cnn(), x, y, []) == {}


def test_every_metric_against_independent_computation():
    model = small_cnn()
    x, y = batch()
    v = compute_metrics(model, x, y, ALL)
    assert list(v) == ALL and all(isinstance(val, float) and math.isfinite(val) for val in v.values())

    pairs = ref_loss_grads(model, x, y)
    assert pairs[-1][1] is None  # the unused layer
    used = [(w, g) for w, g in pairs if g is not None]
    assert v["grad_norm"] == pytest.approx(sum(float(g.norm()) for _, g in used), rel=1e-10)
    assert v["snip"] == pytest.approx(sum(float((w * g).abs().sum()) for w, g in used), rel=1e-10)
    assert v["plain"] == pytest.approx(sum(float((w * g).sum()) for w, g in used), rel=1e-8)
    assert v["grasp"] == pytest.approx(ref_grasp(model, x, y), rel=1e-8)
    assert v["fisher"] == pytest.approx(ref_fisher(model, x, y), rel=1e-10)
    assert v["synflow"] == pytest.approx(ref_synflow(model, x), rel=1e-12)
    assert v["jacob_cov"] == pytest.approx(ref_jacob_cov(model, x), rel=1e-8)
    assert v["naswot"] == pytest.approx(ref_naswot(model, x), rel=1e-10)
    layers = [m for m in model.modules() if isinstance(m, LAYERS)]
    assert v["l2_norm"] == pytest.approx(sum(float(m.weight.detach().norm()) for m in layers), rel=1e-12)
    assert v["params"] == sum(p.numel() for p in model.parameters())
    # multiply-adds per image: conv1 8x8x8 outputs x 27, conv2 8x4x4 x (4*9), conv3 8x4x4 x 9, fc1, fc2
    assert v["flops"] == 8 * 64 * 27 + 8 * 16 * 36 + 8 * 16 * 9 + 32 * 12 + 12 * 5


def test_ntk_against_expanded_weights_with_batchnorm():
    """Theta by the definition: each image gets its own copy of every weight and bias, so that the
    gradient of sum_n f_n with respect to image n's copy is exactly image n's contribution, while
    BatchNorm still normalises over the whole batch."""
    model = small_cnn()
    x, y = batch()
    n = x.shape[0]
    m = model
    p = {k: v.detach().clone() for k, v in m.named_parameters()}
    copies = {k: p[k].expand(n, *p[k].shape).clone().requires_grad_(True)
              for k in p if k.split(".")[0] in ("conv1", "conv2", "conv3", "fc1", "fc2")}

    def per_image(name, xs, fn):
        outs = [fn(xs[i : i + 1], copies[f"{name}.weight"][i],
                   copies[f"{name}.bias"][i] if f"{name}.bias" in copies else None) for i in range(n)]
        return torch.cat(outs)

    conv = lambda mod: (lambda xi, w, b: mod._conv_forward(xi, w, b))
    h = per_image("conv1", x, conv(m.conv1))
    h = F.relu(F.batch_norm(h, None, None, p["bn1.weight"], p["bn1.bias"], training=True))
    h = F.avg_pool2d(h, 3, 1, 1, count_include_pad=False)
    h = F.relu(F.batch_norm(per_image("conv2", h, conv(m.conv2)), None, None, training=True))
    h = F.relu(per_image("conv3", h, conv(m.conv3)))
    h = F.adaptive_avg_pool2d(h, 2).flatten(1)
    h = F.relu(per_image("fc1", h, F.linear))
    out = per_image("fc2", h, F.linear)
    s = out.gather(1, y.view(-1, 1)).sum()
    grads = torch.autograd.grad(s, list(copies.values()))
    g = torch.cat([gr.reshape(n, -1) for gr in grads], 1)
    theta = g @ g.T
    v = compute_metrics(model, x, y, ["ntk_trace", "condnum"])
    assert v["ntk_trace"] == pytest.approx(math.sqrt(float(theta.trace()) / n), rel=1e-10)
    eig = torch.linalg.eigvalsh(theta)
    assert v["condnum"] == pytest.approx(float(eig[-1] / eig[0]), rel=1e-6)


@pytest.mark.parametrize("size", [4, 16])  # 16: convolutions with >= 256 output positions (another kernel)
def test_ntk_per_sample_without_batch_coupling_weight_sharing_and_sequences(size):
    torch.manual_seed(1)
    model = NoBNNet(size=size).double()
    x, y = batch(n=7, size=size, classes=4, seed=3)
    theta = ref_theta_per_sample(model, x, y)
    v = compute_metrics(model, x, y, ["ntk_trace", "condnum"])
    assert v["ntk_trace"] == pytest.approx(math.sqrt(float(theta.trace()) / 7), rel=1e-10)
    eig = torch.linalg.eigvalsh(theta)
    assert v["condnum"] == pytest.approx(float(eig[-1] / eig[0]), rel=1e-6)
    # the same with tiny chunks (per image, and per output channel)
    w = compute_metrics(model, x, y, ["ntk_trace", "condnum"], max_chunk=1, chunk_bytes=1)
    assert w["ntk_trace"] == pytest.approx(v["ntk_trace"], rel=1e-12)
    assert w["condnum"] == pytest.approx(v["condnum"], rel=1e-9)


def test_each_metric_alone_equals_all_together():
    model = small_cnn()
    x, y = batch()
    together = compute_metrics(model, x, y, ALL)
    for name in ALL:
        alone = compute_metrics(model, x, y, [name])[name]
        assert alone == pytest.approx(together[name], rel=1e-12, abs=1e-300), name


def test_deterministic_and_leaves_global_rng_alone():
    x, y = batch()
    first = compute_metrics(small_cnn(seed=5), x, y, ALL)
    second = compute_metrics(small_cnn(seed=5), x, y, ALL)
    assert first == second  # bitwise
    # dropout would draw random numbers: it is off, and the global generator is untouched
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.Flatten(), nn.Linear(144, 5)).double()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = compute_metrics(model, x, y, ["snip", "ntk_trace"])
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)
    assert a == compute_metrics(model, x, y, ["snip", "ntk_trace"])


def test_model_is_not_modified():
    model = small_cnn()
    x, y = batch()
    model.eval()
    model.bn1.train()  # a mix of flags must come back as it was
    model.fc1.weight.requires_grad_(False)  # frozen layer: still measured, still frozen
    model.fc2.weight.grad = torch.full_like(model.fc2.weight, 7.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {name: m.training for name, m in model.named_modules()}
    grads = {k: (None if p.grad is None else p.grad.clone()) for k, p in model.named_parameters()}
    req = {k: p.requires_grad for k, p in model.named_parameters()}
    x_before = x.clone()
    values = compute_metrics(model, x, y, ALL)
    assert all(math.isfinite(v) for v in values.values())
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k  # BN running stats and num_batches_tracked included
    assert flags == {name: m.training for name, m in model.named_modules()}
    for k, p in model.named_parameters():
        assert p.requires_grad == req[k]
        assert (p.grad is None and grads[k] is None) or torch.equal(p.grad, grads[k]), k
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert torch.equal(x, x_before) and not x.requires_grad
    # the frozen layer's weight counts like any other
    unfrozen = small_cnn()
    assert compute_metrics(unfrozen, x, y, ["snip"])["snip"] == pytest.approx(values["snip"], rel=1e-12)


def test_error_leaves_model_untouched():
    model = small_cnn()
    model.eval()
    x, y = batch()
    with pytest.raises(HnasError, match="targets"):
        compute_metrics(model, x, y[:3], ["snip"])
    with pytest.raises(HnasError, match="class indices"):
        compute_metrics(model, x, y.double(), ["snip"])
    with pytest.raises(HnasError, match=r"0\.\.4"):
        compute_metrics(model, x, y + 5, ["ntk_trace"])
    assert not model.training


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_are_refused(value):
    x, y = batch()
    x[1, 0, 2, 3] = value
    with pytest.raises(HnasError, match="1 NaN or infinite"):
        compute_metrics(small_cnn(), x, y, ["snip", "condnum"])


@pytest.mark.parametrize("names", [None, 3, ["snip", None]])
def test_names_must_be_metric_names(names):
    x, y = batch()
    with pytest.raises(HnasError, match="names must be a metric name"):
        compute_metrics(small_cnn(), x, y, names)


def test_chunked_equals_unchunked_and_oom_retry(monkeypatch):
    import hnas.metrics.ntk_gram as ntk_gram

    model = small_cnn()
    x, y = batch(n=9)
    names = ["ntk_trace", "condnum", "snip"]
    full = compute_metrics(model, x, y, names)
    for kwargs in ({"max_chunk": 1}, {"max_chunk": 4}, {"chunk_bytes": 1}):
        chunked = compute_metrics(model, x, y, names, **kwargs)
        for k in names:
            assert chunked[k] == pytest.approx(full[k], rel=1e-12), (k, kwargs)

    # An out-of-memory error in the per-image stage: the chunk shrinks and the pass runs again.
    real = ntk_gram.GramAccumulator._conv_block_grads
    failures = []

    def flaky(self, module, a, b, *blocks):
        if self.max_chunk is None or self.max_chunk > 2:
            failures.append(self.max_chunk)
            raise torch.OutOfMemoryError("simulated")
        return real(self, module, a, b, *blocks)

    monkeypatch.setattr(ntk_gram.GramAccumulator, "_conv_block_grads", flaky)
    retried = compute_metrics(model, x, y, names, oom_retry=True)
    assert failures == [None, 4]  # 9 -> 4 -> 2 images per chunk
    for k in names:
        assert retried[k] == pytest.approx(full[k], rel=1e-12)
    with pytest.raises(torch.OutOfMemoryError):
        compute_metrics(model, x, y, names, oom_retry=False)


def test_inplace_relu_after_conv_and_float32():
    x, y = batch()
    a = compute_metrics(small_cnn(inplace=False), x, y, ALL)
    b = compute_metrics(small_cnn(inplace=True), x, y, ALL)  # conv3's output is overwritten in place
    for k in ALL:
        assert b[k] == pytest.approx(a[k], rel=1e-12), k
    model32 = small_cnn().float()
    c = compute_metrics(model32, x.float(), y, ALL)
    for k in ALL:
        tol = 1e-2 if k in ("grasp", "plain", "condnum") else 1e-4
        assert c[k] == pytest.approx(a[k], rel=tol, abs=1e-6), k


def test_degenerate_network_is_finite():
    """Output independent of the input: zero Jacobian, singular Theta and ReLU kernel."""

    class Dead(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(4, 5)

        def forward(self, x):
            h = self.relu(self.bn(self.conv(x) * 0.0))
            return self.fc(h.mean(dim=(2, 3)))

    torch.manual_seed(0)
    x, y = batch()
    v = compute_metrics(Dead().double(), x, y, ALL)
    assert all(math.isfinite(val) for val in v.values()), v
    assert v["condnum"] == 1e5
    assert v["naswot"] == 0.0
    # all Jacobian rows are zero: one eigenvalue N, N-1 zeros
    n, k = x.shape[0], 1e-5
    expected = -(math.log(n + k) + 1 / (n + k) + (n - 1) * (math.log(k) + 1 / k))
    assert v["jacob_cov"] == pytest.approx(expected, rel=1e-9)


def test_jacob_cov_matches_numpy_and_handles_constant_rows():
    from hnas.metrics.definitions import jacob_cov_score

    g = torch.Generator().manual_seed(0)
    j = torch.randn(5, 40, generator=g, dtype=torch.float64)
    corr = np.corrcoef(j.numpy())
    v = np.linalg.eigvalsh(corr)
    assert jacob_cov_score(j) == pytest.approx(float(-np.sum(np.log(v + 1e-5) + 1 / (v + 1e-5))), rel=1e-12)
    # two constant rows: perfectly correlated with each other, uncorrelated with the rest
    j2 = j.clone()
    j2[1] = 3.0
    j2[3] = 0.0
    c = np.corrcoef(j2[[0, 2, 4]].numpy())
    full = np.zeros((5, 5))
    idx = [0, 2, 4]
    full[np.ix_(idx, idx)] = c
    full[np.ix_([1, 3], [1, 3])] = 1.0
    v2 = np.linalg.eigvalsh(full)
    # (a zero eigenvalue comes out as +-1e-16, which moves 1/(v + k) by about 1e-11 relative)
    assert jacob_cov_score(j2) == pytest.approx(float(-np.sum(np.log(v2 + 1e-5) + 1 / (v2 + 1e-5))), rel=1e-9)


def test_model_with_tuple_output_and_registering_a_metric():
    class Aux(SmallCNN):
        def forward(self, x):
            out = super().forward(x)
            return out, out * 2  # (logits, aux logits) as DARTS networks return in training

    torch.manual_seed(0)
    x, y = batch()
    aux = Aux().double()
    plain_model = small_cnn()
    assert compute_metrics(aux, x, y, ALL) == compute_metrics(plain_model, x, y, ALL)

    @register_metric("_test_abs_grad_sum", needs=("loss_grads",))
    def _abs_grad_sum(ctx):
        return sum(float(g.abs().sum()) for g in ctx.loss_grads.grads if g is not None)

    try:
        assert "_test_abs_grad_sum" in list_metrics()
        got = compute_metrics(plain_model, x, y, ["_test_abs_grad_sum"])["_test_abs_grad_sum"]
        ref = sum(float(g.abs().sum()) for _, g in ref_loss_grads(plain_model, x, y) if g is not None)
        assert got == pytest.approx(ref, rel=1e-10)

        @register_metric("_test_undeclared")
        def _undeclared(ctx):
            return float(ctx.theta.theta.trace())

        with pytest.raises(RuntimeError, match="no requested metric declared it"):
            compute_metrics(plain_model, x, y, ["_test_undeclared"])
    finally:
        METRICS._items.pop("_test_abs_grad_sum", None)
        METRICS._items.pop("_test_undeclared", None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = small_cnn()
    x, y = batch()
    cpu = compute_metrics(model, x, y, ALL)
    gpu = compute_metrics(model, x.cuda(), y.cuda(), ALL)  # the model stays on the CPU: it is not moved
    assert next(model.parameters()).device.type == "cpu"
    for k in ALL:
        assert gpu[k] == pytest.approx(cpu[k], rel=1e-6), k


def test_synflow_follows_the_models_own_without_batchnorm():
    class KeepsSecondBN(SmallCNN):
        """Its BatchNorm-free copy keeps bn2 (like NB201's reference layout keeps the reduction blocks')."""

        def without_batchnorm(self):
            net = copy.deepcopy(self)
            net.bn1 = nn.Identity()
            return net

    class AlsoDropsRelu(KeepsSecondBN):
        """A copy that differs by more than BatchNorms: the engine must use the copy itself."""

        def without_batchnorm(self):
            net = super().without_batchnorm()
            net.relu = nn.Tanh()
            return net

    x, _ = batch()

    for cls in (KeepsSecondBN, AlsoDropsRelu, KeepsSecondBN):  # the second KeepsSecondBN uses the cache
        torch.manual_seed(0)
        model = cls().double()
        got = compute_metrics(model, x, torch.zeros(x.shape[0], dtype=torch.long), ["synflow"])["synflow"]
        assert got == pytest.approx(ref_synflow(model, x, lambda m: m.without_batchnorm()), rel=1e-12), cls.__name__
        assert got != pytest.approx(ref_synflow(model, x), rel=1e-6)  # keeping bn2 matters
        assert all("forward" not in m.__dict__ for m in model.modules())


def test_integer_inputs_reach_layers_without_an_input_gradient():
    """Token ids: no gradient flows to the input, so Theta's pass asks for the layer outputs directly."""

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(11, 6)
            self.fc = nn.Linear(6, 8)
            self.out = nn.Linear(8, 3)

        def forward(self, ids):
            return self.out(torch.tanh(self.fc(self.emb(ids))).mean(1))

    torch.manual_seed(0)
    model = Bag().double()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 11, (5, 4), generator=g)
    y = torch.randint(0, 3, (5,), generator=g)
    theta = ref_theta_per_sample(model, ids, y)
    v = compute_metrics(model, ids, y, ["ntk_trace", "snip", "flops"])
    assert v["ntk_trace"] == pytest.approx(math.sqrt(float(theta.trace()) / 5), rel=1e-10)
    assert v["flops"] == 4 * 6 * 8 + 8 * 3
    with pytest.raises(HnasError, match="floating-point inputs"):
        compute_metrics(model, ids, y, ["jacob_cov"])


def test_second_order_functions_match_autograd():
    """The hand-written double backward of convolution and BatchNorm (used for GraSP's HVP)."""
    from hnas.metrics.kernels import EngineKernels, SecondOrderState, _BatchNormTrain, _Conv2d

    state = SecondOrderState()
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    for groups, stride, dilation, bias in [(1, 1, 1, True), (2, 2, 1, False), (4, 1, 2, True)]:
        x, w = rand(2, 4, 5, 5), rand(4, 4 // groups, 3, 3)  # small: gradgradcheck is numerical
        b = rand(4) if bias else None
        args = (x, w, b) if bias else (x, w)

        def conv(*a):
            return _Conv2d.apply(a[0], a[1], a[2] if bias else None, [stride] * 2, [1, 1], [dilation] * 2,
                                 groups, state).pow(2)

        assert torch.autograd.gradgradcheck(conv, args)
    for affine in (True, False):
        x = rand(3, 3, 4, 4)
        wb = (rand(3), rand(3)) if affine else (None, None)

        def bn(x, *p):
            w, b = p if p else (None, None)
            return _BatchNormTrain.apply(x, w, b, None, None, 0.1, 1e-5, state).pow(2)

        assert torch.autograd.gradgradcheck(bn, (x,) + (wb if affine else ()))
    # a whole network, Hessian-vector product along g (the general path) against PyTorch's own
    model = small_cnn()
    xb, yb = batch()

    def hvp(fast):
        net = copy.deepcopy(model).train()
        ws = [m.weight for m in net.modules() if isinstance(m, LAYERS)][:-1]
        with (EngineKernels(SecondOrderState(), fast_pooling=True) if fast else torch.enable_grad()):
            out = net(xb)
        grads = torch.autograd.grad(F.cross_entropy(out, yb), ws, create_graph=True)
        z = sum((gr.detach() * gr).sum() for gr in grads)
        return torch.autograd.grad(z, ws)

    for a, b in zip(hvp(True), hvp(False)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "kernel, stride, padding, count_include_pad",
    [(3, 1, 1, False), (3, 1, 1, True), (2, 2, 0, True), (3, 2, 1, False), ((2, 3), (1, 2), (1, 0), False)],
)
def test_average_pooling_as_a_convolution(kernel, stride, padding, count_include_pad):
    """The engine's CPU average pooling equals F.avg_pool2d, values and gradients, on odd sizes."""
    from hnas.metrics.kernels import EngineKernels

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 7, 9, generator=g, dtype=torch.float64, requires_grad=True)
    args = (kernel, stride, padding, False, count_include_pad)
    expected = F.avg_pool2d(x, *args)
    with EngineKernels(fast_pooling=True):
        got = F.avg_pool2d(x, *args)
        by_module = nn.AvgPool2d(*args)(x)
    assert got.grad_fn.name() != expected.grad_fn.name()  # it did run as a convolution
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(by_module, expected, rtol=1e-12, atol=1e-12)
    go = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(got, x, go)[0], torch.autograd.grad(expected, x, go)[0])
    # what it does not cover runs as PyTorch's own pooling
    with EngineKernels(fast_pooling=True):
        ceil = F.avg_pool2d(x, 3, 2, 1, True, count_include_pad)
        divisor = F.avg_pool2d(x, 3, 1, 1, False, True, 5)
    torch.testing.assert_close(ceil, F.avg_pool2d(x, 3, 2, 1, True, count_include_pad), rtol=0, atol=0)
    torch.testing.assert_close(divisor, F.avg_pool2d(x, 3, 1, 1, False, True, 5), rtol=0, atol=0)
    with EngineKernels(fast_pooling=True), pytest.raises(RuntimeError, match="pad should be"):
        F.avg_pool2d(x, 3, 1, 2)  # more padding than half the window: PyTorch's own error


def test_network_without_weights_or_gradients():
    """A Linear with zero weights (zero logits), and a network without any Conv2d/Linear layer."""
    x, y = batch()
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5, bias=False))
    with torch.no_grad():
        pool[2].weight.zero_()  # logits identically zero, but still differentiable
    v = compute_metrics(pool.double(), x, y, ALL)
    assert all(math.isfinite(val) for val in v.values()), v
    assert v["grad_norm"] > 0 and v["snip"] == 0.0 and v["plain"] == 0.0 and v["ntk_trace"] > 0

    no_layers = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(3), nn.ReLU())
    v = compute_metrics(no_layers.double(), x, torch.zeros(6, dtype=torch.long), ALL)
    assert all(math.isfinite(val) for val in v.values()), v
    assert v["grad_norm"] == v["snip"] == v["grasp"] == v["ntk_trace"] == v["synflow"] == 0.0
    assert v["params"] == 6 and v["flops"] == 0.0
