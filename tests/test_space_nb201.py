import random

import pytest
import torch

from conftest import benchmark_text, needs_data

from hnas.errors import HnasError
from hnas.spaces import create_space, list_spaces, nb201

A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
D = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
SPACE = create_space("nb201")


def test_parse_round_trip():
    ops = nb201.parse(A)
    assert ops == ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_3x3")
    assert nb201.to_string(ops) == A


@pytest.mark.parametrize("bad, hint", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|", "3"),                             # missing a node
    (A.replace("nor_conv_3x3~1", "conv9x9~1"), "unknown op 'conv9x9'"),      # unknown op
    (A.replace("skip_connect~0", "skip_connect~1"), "op~0"),                 # wrong input node
    (A.replace("|+|", "+", 1), "start and end"),                            # broken separators
    ("", "node groups"),
    (42, "expected a string"),
])
def test_malformed_arch_shows_expected_form(bad, hint):
    with pytest.raises(HnasError) as error:
        nb201.parse(bad)
    message = str(error.value)
    assert hint in message
    assert "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|" in message


def test_enumeration_is_complete_and_distinct():
    archs = nb201.all_archs()
    assert len(archs) == len(set(archs)) == 15625 == nb201.NUM_ARCHS
    assert all(nb201.validate(a) == a for a in archs[:50])


def test_sampling_is_seeded_and_uniform_without_replacement():
    sample = SPACE.sample_distinct
    first, again, other = sample(500, seed=3), sample(500, seed=3), sample(500, seed=4)
    assert first == again and first != other
    assert len(set(first)) == 500
    assert sample(100, seed=3) == first[:100]  # a larger sample extends a smaller one
    # Uniform: each op should appear on each edge about 1/5 of the time.
    counts = [sum(nb201.parse(a)[0] == op for a in first) for op in nb201.OPS]
    assert min(counts) > 60 and max(counts) < 140
    with pytest.raises(HnasError, match="cannot sample 20000 nb201 architectures: the space has 15625"):
        sample(20000, seed=0)


def test_official_index_round_trip():
    from hnas.oracles import official_indexer

    rows = benchmark_text().splitlines()[1:]
    for line in random.Random(0).sample(rows, 20):
        index, arch = line.split(",")[:2]
        assert official_indexer("nb201")(arch) == int(index)
    assert official_indexer("toy")("a|b") is None  # no oracle for that space


def test_reference_layout_parameters_match_the_reference_network():
    for arch in (A, D, SPACE.sample_distinct(1, seed=1)[0]):
        torch.manual_seed(0)
        net = nb201.build(arch, num_classes=10, layout="reference")
        assert sum(p.numel() for p in net.parameters()) == 1_692_826
        total = sum(p.detach().double().sum() for p in net.parameters()).item()
        assert total == pytest.approx(298.10518409866535, rel=1e-12)


def test_compact_layout_parameters_equal_the_benchmark_table():
    rows = [line.split(",") for line in benchmark_text().splitlines()[1:]]
    # params_m is exact (a whole number of parameters) for all but 204 rows; compare only those.
    exact = [r for r in rows if abs(float(r[2]) * 1e6 - round(float(r[2]) * 1e6)) < 1e-6]
    for _, arch, params_m, *_ in random.Random(1).sample(exact, 30):
        net = nb201.build(arch, num_classes=10, layout="compact")
        assert sum(p.numel() for p in net.parameters()) == round(float(params_m) * 1e6)


@needs_data
@pytest.mark.parametrize("layout", nb201.LAYOUTS)
def test_both_layouts_run_forward_on_real_cifar10(layout):
    from hnas.data import probe_batch

    x, y = probe_batch("cifar10", 16, seed=0)
    assert x.shape == (16, 3, 32, 32)
    net = nb201.build(A, num_classes=10, layout=layout)
    logits = net(x)
    assert logits.shape == (16, 10) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, y).backward()
    assert net.classifier.weight.grad.abs().sum() > 0


def test_degenerate_cell_output_is_zero():
    assert nb201.is_degenerate(D) and not nb201.is_degenerate(A)
    assert nb201.is_degenerate("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|")
    assert not nb201.is_degenerate("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|")
    cell = nb201.build(D, layout="compact").cells[0]
    assert cell(torch.randn(2, 16, 8, 8)).abs().max() == 0


def test_seeded_build_is_order_independent_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = SPACE.build_seeded(A, run_seed=5, num_classes=10)
    SPACE.build_seeded(D, run_seed=5, num_classes=10)
    again = SPACE.build_seeded(A, run_seed=5, num_classes=10)
    assert torch.equal(torch.random.get_rng_state(), before)
    for p, q in zip(first.parameters(), again.parameters()):
        assert torch.equal(p, q)
    other_seed = SPACE.build_seeded(A, run_seed=6, num_classes=10)
    assert not torch.equal(first.stem[0].weight, other_seed.stem[0].weight)


def test_without_batchnorm_keeps_reference_reduction_batchnorms():
    torch.manual_seed(0)
    net = nb201.build(A, layout="reference")
    stripped = net.without_batchnorm()
    remaining = [name for name, m in stripped.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert remaining and all(".conv_a." in name or ".conv_b." in name for name in remaining)
    assert len(remaining) == 4  # conv_a and conv_b of both reductions
    compact = nb201.build(A, layout="compact").without_batchnorm()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in compact.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched


def test_space_registry():
    assert "nb201" in list_spaces()
    space = create_space("nb201", layout="reference")
    assert isinstance(space, nb201.NB201Space) and space.layout == "reference"
    assert space.size == 15_625 and space.all_archs() == nb201.all_archs()
    torch.manual_seed(0)
    expected = nb201.build(A, num_classes=10, layout="reference")
    torch.manual_seed(0)
    built = space.build(A, num_classes=10)
    assert all(torch.equal(p, q) for p, q in zip(built.parameters(), expected.parameters()))
    with pytest.raises(HnasError, match="unknown search space 'nb999'"):
        create_space("nb999")
    with pytest.raises(HnasError, match="unknown NB201 layout"):
        create_space("nb201", layout="fancy")


def test_unknown_layout_is_rejected():
    with pytest.raises(HnasError, match="layout"):
        nb201.build(A, layout="fancy")
