"""The DARTS search space as HNAS searches it (darts.md §1-2): validation, HNAS's seeded candidate pool,
per-architecture seeds and builds, REINFORCE's decisions and REA's mutation.

An architecture is the canonical string of a genotype (hnas.spaces.darts.genotype). The space holds the
genotypes the DARTS parse can produce: in both cells every node takes two different inputs, each with an op
of the op set (never `none`), and the cell outputs nodes 2..5. Gene order counts (it is the network's module
order, hence its init, and the reference's pool keys on it), so two genotypes that differ only in the order
of a node's genes are two architectures.

Op sets (`space.ops`): `hnas`, the 6 ops HNAS's sampler can draw (its weight rows have 7 columns, so never
`dil_conv_5x5`: the reference's quirk, darts.md §2.2), or `all`, the 7 ops but `none` (sampled from rows of
8 columns, so that `dil_conv_5x5` is drawn as often as any op).
"""

import hashlib
import itertools
import math
import numbers
from dataclasses import dataclass

from hnas.errors import HnasError, require
from hnas.spaces.cell import CellSpace
from hnas.spaces.darts.genotype import (CELLS, GENES, NODES, PRIMITIVES, STANDARD_CONCAT, Genotype,
                                        genotype_string, node_of, parse_genotype)
from hnas.spaces.darts.sampling import draw, first_distinct
from hnas.spaces.registry import register_space

NAME = "darts"
COLUMNS = {"hnas": 7, "all": 8}  # columns of the sampler's weight rows: PRIMITIVES[:columns]
OP_SETS = {name: PRIMITIVES[1:columns] for name, columns in COLUMNS.items()}  # what a parse can choose
# REINFORCE's first decision per node: the inputs of its two genes, in gene order.
INPUT_PAIRS = tuple(tuple(f"{a},{b}" for a, b in itertools.permutations(range(node + 2), 2))
                    for node in range(NODES))


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


NETWORKS = ("cifar", "imagenet")  # the metric network: NetworkCIFAR or NetworkImageNet
# What each metric network is for: HNAS computes ImageNet's metrics on NetworkImageNet (darts.md §3.1).
DATASETS = {"cifar": ("cifar10", "cifar100", "fake"), "imagenet": ("imagenet",)}


def check_options(ops, init_channels, layers, network="cifar"):
    require(network in NETWORKS, "space.network", network,
            "choose cifar (NetworkCIFAR, for 32-pixel images) or imagenet (NetworkImageNet, for 224-pixel images)")
    require(ops in tuple(OP_SETS), "space.ops", ops,
            "choose hnas (the 6 ops HNAS's sampler draws, never dil_conv_5x5: darts.md §2.2) or all (every "
            "DARTS op but none)")
    require(_is_int(init_channels) and init_channels >= 1, "space.init_channels", init_channels,
            "the metric network's initial channels are a positive integer (HNAS: 16)")
    require(_is_int(layers) and layers >= 3, "space.layers", layers,
            "the metric network needs at least 3 cells, so that it has a normal cell as well as its two "
            "reduction cells (HNAS: 5)")


@dataclass
class DartsConfig:
    """The `space=darts` config (conf/space/darts.yaml): its options are DartsSpace's arguments."""

    name: str = NAME
    ops: str = "hnas"
    init_channels: int = 16
    layers: int = 5
    network: str = "cifar"

    def __post_init__(self):
        check_options(self.ops, self.init_channels, self.layers, self.network)


@register_space(NAME)
class DartsSpace:
    """The DARTS space over the op set `ops` (module docstring); `init_channels` and `layers` shape the
    network `build` makes for metrics (HNAS: NetworkCIFAR with 16 channels and 5 cells, darts.md §2.1)."""

    schema = DartsConfig
    name = NAME

    def __init__(self, ops="hnas", init_channels=16, layers=5, network="cifar"):
        check_options(ops, init_channels, layers, network)
        self.ops, self.init_channels, self.layers, self.network = ops, init_channels, layers, network
        self.op_names = OP_SETS[ops]
        # Per cell, per node: the two genes' inputs, then the op of each gene.
        self.decisions = tuple(options for _ in CELLS for pairs in INPUT_PAIRS
                               for options in (pairs, self.op_names, self.op_names))

    @property
    def size(self):
        """The number of (normal, reduce) pairs of cells: per cell, per node i + 2 with n = i + 2 inputs,
        n (n - 1) ordered pairs of different inputs (gene order counts, module docstring) times an op per
        gene. About 2.3e19 for `hnas` (4.8e9 cells, darts.md §2.1)."""
        cell = math.prod(n * (n - 1) for n in range(2, 2 + NODES)) * len(self.op_names) ** GENES
        return cell ** len(CELLS)

    def genotype(self, arch):
        """The Genotype of an architecture in any form parse_genotype reads (its string form, the
        `Genotype(...)` form DARTS prints, a name of NAMED); HnasError when it is malformed or outside the
        space."""
        genotype = parse_genotype(arch)
        for cell in CELLS:
            genes = getattr(genotype, cell)
            for g, (op, source) in enumerate(genes):
                if op not in self.op_names:  # none, or dil_conv_5x5 with ops=hnas
                    why = ("which the DARTS parse never chooses" if op == "none" else "which HNAS's sampler "
                           "never draws (darts.md §2.2): set space.ops=all for the full DARTS space")
                    raise self._outside(arch, f"its {cell} cell uses {op}, {why}")
                if g % 2 and source == genes[g - 1][1]:
                    raise self._outside(arch, f"node {node_of(g)} of its {cell} cell takes input {source} twice, "
                                              "where the DARTS parse keeps two different input edges per node")
            if getattr(genotype, cell + "_concat") != STANDARD_CONCAT:
                raise self._outside(arch, f"its {cell} cell does not output the concat of nodes 2..5")
        return genotype

    def _outside(self, arch, why):
        return HnasError(f"the genotype {arch!r} is not in the DARTS space with space.ops={self.ops}: {why}")

    def validate(self, arch):
        """The canonical string of an architecture given in any form `genotype` reads."""
        return genotype_string(self.genotype(arch))

    def all_archs(self):
        raise HnasError(f"the DARTS space holds {self.size:.2e} architectures, too many to enumerate: set "
                        "stage.limit=N to take the first N distinct genotypes of HNAS's sampled pool (HNAS: "
                        "60000), or name them with stage.archs=[...]")

    def sample_distinct(self, n, seed):
        """The first `n` distinct genotypes of HNAS's candidate pool drawn with `seed` (darts.md §2.1), so a
        larger sample extends a smaller one with the same seed. With `ops=all` the same procedure on weight
        rows of 8 columns."""
        if not (_is_int(n) and 0 <= n <= self.size):
            raise HnasError(f"cannot sample {n!r} DARTS architectures: ask for 0 to {self.size:.2e}")
        return first_distinct(n, seed, COLUMNS[self.ops])

    def sample(self, n, rng):
        """`n` draws with replacement from numpy RandomState `rng`, as HNAS's pool draws them (so from a fresh
        RandomState(seed), the first distinct ones are `sample_distinct(n, seed)`)."""
        return [genotype_string(draw(rng, COLUMNS[self.ops])) for _ in range(n)]

    def arch_seed(self, run_seed, arch):
        """The seed of `arch`'s network: depends only on the run seed and the canonical string (through its
        sha256), not on how the architecture was written nor on the order in which networks are built."""
        digest = hashlib.sha256(self.validate(arch).encode("ascii")).hexdigest()
        return (int(run_seed) * 1_000_003 + int(digest[:15], 16)) % (2**63 - 1)

    build_seeded = CellSpace.build_seeded

    def check_dataset(self, dataset):
        """Refuse a dataset the metric network is not for (HnasError saying which network is)."""
        if dataset not in DATASETS[self.network]:
            fits = [n for n, names in DATASETS.items() if dataset in names]
            fix = (f"set space.network={fits[0]}" if fits else
                   f"the DARTS space's datasets are {', '.join(n for names in DATASETS.values() for n in names)}")
            raise HnasError(f"dataset={dataset} does not go with the DARTS metric network space.network="
                            f"{self.network} (for {', '.join(DATASETS[self.network])}): {fix}")

    def build(self, arch, num_classes):
        """The metric network: NetworkCIFAR (or with `network=imagenet` NetworkImageNet)(init_channels,
        num_classes, layers) without auxiliary head, as HNAS computes its metrics (darts.md §3.1); weights
        from the current RNG state."""
        from hnas.spaces.darts.network import NetworkCIFAR, NetworkImageNet

        network = NetworkImageNet if self.network == "imagenet" else NetworkCIFAR
        return network(self.init_channels, num_classes, self.layers, False, self.genotype(arch))

    def build_for_training(self, arch, num_classes, *, init_channels, layers, auxiliary, input_size):
        """The evaluation network to train: NetworkImageNet for inputs of 224 pixels and more, else
        NetworkCIFAR (darts.md §4)."""
        from hnas.spaces.darts.network import NetworkCIFAR, NetworkImageNet

        network = NetworkImageNet if input_size >= 224 else NetworkCIFAR
        return network(init_channels, num_classes, layers, auxiliary, self.genotype(arch))

    # ------------------------------------------------------------------------------------------------------
    # REINFORCE's decisions and REA's mutation

    def encode(self, arch):
        """The choices of `arch` over `decisions`: per cell, per node, "a,b" (the inputs of its two genes in
        gene order), then the op of each gene."""
        genotype, choices = self.genotype(arch), []
        for cell in CELLS:
            genes = getattr(genotype, cell)
            for g in range(0, GENES, 2):
                (op_a, a), (op_b, b) = genes[g], genes[g + 1]
                choices.extend((f"{a},{b}", op_a, op_b))
        return tuple(choices)

    def decode(self, choices):
        """The canonical string of one choice per decision (every combination is an architecture)."""
        choices = tuple(choices)
        if len(choices) != len(self.decisions) or any(c not in options for c, options
                                                      in zip(choices, self.decisions)):
            raise HnasError(f"DARTS choices are, per cell and node, the inputs 'a,b' of its two genes, then their "
                            f"two ops among {', '.join(self.op_names)}: {len(self.decisions)} in all; got "
                            f"{choices!r}")
        cells = []
        for cell in range(len(CELLS)):
            genes = []
            for node in range(NODES):
                start = 3 * (cell * NODES + node)
                pair, op_a, op_b = choices[start:start + 3]
                a, b = map(int, pair.split(","))
                genes.extend(((op_a, a), (op_b, b)))
            cells.append(tuple(genes))
        return genotype_string(Genotype(cells[0], STANDARD_CONCAT, cells[1], STANDARD_CONCAT))

    def _changes(self, genes, g):
        """The changes `mutate` can make to gene `g` of a cell: ([other ops], [other inputs]); an input must
        differ from both of the node's current inputs, so node 2 (inputs 0 and 1 only) has none."""
        op, source = genes[g]
        node_inputs = {source, genes[g ^ 1][1]}
        return ([o for o in self.op_names if o != op],
                [j for j in range(node_of(g)) if j not in node_inputs])

    def mutate(self, arch, rng):
        """One gene changed (numpy RandomState `rng`): a cell, a node and one of its two genes uniformly;
        then, where the gene can take another input, a fair coin between changing its op and its input
        (node 2 can only change its op); the new op is uniform among the other ops of the op set, the new
        input uniform among the node's inputs that neither gene uses. The child is always in the space and
        differs from the parent."""
        genotype = self.genotype(arch)
        cell = CELLS[rng.randint(len(CELLS))]
        genes = list(getattr(genotype, cell))
        g = 2 * rng.randint(NODES) + rng.randint(2)
        ops, inputs = self._changes(genes, g)
        op, source = genes[g]
        if inputs and rng.randint(2):
            genes[g] = (op, inputs[rng.randint(len(inputs))])
        else:
            genes[g] = (ops[rng.randint(len(ops))], source)
        return genotype_string(genotype._replace(**{cell: tuple(genes)}))

    def mutations(self, arch):
        """[(child, probability)] of `mutate(arch)`: every one-gene change, with the probability `mutate`
        gives it (each change reaches a different child, and the probabilities sum to 1)."""
        genotype, out = self.genotype(arch), []
        for cell in CELLS:
            genes = getattr(genotype, cell)
            for g, (op, source) in enumerate(genes):
                ops, inputs = self._changes(genes, g)
                p_gene = 1.0 / (len(CELLS) * GENES)
                p_kind = 0.5 if inputs else 1.0
                changes = ([((o, source), p_kind / len(ops)) for o in ops]
                           + [((op, j), p_kind / len(inputs)) for j in inputs])
                for gene, p in changes:
                    child = genes[:g] + (gene,) + genes[g + 1:]
                    out.append((genotype_string(genotype._replace(**{cell: child})), p_gene * p))
        return out
