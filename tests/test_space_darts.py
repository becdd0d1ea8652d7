from collections import Counter, namedtuple

import numpy as np
import pytest
import torch
from scipy.special import softmax

from conftest import configure

from hnas.errors import HnasError
from hnas.search.space import Universe
from hnas.spaces import create_space, list_spaces
from hnas.spaces.darts import DartsConfig, DartsSpace
from hnas.spaces.darts.genotype import NAMED, PRIMITIVES, genotype_string, parse_genotype
from hnas.spaces.darts.sampling import parse_weights

SPACE = create_space("darts")
FULL = create_space("darts", ops="all")
SAMPLE = SPACE.sample_distinct(1000, 0)
# DARTS_V2 as the DARTS code prints it (darts.md §1.2, written out by hand).
DARTS_V2_REPR = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), "
    "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=range(2, 6))")
DARTS_V2_STRING = (
    "normal=sep_conv_3x3@0,sep_conv_3x3@1|sep_conv_3x3@0,sep_conv_3x3@1|sep_conv_3x3@1,skip_connect@0"
    "|skip_connect@0,dil_conv_3x3@2;reduce=max_pool_3x3@0,max_pool_3x3@1|skip_connect@2,max_pool_3x3@1"
    "|max_pool_3x3@0,skip_connect@2|skip_connect@2,max_pool_3x3@1")
WITHOUT_DIL_5X5 = {"DARTS", "DARTS_V1", "DARTS_V2", "ROBOT_cifar10", "ROBOT_cifar100", "ROBOT_imagenet"}


def genes_of(arch, space=SPACE):
    g = space.genotype(arch)
    return [(cell, i, gene) for cell in ("normal", "reduce") for i, gene in enumerate(getattr(g, cell))]


# ----------------------------------------------------------------------------------------------------------
# Genotype strings


def test_sampled_genotypes_round_trip():
    assert len(set(SAMPLE)) == 1000
    for arch in SAMPLE:
        genotype = parse_genotype(arch)
        assert genotype_string(genotype) == arch and SPACE.validate(arch) == arch
        assert parse_genotype(genotype_string(genotype)) == genotype


def test_official_repr_and_names():
    assert parse_genotype(DARTS_V2_REPR) == NAMED["DARTS_V2"] == NAMED["DARTS"]
    assert SPACE.validate(DARTS_V2_REPR) == SPACE.validate("DARTS_V2") == DARTS_V2_STRING
    # The namedtuple's own repr (tuples, concat as a tuple) and darts.md's spaced notation read the same.
    assert parse_genotype(repr(NAMED["DARTS_V2"])) == NAMED["DARTS_V2"]
    spaced = DARTS_V2_STRING.replace(",", ", ").replace("|", " | ").replace(";", " ; ")
    assert parse_genotype(spaced) == NAMED["DARTS_V2"]
    assert NAMED["DARTS_V2"].normal_concat == (2, 3, 4, 5)


def test_named_genotypes_round_trip_and_membership():
    assert set(NAMED) == {"DARTS", "DARTS_V1", "DARTS_V2", "PDARTS", "TENAS_cifar10", "TENAS_imagenet",
                          "ROBOT_cifar10", "ROBOT_cifar100", "ROBOT_imagenet"}
    for name, genotype in NAMED.items():
        assert parse_genotype(genotype_string(genotype)) == genotype
        assert FULL.validate(name) == genotype_string(genotype)
        if name in WITHOUT_DIL_5X5:
            assert SPACE.validate(name) == genotype_string(genotype)
        else:
            with pytest.raises(HnasError, match="dil_conv_5x5.*space.ops=all"):
                SPACE.validate(name)
    # spot checks against darts.md §1.2 (gene order as listed there)
    assert NAMED["DARTS_V1"].normal[:2] == (("sep_conv_3x3", 1), ("sep_conv_3x3", 0))
    assert NAMED["PDARTS"].reduce[7] == ("dil_conv_5x5", 3)
    assert NAMED["TENAS_imagenet"].normal[2] == ("dil_conv_5x5", 1)
    assert NAMED["ROBOT_imagenet"].reduce[3] == ("dil_conv_3x3", 2)


def test_concat_is_written_only_when_not_standard():
    odd = NAMED["DARTS_V1"]._replace(reduce_concat=(2, 4, 5))
    text = genotype_string(odd)
    assert text.endswith(";reduce_concat=2,4,5") and "normal_concat" not in text
    assert parse_genotype(text) == odd
    with pytest.raises(HnasError, match="concat of nodes 2..5"):
        FULL.validate(text)


@pytest.mark.parametrize("text, why", [
    (DARTS_V2_STRING.replace("dil_conv_3x3", "conv_7x1_1x7"), "unknown op 'conv_7x1_1x7'"),
    (DARTS_V2_STRING.replace("sep_conv_3x3@1", "sep_conv_3x3@5", 1), "node 2 takes inputs 0..1"),
    (DARTS_V2_REPR.replace(", ('dil_conv_3x3', 2)]", "]"),
     "has 7 .op, input. genes, expected 8"),
    (DARTS_V2_STRING.replace("|skip_connect@0,dil_conv_3x3@2", ""), "has 3 nodes"),
    (DARTS_V2_STRING.replace(",dil_conv_3x3@2", ""), "node 5 of the normal cell has 1 genes"),
    (DARTS_V2_STRING + ";normal_concat=5,2", "must be increasing node numbers"),
    (DARTS_V2_REPR.replace("range(2, 6)", "range(2, 9)"), "must be increasing node numbers"),
    ("garbage", "'garbage' is not one of"),
    ("normal=sep_conv_3x3", "the normal cell has 1 nodes"),
    ("Genotype(normal=__import__('os').system('true'))", "is not a literal"),
    ("Genotype(normal=[", "not valid Genotype"),
])
def test_malformed_strings_say_what_is_wrong(text, why):
    with pytest.raises(HnasError, match=why) as error:
        SPACE.validate(text)
    assert "for example" in str(error.value) and DARTS_V2_STRING in str(error.value)


@pytest.mark.parametrize("text, why", [
    (DARTS_V2_STRING.replace("skip_connect@0,dil_conv_3x3@2", "skip_connect@2,dil_conv_3x3@2"),
     "node 5 of its normal cell takes input 2 twice"),
    (DARTS_V2_STRING.replace("dil_conv_3x3", "none"), "uses none, which the DARTS parse never chooses"),
])
def test_genotypes_outside_the_space(text, why):
    parse_genotype(text)  # well formed
    with pytest.raises(HnasError, match=why):
        FULL.validate(text)


# ----------------------------------------------------------------------------------------------------------
# HNAS's pool


def test_parse_rule_on_hand_made_weights():
    w = np.full((2, 14, 8), 0.05)
    # node 2 (rows 0, 1): `none` is input 0's largest weight but does not count; its ops tie (first wins)
    w[0, 0, 0], w[0, 1, 4] = 0.99, 0.5
    # node 3 (rows 2..4): input 0 has only `none`; inputs 1 and 2 tie on strength, the lower comes first
    w[0, 2, 0], w[0, 3, 6], w[0, 4, 2] = 0.9, 0.6, 0.6
    # node 4 (rows 5..8): input 3 strongest, then input 0
    w[0, 8, 5], w[0, 5, 3], w[0, 6, 1] = 0.7, 0.4, 0.3
    # node 5 (rows 9..13): input 2's two best ops tie (skip_connect, column 3, wins), then input 4
    w[0, 11, 3], w[0, 11, 4], w[0, 13, 1], w[0, 10, 7] = 0.8, 0.8, 0.3, 0.2
    w[1] = w[0]
    seven = parse_weights(w[:, :, :7])
    assert seven.normal == (("sep_conv_3x3", 1), ("max_pool_3x3", 0),
                            ("dil_conv_3x3", 1), ("avg_pool_3x3", 2),
                            ("sep_conv_5x5", 3), ("skip_connect", 0),
                            ("skip_connect", 2), ("max_pool_3x3", 4))
    assert seven.reduce == seven.normal and seven.normal_concat == seven.reduce_concat == (2, 3, 4, 5)
    # with the 8th column (dil_conv_5x5) input 1 of node 5 now beats input 4
    w[0, 10, 7] = 0.5
    assert parse_weights(w).normal[6:] == (("skip_connect", 2), ("dil_conv_5x5", 1))


def reference_parse(weights):
    """The reference's parse of one cell's softmaxed (14, columns) weights, as darts.md §2.2 states it."""
    genes, start = [], 0
    for i in range(4):
        rows = weights[start:start + i + 2]
        edges = sorted(range(i + 2), key=lambda x: -max(rows[x][k] for k in range(len(rows[x])) if k != 0))[:2]
        for j in edges:
            best = None
            for k in range(1, len(rows[j])):
                if best is None or rows[j][k] > rows[j][best]:
                    best = k
            genes.append((PRIMITIVES[best], j))
        start += i + 2
    return genes


def reference_pool(seed, draws):
    """The keys of HNAS's pool (darts.md §2.1): global numpy RNG, str() of a namedtuple holding lists and
    range(2, 6), duplicates dropped in insertion order."""
    reference_genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        weights = [np.random.rand(28, 7) for _ in range(draws)]
    finally:
        np.random.set_state(state)
    pool = {}
    for w in weights:
        w = w.reshape(2, 14, 7)
        normal, reduce = (reference_parse(softmax(w[c], axis=-1)) for c in (0, 1))
        pool.setdefault(str(reference_genotype(normal, range(2, 6), reduce, range(2, 6))), None)
    return list(pool)


def test_pool_matches_an_independent_rederivation():
    keys = reference_pool(0, 20)
    assert len(keys) == 20 and keys[0].startswith("Genotype(normal=[(")
    assert [parse_genotype(k) for k in keys] == [SPACE.genotype(a) for a in SAMPLE[:20]]
    assert [SPACE.validate(k) for k in reference_pool(7, 5)] == SPACE.sample_distinct(5, 7)


def test_samples_extend_and_depend_on_the_seed():
    assert SPACE.sample_distinct(30, 0) == SAMPLE[:30]
    assert SPACE.sample_distinct(0, 0) == []
    assert SPACE.sample_distinct(30, 1) != SAMPLE[:30]
    with pytest.raises(HnasError, match="cannot sample -1"):
        SPACE.sample_distinct(-1, 0)


def test_op_sets():
    hnas_ops = Counter(op for arch in SPACE.sample_distinct(2000, 3) for _, _, (op, _) in genes_of(arch))
    assert set(hnas_ops) == set(PRIMITIVES[1:7])  # HNAS's quirk: never dil_conv_5x5 (nor none)
    full_ops = Counter(op for arch in FULL.sample_distinct(2000, 3) for _, _, (op, _) in genes_of(arch, FULL))
    assert set(full_ops) == set(PRIMITIVES[1:])
    assert full_ops["dil_conv_5x5"] > 2000 * 16 / 7 * 0.9  # about as often as any op


def test_size_counts_ordered_input_pairs():
    # nodes 2..5 have 2, 3, 4, 5 inputs: 2*1, 3*2, 4*3, 5*4 ordered pairs; an op per gene, 8 genes a cell
    assert SPACE.size == (2 * 6 * 12 * 20 * 6 ** 8) ** 2 == 4_837_294_080 ** 2  # darts.md §2.1: about 4.8e9 cells
    assert FULL.size == (2 * 6 * 12 * 20 * 7 ** 8) ** 2
    with pytest.raises(HnasError, match="too many to enumerate.*stage.limit=N"):
        SPACE.all_archs()


# ----------------------------------------------------------------------------------------------------------
# Search: mutation and decisions


def test_mutate_changes_one_gene_within_the_space():
    rng = np.random.RandomState(0)
    kinds = Counter()
    for parent in SAMPLE[:300]:
        for _ in range(4):
            child = SPACE.mutate(parent, rng)
            assert SPACE.validate(child) == child != parent
            diff = [(a, b) for a, b in zip(genes_of(parent), genes_of(child)) if a != b]
            assert len(diff) == 1
            (cell, i, (op, source)), (_, _, (new_op, new_source)) = diff[0]
            assert (op == new_op) != (source == new_source)
            kinds["op" if op != new_op else "input"] += 1
            assert source == new_source or i >= 2  # node 2 can only change an op
    # the documented rule: an input change needs nodes 3..5 (12 of 16 genes) and the coin: 3/8
    assert abs(kinds["input"] / sum(kinds.values()) - 3 / 8) < 0.05


def test_mutations_are_mutates_distribution():
    children = dict(SPACE.mutations("DARTS_V2"))
    # 5 other ops for each of 16 genes; new inputs: 1, 2, 3 for the genes of nodes 3, 4, 5, in both cells
    assert len(children) == 16 * 5 + 2 * 2 * (1 + 2 + 3)
    assert abs(sum(children.values()) - 1) < 1e-12
    v2 = NAMED["DARTS_V2"]
    first_op = v2._replace(normal=(("max_pool_3x3", 0),) + v2.normal[1:])
    assert children[genotype_string(first_op)] == pytest.approx(1 / 2 * 1 / 4 * 1 / 2 * 1 / 5)
    # normal gene 6 (node 5, inputs 0 and 2) to input 3: 1/2 cell, 1/4 node, 1/2 gene, 1/2 coin, 1/3 input
    moved = v2._replace(normal=v2.normal[:6] + (("skip_connect", 3),) + v2.normal[7:])
    assert children[genotype_string(moved)] == pytest.approx(1 / 96)
    # REA within a universe (a metric table's archs) draws from these
    universe = Universe(SPACE, SAMPLE[:50] + [genotype_string(moved)])
    assert universe.mutate(SPACE.validate("DARTS_V2"), np.random.RandomState(0)) == genotype_string(moved)


def test_decisions_encode_decode():
    widths = [len(options) for options in SPACE.decisions]
    assert widths == [2, 6, 6, 6, 6, 6, 12, 6, 6, 20, 6, 6] * 2
    assert SPACE.encode("DARTS_V2")[:6] == ("0,1", "sep_conv_3x3", "sep_conv_3x3",
                                            "0,1", "sep_conv_3x3", "sep_conv_3x3")
    for arch in SAMPLE[:300]:
        assert SPACE.decode(SPACE.encode(arch)) == arch
    rng = np.random.RandomState(0)
    for _ in range(50):  # every combination of choices is an architecture
        choices = [options[rng.randint(len(options))] for options in FULL.decisions]
        assert FULL.encode(FULL.decode(choices)) == tuple(choices)
    with pytest.raises(HnasError, match="DARTS choices"):
        SPACE.decode(("1,1",) + SPACE.encode("DARTS_V2")[1:])
    assert Universe(SPACE, SAMPLE[:20]).choice_indices.shape == (20, 24)


# ----------------------------------------------------------------------------------------------------------
# Registry, config, seeds and networks


def test_registry_and_options():
    assert "darts" in list_spaces() and isinstance(SPACE, DartsSpace)
    assert (SPACE.ops, SPACE.init_channels, SPACE.layers) == ("hnas", 16, 5)
    for bad in ({"ops": "nb201"}, {"layers": 2}, {"init_channels": 0}, {"init_channels": True}):
        with pytest.raises(HnasError, match="space."):
            DartsSpace(**bad)
    with pytest.raises(HnasError, match="space.ops='six'"):
        DartsConfig(ops="six")


def test_config_composes():
    cfg = configure("space=darts")
    assert cfg.space == DartsConfig() and cfg.probe.batch_size == 64
    # ops are checked before layers: the error names layers only if ops=all passed
    with pytest.raises(HnasError, match="space.layers=2"):
        configure("space=darts", "space.ops=all", "space.layers=2")


def test_arch_seed_and_seeded_builds():
    seed = SPACE.arch_seed(0, DARTS_V2_REPR)
    assert seed == SPACE.arch_seed(0, "DARTS_V2") == SPACE.arch_seed(0, DARTS_V2_STRING)
    assert len({seed, SPACE.arch_seed(1, "DARTS_V2"), SPACE.arch_seed(0, "DARTS_V1")}) == 3
    small = create_space("darts", init_channels=4, layers=3)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = (small.build_seeded("DARTS_V2", 0, 10) for _ in range(2))
    assert torch.rand(1) == before  # the global RNG is left alone
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = small.build_seeded("DARTS_V1", 0, 10)
    assert type(a).__name__ == "NetworkCIFAR" and a.genotype == NAMED["DARTS_V2"]
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_build_for_training_picks_the_network_by_input_size():
    def build(input_size):
        return SPACE.build_for_training("DARTS_V2", 10, init_channels=8, layers=3, auxiliary=False,
                                        input_size=input_size)
    assert type(build(32)).__name__ == "NetworkCIFAR"
    assert type(build(224)).__name__ == "NetworkImageNet"
