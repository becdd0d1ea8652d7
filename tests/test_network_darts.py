"""The DARTS evaluation networks: the parameter and multiply-add counts of darts.md §4.5, feature-map shapes
along the CIFAR and ImageNet paths, the forward return contract, the op rules of §4.1, drop path (§4.2: out of
place, never on Identity), and every metric of the engine on the proxy network."""

import math

import pytest
import torch
from torch import nn

from hnas.errors import HnasError
from hnas.metrics import compute_metrics, list_metrics
from hnas.spaces.darts import network
from hnas.spaces.darts.genotype import NAMED, Genotype
from hnas.spaces.darts.network import Cell, NetworkCIFAR, NetworkImageNet
from hnas.train.counting import count_macs, count_parameters
from hnas.spaces.darts.ops import OPS, FactorizedReduce

torch.set_num_threads(2)

DARTS_V2 = NAMED["DARTS_V2"]

# darts.md §4.5, in millions: C10 (36, 20), C100 (36, 20), ImageNet (48, 14, 1000), proxy C10 (16, 5).
PARAMS = {
    "DARTS_V2": (3.349342, 3.401272, 4.718752, 0.129706),
    "DARTS_V1": (3.169414, 3.221344, 4.510432, 0.123098),
    "ROBOT_cifar10": (3.044566, 3.096496, 4.377184, 0.141370),
    "ROBOT_cifar100": (2.929654, 2.981584, 4.300000, 0.137658),
    "ROBOT_imagenet": (3.354742, 3.406672, 4.849792, 0.185386),
    "TENAS_cifar10": (4.137526, 4.189456, 5.868640, 0.259450),
    "TENAS_imagenet": (3.779398, 3.831328, 5.420416, 0.219722),
}
SETTINGS = ((NetworkCIFAR, 36, 10, 20), (NetworkCIFAR, 36, 100, 20), (NetworkImageNet, 48, 1000, 14),
            (NetworkCIFAR, 16, 10, 5))


def on_meta(cls, *args, **kwargs):
    """The network with shapes only: counting needs no weights (a C=48 ImageNet net takes ~1 s to init)."""
    with torch.device("meta"):
        return cls(*args, **kwargs)


def batch(n, size=32, classes=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, size, size, generator=generator),
            torch.randint(0, classes, (n,), generator=generator))


def feature_shapes(net, x):
    """The output shape of each stem and cell in one forward."""
    shapes = {}
    parts = [(n, m) for n, m in net.named_children() if n.startswith("stem")]
    parts += [(f"cell{i}", c) for i, c in enumerate(net.cells)]
    handles = [m.register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
               for n, m in parts]
    net(x)
    for h in handles:
        h.remove()
    return shapes


# ----------------------------------------------------------------------------------------------------------
# Counts


@pytest.mark.parametrize("name", PARAMS)
def test_parameter_counts_of_the_spec_without_the_auxiliary_head(name):
    for (cls, c, classes, layers), expected in zip(SETTINGS, PARAMS[name]):
        net = on_meta(cls, c, classes, layers, True, NAMED[name])
        assert count_parameters(net) == round(expected * 1e6), (name, cls.__name__, c, classes, layers)
        assert sum(p.numel() for p in net.parameters()) > count_parameters(net)  # the head is there


@pytest.mark.parametrize("name", PARAMS)
def test_cifar100_adds_the_576_to_90_classifier_rows(name):
    c10, c100 = (count_parameters(on_meta(NetworkCIFAR, 36, k, 20, False, NAMED[name])) for k in (10, 100))
    assert c100 - c10 == 51930 == 90 * 576 + 90


def test_auxiliary_heads_and_the_missing_batchnorm_of_the_imagenet_one():
    # By hand from darts.md §4.3/§4.4: 1x1 C->128 + BN, 2x2 128->768 (+ BN on CIFAR only), linear 768->classes.
    cifar = on_meta(NetworkCIFAR, 36, 10, 20, True, DARTS_V2).auxiliary_head
    imagenet = on_meta(NetworkImageNet, 48, 1000, 14, True, DARTS_V2).auxiliary_head
    assert sum(p.numel() for p in cifar.parameters()) == 576 * 128 + 256 + 128 * 768 * 4 + 2 * 768 + 7690
    assert sum(p.numel() for p in imagenet.parameters()) == 768 * 128 + 256 + 128 * 768 * 4 + 768000 + 1000
    assert [m.num_features for m in imagenet.modules() if isinstance(m, nn.BatchNorm2d)] == [128]
    assert not hasattr(on_meta(NetworkCIFAR, 16, 10, 5, False, DARTS_V2), "auxiliary_head")


def test_multiply_adds_of_darts_v2():
    cifar = on_meta(NetworkCIFAR, 36, 10, 20, True, DARTS_V2)
    imagenet = on_meta(NetworkImageNet, 48, 1000, 14, True, DARTS_V2)
    assert abs(count_macs(cifar, (3, 32, 32)) - 528.4e6) < 0.1e6
    assert abs(count_macs(imagenet, (3, 224, 224)) - 529.9e6) < 0.1e6
    assert cifar.training  # the count runs in eval mode and restores the mode


def test_convs_have_no_bias_and_batchnorm_is_affine_at_identity():
    net = NetworkCIFAR(16, 10, 5, True, NAMED["TENAS_imagenet"])
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert convs and all(m.bias is None for m in convs)
    assert bns and all(m.affine and m.weight.eq(1).all() and not m.bias.any() for m in bns)


# ----------------------------------------------------------------------------------------------------------
# Shapes and the forward contract


def test_cifar_feature_maps_reductions_and_return_contract():
    torch.manual_seed(0)
    net = NetworkCIFAR(4, 7, 8, True, DARTS_V2)  # reductions at cells 2 and 5
    x, _ = batch(2)
    shapes = feature_shapes(net, x)
    assert shapes["stem"] == (12, 32, 32)
    assert [shapes[f"cell{i}"] for i in range(8)] == [(16, 32, 32)] * 2 + [(32, 16, 16)] * 3 + [(64, 8, 8)] * 3
    logits, aux = net(x)
    assert logits.shape == aux.shape == (2, 7)
    net.eval()
    assert net(x).shape == (2, 7)
    plain = NetworkCIFAR(4, 7, 8, False, DARTS_V2)
    out = plain(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)


def test_imagenet_stems_reductions_to_7x7_and_return_contract():
    torch.manual_seed(0)
    net = NetworkImageNet(8, 5, 3, True, NAMED["PDARTS"])  # reductions at cells 1 and 2
    x, _ = batch(2, size=224)
    shapes = feature_shapes(net, x)
    assert shapes["stem0"] == (8, 56, 56) and shapes["stem1"] == (8, 28, 28)
    assert [shapes[f"cell{i}"] for i in range(3)] == [(32, 28, 28), (64, 14, 14), (128, 7, 7)]
    logits, aux = net(x)
    assert logits.shape == aux.shape == (2, 5)
    net.eval()
    assert net(x[:1]).shape == (1, 5)


def test_every_op_keeps_channels_and_strides():
    x = torch.randn(2, 6, 8, 8)
    for name, make in OPS.items():
        for stride in (1, 2):
            assert make(6, stride, True)(x).shape == (2, 6, 8 // stride, 8 // stride), (name, stride)
    assert not OPS["none"](6, 2, True)(x).any()
    assert isinstance(OPS["skip_connect"](6, 1, True), nn.Identity)
    assert isinstance(OPS["skip_connect"](6, 2, True), FactorizedReduce)
    # count_include_pad=False: a constant image stays constant at the borders too.
    assert torch.allclose(OPS["avg_pool_3x3"](6, 1, True)(torch.ones(1, 6, 5, 5)), torch.ones(1, 6, 5, 5))


def test_factorized_reduce_needs_even_output_channels():
    assert FactorizedReduce(3, 4)(torch.randn(1, 3, 8, 8)).shape == (1, 4, 4, 4)
    with pytest.raises(HnasError, match="even"):
        FactorizedReduce(4, 5)
    with pytest.raises(HnasError, match="even"):
        NetworkImageNet(7, 10, 3, False, DARTS_V2)


@pytest.mark.parametrize("bad, match", [
    (DARTS_V2._replace(normal=DARTS_V2.normal[:7]), "two"),
    (DARTS_V2._replace(normal=(("conv_9x9", 0),) + DARTS_V2.normal[1:]), "unknown DARTS op"),
    (DARTS_V2._replace(reduce=DARTS_V2.reduce[:2] + (("skip_connect", 3),) + DARTS_V2.reduce[3:]), "input must"),
    (DARTS_V2._replace(normal_concat=(2, 3, 6)), "concat"),
    ("DARTS_V2", "fields"),
])
def test_bad_genotypes_are_rejected(bad, match):
    with pytest.raises(HnasError, match=match):
        NetworkCIFAR(16, 10, 5, False, bad)


def test_bad_settings_are_rejected():
    for args in ((0, 10, 5), (16, 10, 0), (16.0, 10, 5), (16, True, 5)):
        with pytest.raises(HnasError):
            NetworkCIFAR(*args, False, DARTS_V2)
    with pytest.raises(HnasError, match="drop_path_prob"):
        NetworkCIFAR(16, 10, 5, False, DARTS_V2, drop_path_prob=1.0)


# ----------------------------------------------------------------------------------------------------------
# Drop path


def test_drop_path_zeroes_whole_samples_and_rescales_the_rest():
    torch.manual_seed(0)
    out = network.drop_path(torch.ones(4000, 2, 3, 3), 0.25)
    per_sample = out.flatten(1)
    assert torch.equal(per_sample.min(1).values, per_sample.max(1).values)
    values = per_sample[:, 0].unique()
    assert len(values) == 2 and values[0] == 0 and values[1].item() == pytest.approx(1 / 0.75)
    assert abs(float(per_sample[:, 0].ne(0).float().mean()) - 0.75) < 0.03


def test_drop_path_spares_identity_but_not_the_strided_skip():
    skips = Genotype((("skip_connect", 0),) * 8, (2, 3, 4, 5), (("skip_connect", 1),) * 8, (2, 3, 4, 5))
    s0, s1 = torch.randn(4, 8, 8, 8), torch.randn(4, 8, 8, 8)
    torch.manual_seed(0)
    normal, reduction = Cell(skips, 8, 8, 4, False, False), Cell(skips, 8, 8, 4, True, False)
    assert torch.equal(normal(s0, s1, 0.9), normal(s0, s1, 0.0))
    assert not torch.equal(reduction(s0, s1, 0.9), reduction(s0, s1, 0.0))


def test_drop_path_only_in_training_and_deterministic_at_zero():
    torch.manual_seed(0)
    net = NetworkCIFAR(4, 10, 5, False, NAMED["ROBOT_cifar10"])
    x, _ = batch(4)
    with torch.no_grad():
        clean = net(x)
        assert torch.equal(net(x), clean)
        net.drop_path_prob = 0.3
        torch.manual_seed(1)
        dropped = net(x)
        torch.manual_seed(1)
        assert torch.equal(net(x), dropped)
        assert not torch.allclose(dropped, clean)
        net.eval()
        evaluated = net(x)
        net.drop_path_prob = 0.0
        assert torch.equal(net(x), evaluated)


def hook_every_module(net):
    calls = []
    for m in net.modules():
        m.register_full_backward_hook(lambda m, gi, go: calls.append(m))
    return calls


def test_backward_with_drop_path_under_full_backward_hooks():
    torch.manual_seed(0)
    net = NetworkCIFAR(4, 10, 5, True, DARTS_V2, drop_path_prob=0.3)
    calls = hook_every_module(net)
    x, y = batch(4)
    logits, aux = net(x.requires_grad_())
    (nn.functional.cross_entropy(logits, y) + 0.4 * nn.functional.cross_entropy(aux, y)).backward()
    assert calls and x.grad is not None and all(p.grad is not None for p in net.parameters())


def test_the_hooks_catch_the_references_in_place_drop_path(monkeypatch):
    """Shows the test above has teeth: the reference's in-place drop path fails under the same hooks."""
    def in_place(x, prob):
        mask = torch.empty(x.shape[0], 1, 1, 1).bernoulli_(1 - prob)
        return x.div_(1 - prob).mul_(mask)

    monkeypatch.setattr(network, "drop_path", in_place)
    torch.manual_seed(0)
    net = NetworkCIFAR(4, 10, 5, False, DARTS_V2, drop_path_prob=0.3)
    hook_every_module(net)
    with pytest.raises(RuntimeError, match="modified inplace"):
        net(batch(4)[0]).sum().backward()


# ----------------------------------------------------------------------------------------------------------
# Metrics


def test_every_metric_is_a_finite_float_on_the_proxy_network():
    torch.manual_seed(0)
    net = NetworkCIFAR(16, 10, 5, False, DARTS_V2)
    x, y = batch(8)
    values = compute_metrics(net, x, y, list_metrics())
    assert list(values) == list_metrics()
    for name, value in values.items():
        assert isinstance(value, float) and math.isfinite(value), (name, value)
    assert values["params"] == round(PARAMS["DARTS_V2"][3] * 1e6)
    assert values["flops"] == count_macs(net, (3, 32, 32))


@pytest.mark.slow
@pytest.mark.parametrize("cls, c, classes, layers, size", [(NetworkCIFAR, 36, 10, 20, 32),
                                                            (NetworkImageNet, 48, 1000, 14, 224)])
def test_full_size_networks_train_with_auxiliary_head_and_drop_path(cls, c, classes, layers, size):
    torch.manual_seed(0)
    net = cls(c, classes, layers, True, DARTS_V2, drop_path_prob=0.2)
    x, y = batch(2, size=size, classes=classes)
    logits, aux = net(x)
    assert logits.shape == aux.shape == (2, classes)
    (nn.functional.cross_entropy(logits, y) + 0.4 * nn.functional.cross_entropy(aux, y)).backward()
    assert all(p.grad is not None for p in net.parameters())
    assert count_macs(net, (3, size, size)) == count_macs(on_meta(cls, c, classes, layers, True, DARTS_V2),
                                                          (3, size, size))
