"""NAS-Bench-101 as a search space: canonical arch strings, the official hash, the shipped enumeration of all
423,624 cells, seeded sampling and builds, REINFORCE's decisions and REA's mutation (cell rules:
hnas.spaces.nb101.spec).

An architecture is the arch string of a cell (spec module docstring); `validate` turns any valid spelling into
the canonical one, the form the official dataset stores under the cell's hash.
"""

import gzip
from dataclasses import dataclass
from functools import lru_cache

from hnas import paths
from hnas.errors import HnasError
from hnas.io import atomic_write_bytes
from hnas.spaces.cell import CellSpace
from hnas.spaces.nb101.hashing import OPS, spec_hash
from hnas.spaces.nb101.network import INITS
from hnas.spaces.nb101.spec import (CODE_OF, CODES, INPUT, MAX_VERTICES, NUM_CELLS, OUTPUT, arch_string,
                                    canonical, canonical_cells, check_spec, is_valid, padded, parse)
from hnas.spaces.registry import register_space

NAME = "nb101"
# REINFORCE's decisions: the upper-triangle edge bits of a 7-vertex spelling row by row (the order of the
# NASBench-101 authors' mutation loop), then the ops of the 5 interior vertices.
EDGE_SLOTS = tuple((x, y) for x in range(MAX_VERTICES - 1) for y in range(x + 1, MAX_VERTICES))
OP_SLOTS = MAX_VERTICES - 2
EDGE_OPTIONS = ("0", "1")
OP_OPTIONS = tuple(CODE_OF[op] for op in OPS)  # c3, c1, mp: the official op order
# The NASBench-101 authors' mutation (NASBench.ipynb `mutate_spec`, mutation_rate 1): each edge bit flips with
# probability 1/7, each interior op is resampled with probability 1/5 among the other two.
EDGE_FLIP = 1 / MAX_VERTICES
OP_CHANGE = 1 / OP_SLOTS
CELLS_FILE = "nb101-cells.txt.gz"


def cells_path():
    """The list of every cell shipped with hnas: one canonical arch string a line, gzip-compressed, in the
    official generator's order (hnas/embedded/PROVENANCE.md; rewritten by write_cells)."""
    return paths.embedded_dir() / CELLS_FILE


def write_cells(path):
    """Write every cell (spec.canonical_cells, about half a minute) to `path`, byte-reproducibly."""
    archs = (arch_string(*cell) for cell in canonical_cells())
    atomic_write_bytes(path, gzip.compress(("\n".join(archs) + "\n").encode("ascii"), mtime=0))


def read_archs(path):
    """The cell list at `path`; HnasError naming the file when it is not a whole one."""
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            archs = tuple(f.read().splitlines())
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise _damaged(path, f"it cannot be read ({error})") from None
    if len(archs) != NUM_CELLS or len(set(archs)) != NUM_CELLS:
        raise _damaged(path, f"it has {len(archs):,} lines ({len(set(archs)):,} distinct), expected "
                             f"{NUM_CELLS:,} distinct cells")
    if archs[0] != "_01.00":
        raise _damaged(path, "its first line is not the first cell, _01.00")
    return archs


def _damaged(path, why):
    return HnasError(f"the list of NB101 cells {path} is damaged: {why}. Reinstall hnas, or rewrite it with "
                     "`python -c \"from hnas.spaces.nb101.space import cells_path, write_cells; "
                     "write_cells(cells_path())\"` (about half a minute)")


@lru_cache(maxsize=1)
def _every_arch():
    return read_archs(cells_path())


@dataclass
class NB101Config:
    """The `space=nb101` config: its options are NB101Space's arguments."""

    name: str = NAME
    init: str = "port"
    stem_channels: int = 128


@register_space(NAME)
class NB101Space:
    """NAS-Bench-101 as a search space. `init` is the weight init of the networks `build` makes (INITS),
    `stem_channels` the width of their stem (128 in the benchmark; the stacks double it twice)."""

    schema = NB101Config
    name = NAME
    size = NUM_CELLS
    decisions = (EDGE_OPTIONS,) * len(EDGE_SLOTS) + (OP_OPTIONS,) * OP_SLOTS

    def __init__(self, init="port", stem_channels=128):
        if init not in INITS:
            raise HnasError(f"space.init={init!r} is invalid: choose one of {', '.join(INITS)} (port: the PyTorch "
                            "port's init, as the zero-cost papers used; tf: the official TensorFlow builder's)")
        # A cell shares its output channels among up to 5 vertices; each needs at least one.
        if isinstance(stem_channels, bool) or not isinstance(stem_channels, int) or stem_channels < OP_SLOTS:
            raise HnasError(f"space.stem_channels={stem_channels!r} is invalid: it must be an integer of at "
                            f"least {OP_SLOTS} (a cell splits its channels among up to {OP_SLOTS} vertices)")
        self.init, self.stem_channels = init, stem_channels

    # Seeded sampling and seeded builds need only size, all_archs, arch_seed and build: CellSpace's own.
    sample_distinct = CellSpace.sample_distinct
    build_seeded = CellSpace.build_seeded

    def spec(self, arch):
        """(matrix, ops) of the canonical form of `arch`; HnasError for a malformed string or invalid cell."""
        return canonical(*parse(arch))

    def validate(self, arch):
        """The canonical arch string of any valid spelling (isomorphic spellings give the same string)."""
        return arch_string(*self.spec(arch))

    def hash(self, arch):
        """The official module hash of the cell (the key of the benchmark's records)."""
        return spec_hash(*check_spec(*parse(arch)))

    def all_archs(self):
        """Every cell in canonical form, in the official generator's order (the list shipped with hnas)."""
        return list(_every_arch())

    def arch_seed(self, run_seed, arch):
        """The seed of `arch`'s network: depends only on the run seed and the cell (through its hash), not on
        its spelling nor on the order in which cells are built."""
        return (int(run_seed) * 1_000_003 + int(self.hash(arch)[:15], 16)) % (2**63 - 1)

    def build(self, arch, num_classes):
        """The benchmark's network of the cell (3 stacks of 3 cells), weights from the current RNG state."""
        from hnas.spaces.nb101.network import NB101Network

        matrix, ops = self.spec(arch)
        return NB101Network(matrix, ops, num_classes, stem_channels=self.stem_channels, init=self.init)

    # ------------------------------------------------------------------------------------------------------
    # REINFORCE's decisions and REA's mutation

    def encode(self, arch):
        """The choices of `arch` over `decisions`: its canonical form spelled with 7 vertices (a smaller cell
        padded as NASLib does: output at vertex 6, dangling conv3x3 vertices that pruning removes)."""
        matrix, ops = padded(*self.spec(arch))
        return (tuple(EDGE_OPTIONS[matrix[x][y]] for x, y in EDGE_SLOTS)
                + tuple(CODE_OF[op] for op in ops[1:-1]))

    def _spelling(self, choices):
        """The 7-vertex (matrix, ops) of a choice per decision (not checked against the cell rules)."""
        choices = tuple(choices)
        if len(choices) != len(self.decisions) or any(c not in options for c, options
                                                      in zip(choices, self.decisions)):
            raise HnasError(f"NB101 choices are {len(EDGE_SLOTS)} edge bits in {EDGE_OPTIONS} then {OP_SLOTS} "
                            f"ops in {OP_OPTIONS}; got {choices!r}")
        rows = [[0] * MAX_VERTICES for _ in range(MAX_VERTICES)]
        for (x, y), bit in zip(EDGE_SLOTS, choices):
            rows[x][y] = EDGE_OPTIONS.index(bit)
        return rows, (INPUT,) + tuple(CODES[code] for code in choices[len(EDGE_SLOTS):]) + (OUTPUT,)

    def decode(self, choices):
        """The canonical arch of a choice per decision; HnasError when that spelling is not a valid cell."""
        return arch_string(*canonical(*self._spelling(choices)))

    def mutate(self, arch, rng):
        """The NASBench-101 authors' mutation (their NASBench.ipynb `mutate_spec`, mutation_rate 1): on the
        7-vertex spelling of `encode`, every edge bit flips with probability 1/7 (in expectation 3 of the 21,
        most of them then pruned away) and every interior op is, with probability 1/5, replaced by one of the
        other two uniformly; redrawn until the cell is valid and, unlike theirs, differs from `arch` (a child
        equal to its parent would cost a query and teach nothing). Draws from the numpy RandomState `rng`
        (theirs: Python's random), edges row by row, then ops. They mutate the parent as it was spelled; a
        parent here is its canonical form, so its dangling vertices are NASLib's padding."""
        parent = self.validate(arch)
        start = self.encode(parent)
        while True:
            choices = [EDGE_OPTIONS[1 - EDGE_OPTIONS.index(bit)] if rng.random_sample() < EDGE_FLIP else bit
                       for bit in start[:len(EDGE_SLOTS)]]
            for code in start[len(EDGE_SLOTS):]:
                if rng.random_sample() < OP_CHANGE:
                    others = [option for option in OP_OPTIONS if option != code]
                    code = others[rng.randint(len(others))]
                choices.append(code)
            spelling = self._spelling(choices)
            if is_valid(*spelling):
                child = arch_string(*canonical(*spelling))
                if child != parent:
                    return child

    def mutations(self, arch):
        """[(child, probability)] over the cells one change of `mutate` reaches (one edge bit flipped, or one
        op replaced), for searches within a subset of the space. Each change weighs as likely as `mutate`
        makes it relative to the others, given that exactly one decision changes: an edge flip
        (1/7) / (6/7) = 1/6, an op change (1/5) / (4/5) / 2 = 1/8. Changes that give an invalid cell or `arch`
        itself are left out, changes that give the same cell add up, and the probabilities sum to 1. Empty
        when no single change reaches another cell (the 2-vertex cell `_01.00`: it needs two new edges)."""
        parent = self.validate(arch)
        start = self.encode(parent)
        edge_weight = EDGE_FLIP / (1 - EDGE_FLIP)
        op_weight = OP_CHANGE / (1 - OP_CHANGE) / (len(OP_OPTIONS) - 1)
        weights = {}
        for d, options in enumerate(self.decisions):
            for option in options:
                if option == start[d]:
                    continue
                spelling = self._spelling(start[:d] + (option,) + start[d + 1:])
                if is_valid(*spelling):
                    child = arch_string(*canonical(*spelling))
                    if child != parent:
                        weight = edge_weight if d < len(EDGE_SLOTS) else op_weight
                        weights[child] = weights.get(child, 0.0) + weight
        total = sum(weights.values())
        return [(child, weight / total) for child, weight in weights.items()]

