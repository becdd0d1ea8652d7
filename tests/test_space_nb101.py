import gzip
import itertools
import json
import pickle

import numpy as np
import pytest
import torch

from conftest import DATA, needs_data

from hnas.errors import HnasError
from hnas.spaces import create_space, list_spaces
from hnas.spaces.nb101 import NB101Config, NB101Space
from hnas.spaces.nb101.hashing import OPS, spec_hash
from hnas.spaces.nb101.space import cells_path, read_archs, write_cells
from hnas.spaces.nb101.spec import (arch_string, canonical_cells, check_spec, from_labels, from_naslib, is_valid,
                                    padded, parse, prune)

SPACE = create_space("nb101")
# The README cell as the README writes it, and as the dataset stores it (nasbench NASBench.ipynb output).
README_WRITTEN = "c1-c3-c3-c3-mp_0111010.0000001.0000001.0000100.0000001.0000001.0000000"
README_STORED = "c3-c1-mp-c3-c3_0111100.0000001.0000001.0000001.0000010.0000001.0000000"
# Published (hash, stored form) pairs (/work/shared/nb101.md section 1.4).
PUBLISHED = [
    ("28cfc7874f6d200472e1a9dcd8650aa0", README_STORED),
    ("ff92c322c5d9d3d587d9c146a63d0807", "c3-c1-c1-c3-c1_0101000.0011100.0001000.0000001.0000010.0000001.0000000"),
    ("ff940d27cbe9ed0a639a68a9c3f87283", "mp-c3-c1-c1-c3_0110110.0000100.0001000.0000100.0000010.0000001.0000000"),
    ("ff958f8d8f556448ff2a5973f17ff22a", "c3-c1-mp-mp_011001.000011.000100.000011.000001.000000"),
    ("ff9713ff8e7d4d6a2ea61994a8bdd447", "c1-c3-c1-c3_011101.001010.000001.000010.000001.000000"),
    ("ff9707907f5c17ef8f80cc68fff30f74", "c1-c1-mp-c3_010101.001000.000100.000010.000001.000000"),
    ("043721b9c7fe8c5fad811d47d83132ec", "_01.00"),
]
README_PARAMS = 2_694_282  # its official trainable_parameters (NASBench.ipynb)


def fixture_cells():
    """{hash: stored arch} of the 30 real cells of NASLib's nb101_dummy.pkl (their fixed statistics)."""
    with open(DATA / "naslib-test-assets" / "nb101_dummy.pkl", "rb") as f:
        table = pickle.load(f)
    return {h: arch_string(fixed["module_adjacency"], fixed["module_operations"]) for h, (fixed, _) in table.items()}


def zc_entries():
    with open(DATA / "naslib-zc-proxies" / "zc_nasbench101.json") as f:
        return json.load(f)["nasbench101"]["cifar10"]


def matrix_of(*text):
    return [[int(c) for c in row] for row in text]


def relabelled(arch, order):
    """`arch` with its interior vertices in `order` (a permutation of 1..n-2): old vertex order[i-1] becomes
    vertex i. None when that would make an edge point backwards."""
    matrix, ops = parse(arch)
    n = len(matrix)
    old = (0,) + tuple(order) + (n - 1,)
    rows = [[matrix[old[i]][old[j]] for j in range(n)] for i in range(n)]
    if any(rows[i][j] for i in range(n) for j in range(i + 1)):
        return None
    return arch_string(rows, [ops[v] for v in old])


def official_first_of_hash(max_vertices):
    """What nasbench's generate_graphs.py keeps, written out here from its description: for each vertex
    count, every matrix by its bit mask (edge x -> y is bit x + y(y-1)/2) with no dangling vertex and at most
    9 edges, every labelling in itertools.product order; the first graph of each hash."""
    first = {}
    for n in range(2, max_vertices + 1):
        pairs = [(x, y) for y in range(n) for x in range(y)]
        for bits in range(2 ** len(pairs)):
            rows = [[0] * n for _ in range(n)]
            for i, (x, y) in enumerate(pairs):
                rows[x][y] = bits >> i & 1
            dangling = (any(not any(rows[v]) for v in range(n - 1))
                        or any(not any(rows[x][v] for x in range(n)) for v in range(1, n)))
            if dangling or sum(map(sum, rows)) > 9:
                continue
            for labels in itertools.product(OPS, repeat=n - 2):
                ops = ("input",) + labels + ("output",)
                first.setdefault(spec_hash(rows, ops), arch_string(rows, ops))
    return list(first.values())


# ----------------------------------------------------------------------------------------------------------
# Hash and canonical form


@pytest.mark.parametrize("expected, arch", PUBLISHED)
def test_published_hashes_and_stored_forms(expected, arch):
    assert SPACE.hash(arch) == expected
    assert SPACE.validate(arch) == arch  # the stored form is the canonical one


def test_readme_cell_as_written_is_stored_in_its_isomorphic_canonical_form():
    assert SPACE.hash(README_WRITTEN) == "28cfc7874f6d200472e1a9dcd8650aa0"
    assert SPACE.validate(README_WRITTEN) == README_STORED
    assert SPACE.spec(README_WRITTEN) == parse(README_STORED)


@needs_data
def test_fixture_cells_hash_to_their_keys_and_are_stored_canonical():
    cells = fixture_cells()
    assert len(cells) == 30
    for expected, arch in cells.items():
        assert SPACE.hash(arch) == expected
        assert SPACE.validate(arch) == arch


@needs_data
def test_every_relabelling_of_a_fixture_cell_gives_its_stored_form():
    spellings = 0
    for expected, arch in fixture_cells().items():
        n = len(parse(arch)[0])
        for order in itertools.permutations(range(1, n - 1)):
            other = relabelled(arch, order)
            if other is not None:
                spellings += 1
                assert SPACE.validate(other) == arch and SPACE.hash(other) == expected
    assert spellings > 30  # some cells have spellings other than their stored one


@needs_data
def test_naslib_zero_cost_keys_give_292_cells():
    entries = zc_entries()
    assert len(entries) == 500
    specs = [from_naslib(key) for key in entries]
    archs = [SPACE.validate(arch_string(*spec)) for spec in specs]
    hashes = [SPACE.hash(arch) for arch in archs]
    assert len(set(hashes)) == len(set(archs)) == 292
    assert archs.count("_01.00") == hashes.count("043721b9c7fe8c5fad811d47d83132ec") == 55
    assert sum(prune(*spec) != spec for spec in specs) == 499  # all but one key need pruning
    assert any(sum(map(sum, spec[0])) > 9 for spec in specs)  # raw edge counts above the limit
    runs = {}
    for key, h in zip(entries, hashes):
        runs.setdefault(h, set()).add(entries[key]["val_accuracy"])
    assert max(map(len, runs.values())) <= 3  # one of 3 runs per query: a cell shows at most 3 accuracies
    [shared] = [key for key, h in zip(entries, hashes) if h == "ff9713ff8e7d4d6a2ea61994a8bdd447"]
    assert entries[shared]["val_accuracy"] == 93.28926205635071  # run 1 of the pkl's cell, in %


# graph_util_test-style vectors (nasbench tests), with our op names for its integer labels.
ISOMORPHIC = [
    ["c1-mp_0110.0001.0001.0000", "mp-c1_0110.0001.0001.0000"],  # diamond, labels swapped
    ["c1-mp-c3_01100.00001.00010.00001.00000",  # the same graph, vertices in three orders
     "mp-c3-c1_01010.00100.00001.00001.00000",
     "mp-c1-c3_01100.00010.00001.00001.00000"],
]
DIFFERENT = [
    ("c1-mp-c3_01100.00001.00010.00001.00000", "mp-c3-c1_01100.00001.00010.00001.00000"),  # same matrix
    ("c1-mp-c3_01100.00001.00010.00001.00000", "mp-c1-c3_01100.00001.00010.00001.00000"),
    ("c1-c3-c3_01000.00100.00010.00001.00000", "c3-c3-c1_01000.00100.00010.00001.00000"),  # a chain: ends
    ("c1-c3_0101.0010.0001.0000", "c3-c1_0101.0010.0001.0000"),  # needs directed edges
    ("c1-c3-c3-c3-c3_0111100.0010000.0000001.0000010.0000010.0000001.0000000",  # needs in-neighbours
     "c3-c3-c3-c1-c3_0111100.0010000.0000001.0000010.0000010.0000001.0000000"),
]


@pytest.mark.parametrize("archs", ISOMORPHIC)
def test_isomorphic_spellings_share_hash_and_canonical_form(archs):
    assert len({SPACE.hash(a) for a in archs}) == 1
    assert len({SPACE.validate(a) for a in archs}) == 1


@pytest.mark.parametrize("first, second", DIFFERENT)
def test_non_isomorphic_cells_differ(first, second):
    assert SPACE.hash(first) != SPACE.hash(second)
    assert SPACE.validate(first) != SPACE.validate(second)


def test_regular_graphs_on_eight_vertices_hash_apart():
    # Connected non-isomorphic regular graphs on 6 interior vertices; too large for the space itself.
    first = matrix_of("01000000", "00110010", "00001100", "00001100", "00000010", "00000010", "00000001",
                      "00000000")
    second = matrix_of("01000000", "00110100", "00001010", "00001100", "00000010", "00000010", "00000001",
                       "00000000")
    ops = ["input"] + [OPS[1]] * 6 + ["output"]
    assert spec_hash(first, ops) != spec_hash(second, ops)


def test_matrix_types_do_not_change_the_cell():
    matrix, ops = parse(README_WRITTEN)
    for form in (matrix, [list(r) for r in matrix], np.array(matrix, dtype=np.int64),
                 np.array(matrix, dtype=np.int8), np.array(matrix, dtype=bool)):
        assert arch_string(form, list(ops)) == README_WRITTEN
        assert SPACE.validate(arch_string(*check_spec(form, ops))) == README_STORED


def test_fast_enumeration_equals_the_official_generator_up_to_5_vertices():
    official = official_first_of_hash(5)
    assert [arch_string(*cell) for cell in canonical_cells(5)] == official
    cells6 = [arch_string(*cell) for cell in canonical_cells(6)]
    assert len(cells6) == len(set(cells6)) == 64_542


# ----------------------------------------------------------------------------------------------------------
# Pruning and validity (official ModelSpec / is_valid), each invalid case naming its rule


def test_a_dangling_vertex_is_pruned():
    # vertex 2 has an in-edge but no out-edge: not on an input -> output path
    assert prune(matrix_of("0110", "0001", "0000", "0000"), ["input", OPS[0], OPS[2], "output"]) == (
        ((0, 1, 0), (0, 0, 1), (0, 0, 0)), ("input", OPS[0], "output"))
    assert SPACE.validate("c3-mp_0110.0001.0000.0000") == "c3_010.001.000"


def test_more_than_nine_raw_edges_is_valid_when_pruning_leaves_nine_or_fewer():
    matrix = matrix_of("0111110", "0000001", "0001110", "0000110", "0000010", "0000000", "0000000")
    assert sum(map(sum, matrix)) == 12
    assert is_valid(matrix, ["input"] + [OPS[0]] * 5 + ["output"])
    assert SPACE.validate(arch_string(matrix, ["input"] + [OPS[1]] * 5 + ["output"])) == "c1_010.001.000"


def test_unknown_op_counts_only_on_kept_vertices():
    matrix = matrix_of("0110", "0001", "0000", "0000")
    assert is_valid(matrix, ["input", OPS[0], "conv5x5", "output"])  # vertex 2 is pruned
    with pytest.raises(HnasError, match=r"invalid NB101 cell \(ops\): unknown op 'conv5x5'"):
        check_spec(matrix, ["input", "conv5x5", OPS[0], "output"])


@pytest.mark.parametrize("matrix, ops, rule", [
    (matrix_of("0100", "0000", "0001", "0000"), 4, "disconnected"),  # no input -> output path
    (matrix_of("01000000", "00100000", "00010000", "00001000", "00000100", "00000010", "00000001", "00000000"), 8,
     "too many vertices"),  # the official code raises TypeError here
    (matrix_of("0111111", "0011111", "0001111", "0000111", "0000011", "0000001", "0000000"), 7, "too many edges"),
])
def test_invalid_cells_name_the_rule(matrix, ops, rule):
    ops = ["input"] + [OPS[0]] * (ops - 2) + ["output"]
    assert not is_valid(matrix, ops)
    with pytest.raises(HnasError, match=rf"invalid NB101 cell \({rule}\)"):
        check_spec(matrix, ops)


def test_eight_vertices_are_valid_when_pruning_leaves_seven():
    # vertex 6 of 8 has no way in: pruning drops it and leaves a chain of 7 (valid, as officially)
    eight = matrix_of("01000000", "00100000", "00010000", "00001000", "00000100", "00000001", "00000001", "00000000")
    assert len(check_spec(eight, ["input"] + [OPS[0]] * 6 + ["output"])[0]) == 7


@pytest.mark.parametrize("matrix, ops, message", [
    (matrix_of("011", "001", "100"), ["input", OPS[0], "output"], "upper-triangular"),
    (matrix_of("011", "001", "000"), ["input", "output"], "one op name per vertex"),
    (matrix_of("011", "001"), ["input", OPS[0], "output"], "square"),
    ([[0, 2], [0, 0]], ["input", "output"], "only 0 and 1"),
    ([[0, "1"], [0, 0]], ["input", "output"], "only 0 and 1"),
    (5, ["input", "output"], "square 0/1 matrix"),
])
def test_malformed_specs(matrix, ops, message):
    with pytest.raises(HnasError, match=message):
        check_spec(matrix, ops)


def test_input_first_and_output_last():
    with pytest.raises(HnasError, match=r"\(ops\): the first op must be 'input'"):
        check_spec(matrix_of("010", "001", "000"), ["output", OPS[0], "input"])


# ----------------------------------------------------------------------------------------------------------
# Arch strings and converters


@pytest.mark.parametrize("arch", [a for _, a in PUBLISHED] + [README_WRITTEN, "c3-mp_0110.0001.0000.0000"])
def test_arch_string_round_trip(arch):
    assert arch_string(*parse(arch)) == arch


@pytest.mark.parametrize("bad, hint", [
    ("c3_010.001", "row '010' is not 2 characters"),
    ("c3-c1_010.001.000", "2 op codes for 3 vertices, expected 1"),
    ("c9_010.001.000", "unknown op code 'c9'"),
    ("c3_012.001.000", "row '012' is not 3 characters of 0 and 1"),
    ("c3010.001.000", "exactly one '_'"),
    ("c3_01_0.001.000", "exactly one '_'"),
    ("_0", "at least 2 vertices"),
    ("", "exactly one '_'"),
    (42, "expected a string"),
])
def test_malformed_arch_shows_the_expected_form(bad, hint):
    with pytest.raises(HnasError) as error:
        SPACE.validate(bad)
    message = str(error.value)
    assert hint in message
    assert "<op codes joined by '-'>_<matrix rows of 0/1 joined by '.'>" in message and README_STORED in message


def test_invalid_cell_string_is_an_error_naming_the_rule():
    with pytest.raises(HnasError, match=r"disconnected"):
        SPACE.validate("c3_000.001.000")


def test_official_integer_labels():
    matrix, _ = parse(README_WRITTEN)
    spec = from_labels(np.array(matrix), [-1, 1, 0, 0, 0, 2, -2])
    assert arch_string(*spec) == README_WRITTEN
    with pytest.raises(HnasError, match="unknown NB101 op label 5"):
        from_labels(matrix, [-1, 1, 0, 0, 5, 2, -2])


def test_naslib_tuple_encoding():
    matrix, _ = parse(README_STORED)
    key = tuple(v for row in matrix for v in row) + (0, 4, 3, 2, 4, 4, 1)
    assert from_naslib(key) == parse(README_STORED) == from_naslib(str(key))
    assert from_naslib((0, 1, 0, 0, 0, 1)) == parse("_01.00")
    for bad in ((0, 1, 0, 0, 0), (0, 1, 0, 0, 0, 7), "(0, 1, x)"):
        with pytest.raises(HnasError, match="NASLib NB101 key"):
            from_naslib(bad)


def test_padding_keeps_the_cell():
    six = "c1-c3-c1-c3_011101.001010.000001.000010.000001.000000"
    matrix, ops = padded(*parse(six))
    assert len(matrix) == 7 and ops[5] == OPS[0] and ops[6] == "output"
    assert [row[6] for row in matrix] == [1, 0, 1, 0, 1, 0, 0]  # the output column moved to vertex 6
    assert SPACE.validate(arch_string(matrix, ops)) == six


# ----------------------------------------------------------------------------------------------------------
# The space


def test_space_registry_and_options():
    assert "nb101" in list_spaces() and NB101Space.schema is NB101Config
    assert NB101Config() == NB101Config(name="nb101", init="port", stem_channels=128)
    space = create_space("nb101", init="tf", stem_channels=16)
    assert (space.init, space.stem_channels, space.size) == ("tf", 16, 423_624)
    with pytest.raises(HnasError, match="space.init='he' is invalid: choose one of port, tf"):
        NB101Space(init="he")
    for bad in (0, 4, "16", True, 16.0):
        with pytest.raises(HnasError, match="stem_channels"):
            NB101Space(stem_channels=bad)


def test_arch_seed_depends_on_run_seed_and_cell_only():
    assert SPACE.arch_seed(3, README_WRITTEN) == SPACE.arch_seed(3, README_STORED)
    assert SPACE.arch_seed(3, README_STORED) != SPACE.arch_seed(4, README_STORED)
    assert SPACE.arch_seed(3, README_STORED) != SPACE.arch_seed(3, "_01.00")
    assert 0 <= SPACE.arch_seed(2**40, README_STORED) < 2**63 - 1


@pytest.mark.parametrize("arch", [a for _, a in PUBLISHED])
def test_encode_decode_round_trip(arch):
    choices = SPACE.encode(arch)
    assert len(choices) == len(SPACE.decisions) == 26
    assert all(c in options for c, options in zip(choices, SPACE.decisions))
    assert SPACE.decode(choices) == arch
    assert SPACE.decisions[0] == ("0", "1") and SPACE.decisions[-1] == ("c3", "c1", "mp")


def test_encode_spells_a_small_cell_with_seven_vertices():
    # _01.00 padded: the single edge is input -> vertex 6, the 5 dangling vertices conv3x3
    assert SPACE.encode("_01.00") == ("0",) * 5 + ("1",) + ("0",) * 15 + ("c3",) * 5


def test_decode_rejects_invalid_choices():
    with pytest.raises(HnasError, match="disconnected"):
        SPACE.decode(("0",) * 21 + ("c3",) * 5)
    with pytest.raises(HnasError, match="21 edge bits"):
        SPACE.decode(("0",) * 20)
    with pytest.raises(HnasError, match="21 edge bits"):
        SPACE.decode(("1",) * 21 + ("c5",) * 5)


@needs_data
def test_mutate_gives_valid_different_cells_reproducibly():
    parents = list(fixture_cells().values()) + ["_01.00", "c3_010.001.000"]
    children = [SPACE.mutate(p, np.random.RandomState(7)) for p in parents]
    assert children == [SPACE.mutate(p, np.random.RandomState(7)) for p in parents]
    for parent, child in zip(parents, children):
        assert child != parent and SPACE.validate(child) == child
    rng = np.random.RandomState(0)
    draws = [SPACE.mutate(README_STORED, rng) for _ in range(200)]
    assert len(set(draws)) > 50  # not a fixed neighbour
    assert SPACE.mutate(README_WRITTEN, np.random.RandomState(3)) == SPACE.mutate(README_STORED,
                                                                                  np.random.RandomState(3))


def test_mutations_of_a_chain_by_hand():
    # in -> c3 -> out: one change reaches in->out added (edge flip, weight 1/6) or the op replaced by c1 or
    # mp (1/8 each); every other single change is pruned away or disconnects the cell.
    got = dict(SPACE.mutations("c3_010.001.000"))
    assert got == pytest.approx({"c3_011.001.000": 0.4, "c1_010.001.000": 0.3, "mp_010.001.000": 0.3})
    assert SPACE.mutations("_01.00") == []  # needs two new edges


def test_mutations_are_valid_distinct_neighbours():
    out = SPACE.mutations(README_WRITTEN)
    children = [child for child, _ in out]
    assert len(children) == len(set(children)) > 10
    assert sum(p for _, p in out) == pytest.approx(1.0)
    assert all(SPACE.validate(c) == c != README_STORED for c in children)
    assert out == SPACE.mutations(README_STORED)


# ----------------------------------------------------------------------------------------------------------
# The shipped enumeration


def test_the_shipped_cell_list_is_read_and_sampled():
    archs = SPACE.all_archs()
    assert len(archs) == len(set(archs)) == 423_624 and archs[0] == "_01.00"
    assert README_STORED in archs
    first, again = SPACE.sample_distinct(1000, seed=3), SPACE.sample_distinct(10, seed=3)
    assert first[:10] == again and len(set(first)) == 1000 and set(first) <= set(archs)
    assert all(SPACE.validate(a) == a for a in first[:50])  # shipped lines are canonical cells


def test_a_damaged_cell_list_is_an_error_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(b"not gzip")
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(b"_01.00\nc3_010.001.000\n"))
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(gzip.compress(b"_01.00\n" * 1000)[:40])
    for path in (garbage, short, truncated):
        with pytest.raises(HnasError, match=rf"list of NB101 cells {path} is damaged: .*write_cells"):
            read_archs(path)


@needs_data
@pytest.mark.slow
def test_the_shipped_cell_list_is_the_official_generators_first_of_each_hash(tmp_path):
    archs = SPACE.all_archs()
    assert archs == official_first_of_hash(7)
    assert len(archs) == len(set(archs)) == 423_624
    write_cells(tmp_path / "cells.txt.gz")  # the shipped bytes are what write_cells writes now
    assert (tmp_path / "cells.txt.gz").read_bytes() == cells_path().read_bytes()
    hashes = {SPACE.hash(a) for a in archs}
    assert len(hashes) == 423_624 and "00005c142e6f48ac74fdcf73e3439874" in hashes  # NASLib's test hash
    assert set(fixture_cells().values()) <= set(archs)
    first, again = SPACE.sample_distinct(1000, seed=3), SPACE.sample_distinct(10, seed=3)
    assert first[:10] == again and len(set(first)) == 1000 and set(first) <= set(archs)


@pytest.mark.slow
def test_enumeration_up_to_six_vertices_equals_the_official_generator():
    official = official_first_of_hash(6)
    assert len(official) == 64_542
    assert [arch_string(*cell) for cell in canonical_cells(6)] == official


# ----------------------------------------------------------------------------------------------------------
# Networks (hnas.spaces.nb101.network)


def test_seeded_build_uses_the_canonical_cell_and_leaves_global_rng_alone():
    pytest.importorskip("hnas.spaces.nb101.network")
    small = create_space("nb101", stem_channels=16)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = small.build_seeded(README_WRITTEN, run_seed=5, num_classes=10)
    again = small.build_seeded(README_STORED, run_seed=5, num_classes=10)
    other = small.build_seeded(README_STORED, run_seed=6, num_classes=10)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), again.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(first.parameters(), other.parameters()))
    # the benchmark trained the stored form: an isomorphic spelling gets its parameter count
    assert sum(p.numel() for p in SPACE.build(README_WRITTEN, num_classes=10).parameters()) == README_PARAMS
