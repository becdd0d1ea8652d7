"""The newer proxies (proxies.md): MeCo and the trainable-layer count."""

import numpy as np
import pytest
import torch
from torch import nn

from hnas import data
from hnas.metrics import compute_metrics
from hnas.spaces import create_space

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"


def plain_meco(net, image):
    """MeCo as its reference computes it: a batch of this one image in train mode, a hook on every module,
    numpy's corrcoef of each output's channels (NaN -> 0) and the smallest real eigenvalue, summed."""
    total = []

    def hook(module, args, out):
        if isinstance(out, torch.Tensor):
            f = out[0].detach().reshape(out.shape[1], -1).double().numpy()
            if f.shape[1] < 2:
                return
            with np.errstate(invalid="ignore", divide="ignore"):
                corr = np.corrcoef(f)
            corr[~np.isfinite(corr)] = 0
            total.append(np.linalg.eigvals(corr).real.min())

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    net.train()
    with torch.no_grad():
        net(image[None])
    for h in handles:
        h.remove()
    return float(np.sum(total))


@pytest.mark.parametrize("layout", ["compact", "reference"])
def test_meco_equals_the_reference_computation_and_leaves_running_statistics_alone(layout):
    space = create_space("nb201", layout=layout)
    images, labels = data.probe_batch("fake", 8, seed=0)
    net = space.build_seeded(ARCH, 0, num_classes=10)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    value = compute_metrics(net, images, labels, "meco")["meco"]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert value == pytest.approx(plain_meco(net, images[0]), rel=1e-9)
    # alone or with the gradient metrics, the same number
    assert compute_metrics(net, images, labels, ["snip", "meco", "ntk_trace"])["meco"] == value


def plain_trainable_layers(net, images, labels):
    """The layers the loss trains, counted from a plain backward: Conv2d/Linear modules whose weight gradient
    of the mean cross-entropy has a non-zero entry."""
    net.zero_grad(set_to_none=True)
    net.train()
    nn.functional.cross_entropy(net(images), labels).backward()
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    count = sum(1 for m in layers if m.weight.grad is not None and bool(m.weight.grad.ne(0).any()))
    net.zero_grad(set_to_none=True)
    return count


def test_trainable_layers_counts_the_layers_the_loss_trains():
    images, labels = data.probe_batch("fake", 4, seed=0)
    # node 1's conv feeds only `none` edges: it runs, but nothing it outputs reaches the loss
    dead = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
    without = "|none~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
    for layout in ("compact", "reference"):
        space = create_space("nb201", layout=layout)
        counts = {}
        for arch in (ARCH, dead, without):
            net = space.build_seeded(arch, 0, num_classes=10)
            counts[arch] = compute_metrics(net, images, labels, "trainable_layers")["trainable_layers"]
            assert counts[arch] == plain_trainable_layers(net, images, labels)
            # with metrics of other passes (the Theta pass, the input Jacobian's): the same count
            together = compute_metrics(net, images, labels, ["snip", "ntk_trace", "jacob_cov", "trainable_layers"])
            assert together["trainable_layers"] == counts[arch]
        assert counts[dead] == counts[without]
        # ARCH's node 1 also feeds node 3 through a conv: two more layers a cell, 5 cells a stage, 3 stages
        assert counts[ARCH] - counts[dead] == 30
    # one cell more conv than another: the count grows by one per cell
    more = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"
    space = create_space("nb201", layout="compact")
    counts = [compute_metrics(space.build_seeded(a, 0, num_classes=10), images, labels, "trainable_layers")
              ["trainable_layers"] for a in (ARCH, more)]
    assert counts[1] - counts[0] == 15


def plain_zico(net, images, labels):
    """ZiCo as its reference computes it, on the two halves as its two batches: numpy over the flattened
    Conv2d/Linear weight gradients of each batch's mean cross-entropy (train mode)."""
    grads = {}
    net.train()
    half = len(images) // 2
    for part in (slice(0, half), slice(half, 2 * half)):
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(images[part]), labels[part]).backward()
        for name, m in net.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None:
                grads.setdefault(name, []).append(m.weight.grad.detach().reshape(-1).double().numpy().copy())
    total = 0.0
    for g in grads.values():
        g = np.array(g)
        std = np.std(g, axis=0)
        nz = np.nonzero(std)[0]
        s = np.sum(np.mean(np.abs(g), axis=0)[nz] / std[nz])
        if s != 0:
            total += np.log(s)
    return float(total)


def plain_epe_nas(net, images, labels):
    """EPE-NAS as NASLib computes it (at most 100 classes): numpy correlations of each class's input
    Jacobians, sum over classes of |sum log(|corr| + 1e-5)|."""
    net.train()
    x = images.clone().requires_grad_(True)
    net(x).sum().backward()
    jac = x.grad.reshape(len(x), -1).double().numpy()
    labels = labels.numpy()
    total = 0.0
    for c in np.unique(labels):
        rows = jac[labels == c]
        corr = np.corrcoef(rows) if len(rows) > 1 else np.ones((1, 1))
        total += abs(np.sum(np.log(np.abs(corr) + 1e-5)))
    return float(total)


@pytest.mark.parametrize("layout", ["compact", "reference"])
def test_zico_and_epe_nas_equal_their_reference_computations(layout):
    space = create_space("nb201", layout=layout)
    images, labels = data.probe_batch("fake", 16, seed=0)
    net = space.build_seeded(ARCH, 0, num_classes=10)
    values = compute_metrics(net, images, labels, ["zico", "epe_nas", "snip"])
    assert values == compute_metrics(net, images, labels, ["epe_nas", "zico", "snip"])  # pass sharing changes nothing
    assert compute_metrics(net, images, labels, "zico")["zico"] == values["zico"]
    assert values["zico"] == pytest.approx(plain_zico(net, images, labels), rel=1e-5)
    assert values["epe_nas"] == pytest.approx(plain_epe_nas(net, images, labels), rel=1e-5)


def kaiming_init_(net):
    """AZ-NAS's, VKDNW's and TE-NAS's kaiming_normal_fanin_init, in place."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def reference_az_nas(net, shape, seed=0):
    """AZ-NAS's compute_az_nas_score.py on a copy of the network: init_model (Kaiming-normal fan_in, BN 1 / 0)
    in place, Gaussian input, the stem and cell outputs with retain_grad, then its three scores."""
    import copy

    torch.manual_seed(seed)
    net = copy.deepcopy(net)

    kaiming_init_(net)
    net.train()
    x = torch.randn(shape)
    features = [net.stem(x)]
    for cell in net.cells:
        features.append(cell(features[-1]))
    entropies = []
    for f in features:
        b, c, h, w = f.shape
        z = f.detach().permute(0, 2, 3, 1).reshape(b * h * w, c)
        z = z - z.mean(0, keepdim=True)
        s = torch.linalg.eigvalsh(z.T @ z / z.shape[0])
        p = s / s.sum()
        entropies.append(float((-p * torch.log(p + 1e-8)).sum()))
    scores = []
    for i in reversed(range(1, len(features))):
        g_out = (torch.bernoulli(torch.ones_like(features[i]) * 0.5) - 0.5) * 2
        g_in = torch.autograd.grad(features[i], features[i - 1], g_out, retain_graph=True)[0]
        if g_in.size() == g_out.size() and torch.all(g_in == g_out):
            scores.append(-np.inf)
            continue
        if g_in.shape[2] != g_out.shape[2]:
            g_in = nn.PixelUnshuffle(g_in.shape[2] // g_out.shape[2])(g_in)
        bo, co, ho, wo = g_out.shape
        mat = g_in.permute(0, 2, 3, 1).reshape(-1, g_in.shape[1]).T @ g_out.permute(0, 2, 3, 1).reshape(-1, co)
        sigma = torch.linalg.svdvals(mat / (bo * ho * wo)).max().item()
        scores.append(-sigma - 1 / (sigma + 1e-6) + 2)
    return {"az_expressivity": sum(entropies), "az_progressivity": float(np.min(np.diff(entropies))),
            "az_trainability": float(np.mean(scores))}


def test_az_nas_scores_equal_the_reference_computation():
    space = create_space("nb201", layout="compact")
    images, labels = data.probe_batch("fake", 8, seed=0)
    names = ["az_expressivity", "az_progressivity", "az_trainability"]
    for arch in (ARCH, "|skip_connect~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|skip_connect~2|"):
        net = space.build_seeded(arch, 0, num_classes=10)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        values = compute_metrics(net, images, labels, names)
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
        expected = reference_az_nas(net, images.shape)
        for name in names:
            assert values[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-9), name
        assert compute_metrics(net, images, labels, ["snip", *names]) == {"snip": pytest.approx(
            compute_metrics(net, images, labels, "snip")["snip"]), **values}


def test_az_nas_needs_a_stem_and_cells():
    from hnas.errors import HnasError

    images, labels = data.probe_batch("fake", 4, seed=0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.raises(HnasError, match="stem"):
        compute_metrics(plain, images, labels, "az_trainability")


def gaussian_init_(net):
    """SWAP's and Zen-NAS's network_weight_gaussian_init, in place."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def reference_swap(net, images, repeats=32, seed=0):
    """SWAP as its correlation.py computes it: per repeat, network_weight_gaussian_init in place on a copy,
    a train-mode forward of the 16 images, torch.unique over the neurons' sign patterns; the mean."""
    import copy

    torch.manual_seed(seed)
    net = copy.deepcopy(net)
    feats = []
    for m in net.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(lambda m, a, o: feats.append(o.detach()) if a[0].dim() == 4 else None)
    net.train()
    scores = []
    for _ in range(repeats):
        gaussian_init_(net)
        with torch.no_grad():
            feats.clear()
            net(images[:16])
            a = torch.sign(torch.cat([f.reshape(16, -1) for f in feats], 1))
            scores.append(torch.unique(a.T, dim=0).shape[0])
    return float(np.mean(scores))


def test_swap_equals_the_reference_computation(monkeypatch):
    from hnas.metrics import swap

    monkeypatch.setattr(swap, "SWAP_REPEATS", 4)  # 4 of the 32 repeats: the same draws, in the same order
    space = create_space("nb201", layout="compact")
    images, labels = data.probe_batch("fake", 20, seed=0)
    net = space.build_seeded(ARCH, 0, num_classes=10)
    value = compute_metrics(net, images, labels, "swap")["swap"]
    assert value == reference_swap(net, images, repeats=4)
    assert 1 < value <= 2**16  # at most one pattern per on/off combination of 16 images


def reference_zen(net, images, seed=0):
    """One repeat of Zen-NAS's compute_zen_score.py on a copy: Gaussian init in place, two Gaussian inputs,
    the pre-pooling feature maps of input and input + 0.01 * input2, and the BatchNorms' running variances."""
    import copy

    torch.manual_seed(seed)
    net = copy.deepcopy(net)
    gaussian_init_(net)
    with torch.no_grad():
        x = torch.randn(16, *images.shape[1:])
        x2 = torch.randn(16, *images.shape[1:])
        pool = [m for m in net.modules() if isinstance(m, nn.AdaptiveAvgPool2d)][-1]
        maps = []
        pool.register_forward_hook(lambda m, a, o: maps.append(a[0]))
        net.train()
        net(x)
        net(x + 0.01 * x2)
        score = torch.log(torch.mean(torch.sum(torch.abs(maps[0] - maps[1]), dim=[1, 2, 3])))
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                score = score + torch.log(torch.sqrt(torch.mean(m.running_var)))
    return float(score)


def test_zen_equals_the_reference_computation():
    space = create_space("nb201", layout="compact")
    images, labels = data.probe_batch("fake", 20, seed=0)
    net = space.build_seeded(ARCH, 0, num_classes=10)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    value = compute_metrics(net, images, labels, "zen")["zen"]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # running_var untouched
    assert value == pytest.approx(reference_zen(net, images), rel=1e-6)


def test_every_metric_alone_equals_all_together_on_a_cell_network():
    from hnas.metrics import list_metrics

    space = create_space("nb201", layout="compact")
    images, labels = data.probe_batch("fake", 16, seed=0)
    net = space.build_seeded(ARCH, 0, num_classes=10)
    together = compute_metrics(net, images, labels, list_metrics())
    for name in list_metrics():
        alone = compute_metrics(net, images, labels, [name])[name]
        assert alone == pytest.approx(together[name], rel=1e-6, abs=1e-12), name


def reference_cholesky(prob):
    """The closed-form factor of VKDNW's cholesky_covariance, element by element: L_ii = d_i, below the
    diagonal -p_i d_j / q_j, d_j = sqrt(p_j q_j / q_{j-1}), q_j = 1 - sum_{i<=j} p_i (q_{-1} = 1)."""
    k = len(prob)
    q = [1 - sum(prob[: j + 1]) for j in range(k)]
    q[-1] = 0.0
    d = [np.sqrt(prob[j] * q[j] / (q[j - 1] if j else 1.0)) for j in range(k)]
    L = np.zeros((k, k))
    for i in range(k):
        L[i, i] = d[i]
        for j in range(i):
            L[i, j] = -prob[i] * d[j] / q[j]
    return L


def reference_vkdnw(net, image_shape, samples, seed=0):
    """VKDNW as its compute_vkdnw_score.py computes it, on a copy: Kaiming init in place, eval mode, Gaussian
    images, vmap over single images of jacrev of the logits with respect to element 0 of every parameter
    tensor, the closed-form Cholesky factor times the Jacobian, F = mean (LJ)^T (LJ), its singular values,
    their deciles and the entropy of the normalised deciles. Returns (entropy, number of parameter tensors)."""
    import copy

    from torch.func import functional_call, jacrev, vmap

    torch.manual_seed(seed)
    net = copy.deepcopy(net)
    kaiming_init_(net)
    x = torch.randn((samples, *image_shape[1:]))
    net.eval()
    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = {k: v.detach() for k, v in net.named_buffers()}

    def one(sample):
        def predict(theta):
            full = {k: torch.cat([theta[k], v.flatten()[1:]]).reshape(v.shape) for k, v in params.items()}
            return functional_call(net, (full, buffers), (sample[None],))[0]
        return jacrev(predict)({k: v.flatten()[:1] for k, v in params.items()})

    called = set()
    hooks = [m.register_forward_hook(lambda m, a, o: called.add(m)) for m in net.modules()]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    # the parameters of modules that never run (NB201's reference layout) are left out; on NATS-Bench's
    # network every module runs, and these are all of named_parameters
    ran = {id(p) for m in called for p in m.parameters(recurse=False)}
    used = np.array([id(p) in ran for p in net.parameters()])
    jac = torch.cat([v.flatten(2) for v in vmap(one)(x).values()], dim=2).double().numpy()[:, :, used]
    with torch.no_grad():
        logits = torch.cat([net(img[None]) for img in x]).double()
    alpha = float(torch.tensor(0.05, dtype=torch.float16))
    prob = (torch.softmax(logits, 1) * (1 - alpha) + alpha / logits.shape[1]).numpy()
    scaled = np.stack([reference_cholesky(p) @ j for p, j in zip(prob, jac)])
    fisher = np.mean([s.T @ s for s in scaled], axis=0)
    lam = np.linalg.svd(fisher, compute_uv=False)
    q = np.quantile(lam, np.arange(1, 10) / 10)
    p = q / (np.abs(q).sum() + 1e-10)
    return float(-(p * np.log(p + 1e-10)).sum()), int(used.sum())


@pytest.mark.parametrize("layout", ["compact", "reference"])
def test_vkdnw_equals_the_reference_computation(layout, monkeypatch):
    from hnas.metrics import vkdnw

    monkeypatch.setattr(vkdnw, "VKDNW_SAMPLES", 6)
    space = create_space("nb201", layout=layout)
    images, labels = data.probe_batch("fake", 8, seed=0)
    net = space.build_seeded(ARCH, 0, num_classes=10)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    values = compute_metrics(net, images, labels, ["vkdnw", "vkdnw_single"])
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    entropy, dim = reference_vkdnw(net, images.shape, 6)
    assert 0 < values["vkdnw"] <= np.log(9)
    assert values["vkdnw"] == pytest.approx(entropy, rel=1e-4)
    assert values["vkdnw_single"] == pytest.approx(10 * dim + entropy, rel=1e-9)
    if layout == "compact":  # every module of NATS-Bench's network runs: the reference's len(named_parameters)
        assert dim == len(list(net.named_parameters()))


def test_vkdnw_single_orders_by_parameter_tensors_first():
    images, labels = data.probe_batch("fake", 8, seed=0)
    space = create_space("nb201", layout="compact")
    small = "|nor_conv_1x1~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"  # 1 conv: 3 tensors
    big = "|nor_conv_1x1~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|none~2|"  # 2 convs: 6 tensors
    a, b = (compute_metrics(space.build_seeded(s, 0, num_classes=10), images, labels, "vkdnw_single")["vkdnw_single"]
            for s in (small, big))
    assert b > a  # whatever the entropies: 15 cells x 3 more tensors


def reference_linear_regions(net, image_shape, samples, seed=0):
    """The AZ-NAS port's compute_RN_score on a copy after Kaiming init: sign of every ReLU output (4-D input)
    of a train-mode forward of Gaussian images, LR = sum_i 1 / #{j: code_j = code_i}, with its half-precision
    matmul test of equal codes."""
    import copy

    torch.manual_seed(seed)
    net = copy.deepcopy(net)
    kaiming_init_(net)
    x = torch.randn((samples, *image_shape[1:]))
    feats = []
    for m in net.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(lambda m, a, o: feats.append(o.detach()) if a[0].dim() == 4 else None)
    net.train()
    with torch.no_grad():
        net(x)
    codes = torch.sign(torch.cat([f.reshape(samples, -1) for f in feats], 1)).float()
    res = codes @ (1 - codes).T
    res = 1 - torch.sign(res + res.T)
    return float((1.0 / res.sum(1)).sum())


def test_te_nas_linear_regions_equal_the_reference_computation():
    images, labels = data.probe_batch("fake", 40, seed=0)
    for arch in (ARCH, "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"):
        net = create_space("nb201", layout="compact").build_seeded(arch, 0, num_classes=10)
        value = compute_metrics(net, images, labels, "te_nas_lr")["te_nas_lr"]
        assert value == pytest.approx(reference_linear_regions(net, images.shape, 32), rel=1e-6)
        assert 1 <= value <= 32
