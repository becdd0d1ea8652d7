"""The NB101 network: the benchmark's parameter counts, the vertex channel rule, shapes, the in-place add trap
of the zero-cost-nas port, both initialisations, and every metric of the engine on it."""

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import DATA, needs_data

from hnas.errors import HnasError
from hnas.metrics import compute_metrics, list_metrics
from hnas.spaces.nb101.network import Cell, NB101Network, vertex_channels

torch.set_num_threads(2)

C3, C1, MP = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"
# The README's "Inception-like" cell as the README writes it; its trainable_parameters is 2,694,282 (the
# official NASBench.ipynb output), and the dataset stores it in the isomorphic canonical form below.
README = ((0, 1, 1, 1, 0, 1, 0), (0, 0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 1, 0, 0),
          (0, 0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, 0, 0))
README_OPS = ("input", C1, C3, C3, C3, MP, "output")
CANONICAL = ((0, 1, 1, 1, 1, 0, 0), (0, 0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, 0, 1),
             (0, 0, 0, 0, 0, 1, 0), (0, 0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, 0, 0))
CANONICAL_OPS = ("input", C3, C1, MP, C3, C3, "output")
TWO_VERTEX = ((0, 1), (0, 0))
TWO_VERTEX_OPS = ("input", "output")


def params(net):
    return sum(p.numel() for p in net.parameters())


def cells(net):
    return [m for m in net.modules() if isinstance(m, Cell)]


@needs_data
def test_parameter_counts_equal_the_benchmark_for_the_fixture_cells():
    with open(DATA / "naslib-test-assets" / "nb101_dummy.pkl", "rb") as f:
        table = pickle.load(f)
    assert len(table) == 30
    for fixed, _ in table.values():
        net = NB101Network(fixed["module_adjacency"], fixed["module_operations"])
        assert params(net) == fixed["trainable_parameters"]


@pytest.mark.parametrize("matrix, ops, expected", [
    (README, README_OPS, 2_694_282),          # NASBench.ipynb
    (CANONICAL, CANONICAL_OPS, 2_694_282),    # the same cell as stored
    # Derived, no published source: stem 3*128*9 + 256, then one 1x1 conv-bn-relu projection per cell
    # (3 x (128*128 + 256); 128*256 + 512 + 2 x (256*256 + 512); 256*512 + 1024 + 2 x (512*512 + 1024)),
    # and the dense layer 512*10 + 10.
    (TWO_VERTEX, TWO_VERTEX_OPS, 882_570),
])
def test_parameter_counts_of_the_readme_and_two_vertex_cells(matrix, ops, expected):
    assert params(NB101Network(matrix, ops)) == expected


def test_vertex_channels_of_the_readme_cell_in_each_stack():
    net = NB101Network(README, README_OPS)
    layout = [c.channels for c in cells(net)]
    assert len(layout) == 9
    assert layout[0] == layout[1] == layout[2] == [128] + [32] * 5 + [128]
    assert layout[3] == [128] + [64] * 5 + [256]
    assert layout[4] == layout[5] == [256] + [64] * 5 + [256]
    assert layout[6] == [256] + [128] * 5 + [512]
    assert layout[7] == layout[8] == [512] + [128] * 5 + [512]


def test_vertex_channels_split_remainders_and_take_the_largest_successor():
    three_feeders = ((0, 1, 1, 1, 0), (0, 0, 0, 0, 1), (0, 0, 0, 0, 1), (0, 0, 0, 0, 1), (0, 0, 0, 0, 0))
    assert vertex_channels(64, 128, three_feeders) == [64, 43, 43, 42, 128]   # 128 = 43 + 43 + 42
    # vertex 1 feeds vertices 2 (9 channels) and 3 (8): it takes 9, and vertex 3 gets it cut to 8
    fork = ((0, 1, 0, 0, 0), (0, 0, 1, 1, 0), (0, 0, 0, 0, 1), (0, 0, 0, 0, 1), (0, 0, 0, 0, 0))
    assert vertex_channels(17, 17, fork) == [17, 9, 9, 8, 17]
    assert vertex_channels(128, 256, TWO_VERTEX) == [128, 256]
    got = vertex_channels(np.int64(128), np.int64(128), np.array(README))
    assert got == [128] + [32] * 5 + [128] and all(type(c) is int for c in got)


def test_output_shape_and_feature_map_sizes():
    torch.manual_seed(0)
    net = NB101Network(README, README_OPS, num_classes=7, stem_channels=16)
    seen = []
    hooks = [c.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[1:]))) for c in cells(net)]
    out = net(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 7)
    assert seen == [(16, 32, 32)] * 3 + [(32, 16, 16)] * 3 + [(64, 8, 8)] * 3


def finite_nonzero_gradients(net, batch=2):
    torch.manual_seed(1)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    F.cross_entropy(net(x), y).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


@pytest.mark.parametrize("matrix, ops", [
    (((0, 1, 1), (0, 0, 1), (0, 0, 0)), ("input", C3, "output")),
    (((0, 1, 0, 1), (0, 0, 1, 0), (0, 0, 0, 1), (0, 0, 0, 0)), ("input", C3, C1, "output")),
], ids=["conv", "chain"])
def test_backward_through_the_in_place_trap(matrix, ops):
    # One conv vertex feeds the output and input->output exists: the zero-cost-nas port's `outputs += ...`
    # modifies that vertex's ReLU output in place and backward raises.
    torch.manual_seed(0)
    finite_nonzero_gradients(NB101Network(matrix, ops, stem_channels=16))


def test_backward_through_a_truncated_edge():
    fork = ((0, 1, 0, 0, 0), (0, 0, 1, 1, 0), (0, 0, 0, 0, 1), (0, 0, 0, 0, 1), (0, 0, 0, 0, 0))
    torch.manual_seed(0)
    net = NB101Network(fork, ("input", C3, C1, MP, "output"), stem_channels=17)  # 17 = 9 + 8: cut by one
    assert cells(net)[0].channels == [17, 9, 9, 8, 17]
    finite_nonzero_gradients(net)


def test_two_vertex_cell_runs():
    torch.manual_seed(0)
    finite_nonzero_gradients(NB101Network(TWO_VERTEX, TWO_VERTEX_OPS, stem_channels=16))


def convs_of_stack_2(net):
    """Two convs of the first cell of the last stack of the full-size README cell: vertex 2's 3x3 conv
    (128 -> 128, 147,456 weights) and the input's 1x1 projection to vertex 1 (256 -> 128, 32,768 weights),
    whose fan-in and fan-out differ."""
    cell = cells(net)[6]
    conv3x3, projection = cell.vertex_ops[1][0], cell.projections["1"][0]
    assert (conv3x3.kernel_size, conv3x3.in_channels, conv3x3.out_channels) == ((3, 3), 128, 128)
    assert (projection.kernel_size, projection.in_channels, projection.out_channels) == ((1, 1), 256, 128)
    return [(conv3x3.weight.detach(), 9, 128, 128), (projection.weight.detach(), 1, 256, 128)]


def test_port_init_is_he_fan_out_normal_and_dense_normal():
    torch.manual_seed(0)
    net = NB101Network(README, README_OPS, init="port")
    for w, k2, c_in, c_out in convs_of_stack_2(net):
        std = math.sqrt(2.0 / (k2 * c_out))
        assert float(w.std()) == pytest.approx(std, rel=0.02)
        assert float(w.abs().max()) > 3 * std  # untruncated
    dense = net.classifier.weight.detach()
    assert float(dense.std()) == pytest.approx(0.01, rel=0.05)
    assert not net.classifier.bias.any()


def test_tf_init_is_fan_in_truncated_normal_and_glorot_uniform():
    torch.manual_seed(0)
    net = NB101Network(README, README_OPS, init="tf")
    for w, k2, c_in, c_out in convs_of_stack_2(net):
        std = math.sqrt(1.0 / (k2 * c_in))
        bound = 2 * std / 0.87962566103423978  # truncated at two std of the untruncated normal
        assert float(w.std()) == pytest.approx(std, rel=0.02)
        assert 0.99 * bound < float(w.abs().max()) <= bound
    limit = math.sqrt(6.0 / (512 + 10))
    dense = net.classifier.weight.detach()
    assert 0.99 * limit < float(dense.abs().max()) <= limit
    assert float(dense.std()) == pytest.approx(limit / math.sqrt(3), rel=0.05)
    assert not net.classifier.bias.any()


@pytest.mark.parametrize("init", ["port", "tf"])
def test_init_is_reproducible_and_batchnorm_starts_at_identity(init):
    def build(seed):
        torch.manual_seed(seed)
        return NB101Network(README, README_OPS, stem_channels=16, init=init).state_dict()

    first, again, other = build(3), build(3), build(4)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["classifier.weight"], other["classifier.weight"])
    bn = [k[:-len(".weight")] for k in first if k.endswith(".weight") and first[k].dim() == 1]
    assert bn and all(first[k + ".weight"].eq(1).all() and not first[k + ".bias"].any() for k in bn)


@pytest.mark.parametrize("init", ["port", "tf"])
def test_every_metric_is_a_finite_float(init):
    torch.manual_seed(0)
    net = NB101Network(README, README_OPS, stem_channels=16, init=init)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32, generator=generator), torch.randint(0, 10, (4,), generator=generator)
    values = compute_metrics(net, x, y, list_metrics())
    assert list(values) == list_metrics()
    for name, value in values.items():
        assert isinstance(value, float) and math.isfinite(value), (name, value)


@pytest.mark.parametrize("matrix, ops", [
    (5, TWO_VERTEX_OPS),                                                   # not a matrix
    (((0, 1, 0), (0, 0, 1)), ("input", C3, "output")),                     # not square
    (((0, 2), (0, 0)), TWO_VERTEX_OPS),                                    # not 0/1
    (((0, 1), (1, 0)), TWO_VERTEX_OPS),                                    # an edge below the diagonal
    (((0, 0), (0, 0)), TWO_VERTEX_OPS),                                    # no input -> output path
    (TWO_VERTEX, ("input", C3, "output")),                                 # one op too many
    (TWO_VERTEX, ("output", "input")),                                     # input and output swapped
    (((0, 1, 0), (0, 0, 1), (0, 0, 0)), ("input", "conv5x5", "output")),  # unknown op
])
def test_bad_cells_are_rejected(matrix, ops):
    with pytest.raises(HnasError):
        NB101Network(matrix, ops)


@pytest.mark.parametrize("matrix", [
    ((0, 1, 1), (0, 0, 0), (0, 0, 0)),   # vertex 1 feeds nothing
    ((0, 0, 1), (0, 0, 1), (0, 0, 0)),   # vertex 1 is fed by nothing
])
def test_unpruned_cells_are_rejected_with_their_pruned_form(matrix):
    with pytest.raises(HnasError, match="not pruned") as error:
        NB101Network(matrix, ("input", C3, "output"))
    assert "((0, 1), (0, 0)), ('input', 'output')" in str(error.value)
    with pytest.raises(HnasError, match="not pruned"):
        vertex_channels(16, 16, matrix)


def test_bad_settings_are_rejected():
    with pytest.raises(HnasError, match="unknown NB101 init 'he'; choose one of: port, tf"):
        NB101Network(README, README_OPS, init="he")
    with pytest.raises(HnasError, match="num_stacks=0 is invalid: a positive integer"):
        NB101Network(README, README_OPS, num_stacks=0)
    with pytest.raises(HnasError, match="cannot split 3 channels among the 4 vertices"):
        NB101Network(README, README_OPS, stem_channels=3)


@needs_data
def test_parameter_counts_equal_naslibs_for_the_zero_cost_cells():
    """NASLib's zero-cost JSON records `params` (millions) of the network it built for each of its 500 cell
    spellings (292 cells; isomorphic spellings may split channels differently, so counts are per spelling)."""
    import json

    from hnas.spaces.nb101.spec import check_spec, from_naslib

    with open(DATA / "naslib-zc-proxies" / "zc_nasbench101.json") as f:
        entries = json.load(f)["nasbench101"]["cifar10"]
    expected = {check_spec(*from_naslib(key)): value["params"] for key, value in entries.items()}
    assert len(expected) > 292  # distinct pruned spellings
    for (matrix, ops), millions in expected.items():
        assert params(NB101Network(matrix, ops)) / 1e6 == pytest.approx(millions, abs=1e-6), (matrix, ops)
