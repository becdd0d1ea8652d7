"""NAS-Bench-201: architecture strings, enumeration and the two network layouts (sampling and seeds:
hnas.spaces.cell.CellSpace).

An architecture is a cell of 4 nodes with one op on each of the 6 edges, written as
`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` (node 1 <- 0; node 2 <- 0, 1; node 3 <- 0, 1, 2).

Layouts:
- `compact`: the official NB201 network, holding only the chosen ops (what NB201 trained).
- `reference`: the network on which the HNAS / zero-cost-nas code computes metrics: every edge holds all
  five candidate ops (created in a fixed order, so they consume the same random numbers), one of which runs.
"""

import copy
import itertools
from dataclasses import dataclass
from enum import Enum

from torch import nn

from hnas.errors import HnasError
from hnas.spaces.cell import CellSpace
from hnas.spaces.registry import register_space

NAME = "nb201"
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# The reference code creates the candidate ops of an edge in this order; it fixes the random init.
REFERENCE_OP_ORDER = ("none", "avg_pool_3x3", "nor_conv_3x3", "nor_conv_1x1", "skip_connect")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to node, from node), in arch-string order
NUM_ARCHS = len(OPS) ** len(EDGES)


class Layout(Enum):
    compact = "compact"
    reference = "reference"


LAYOUTS = tuple(layout.value for layout in Layout)
EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _malformed(arch, why):
    return HnasError(
        f"malformed NB201 architecture string {arch!r}: {why}.\n"
        f"Expected the form |op~0|+|op~0|op~1|+|op~0|op~1|op~2| with op one of {', '.join(OPS)}, "
        f"for example {EXAMPLE}"
    )


def parse(arch):
    """Arch string -> tuple of the 6 edge ops in arch-string order. Raises HnasError on a bad string."""
    if not isinstance(arch, str):
        raise _malformed(arch, f"expected a string, got {type(arch).__name__}")
    nodes = arch.strip().split("+")
    if len(nodes) != 3:
        raise _malformed(arch, f"found {len(nodes)} node groups separated by '+', expected 3")
    ops = []
    for node, group in enumerate(nodes, start=1):
        if not (group.startswith("|") and group.endswith("|")):
            raise _malformed(arch, f"node group {group!r} must start and end with '|'")
        entries = group[1:-1].split("|")
        if len(entries) != node:
            raise _malformed(arch, f"node {node} has {len(entries)} inputs, expected {node}")
        for source, entry in enumerate(entries):
            op, sep, src = entry.partition("~")
            if not sep or src != str(source):
                raise _malformed(arch, f"entry {entry!r} of node {node} should read op~{source}")
            if op not in OPS:
                raise _malformed(arch, f"unknown op {op!r}")
            ops.append(op)
    return tuple(ops)


def to_string(ops):
    """Tuple of 6 edge ops -> arch string."""
    return "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)


def check_layout(layout):
    if layout not in LAYOUTS:
        raise HnasError(f"unknown NB201 layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    return layout


def validate(arch):
    """Return the canonical form of a valid arch string; raise HnasError otherwise."""
    if isinstance(arch, str) and arch in _CANONICAL:  # a metric table's rows: 15,625 strings read per table
        return arch
    return to_string(parse(arch))


def all_archs():
    """All 15,625 arch strings, in a fixed enumeration order (not the official index order)."""
    return [to_string(ops) for ops in itertools.product(OPS, repeat=len(EDGES))]


_CANONICAL = frozenset(all_archs())


def is_degenerate(arch):
    """True when no path of non-`none` ops joins node 0 to node 3: the cell's output is always zero."""
    reach = {0}
    for (to, src), op in zip(EDGES, parse(arch)):
        if op != "none" and src in reach:
            reach.add(to)
    return 3 not in reach


# ----------------------------------------------------------------------------------------------------------
# Networks


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BN. `affine=False` is the reference cells' variant: conv bias, BN without state."""

    def __init__(self, c_in, c_out, kernel, stride, affine, batchnorm=True):
        bn = nn.BatchNorm2d(c_out, affine=affine, track_running_stats=affine) if batchnorm else nn.Identity()
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=not affine),
            bn,
        )


def _make_op(op, channels, affine):
    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    return ReLUConvBN(channels, channels, 3 if op == "nor_conv_3x3" else 1, 1, affine)


class Cell(nn.Module):
    """A NB201 cell. With `candidates` every edge holds all ops (reference layout), else only its own."""

    def __init__(self, ops, channels, candidates):
        super().__init__()
        self.ops = tuple(ops)
        self.edges = nn.ModuleList()
        for op in self.ops:
            if candidates:
                edge = nn.ModuleDict({name: _make_op(name, channels, affine=False) for name in REFERENCE_OP_ORDER})
            else:
                edge = nn.ModuleDict({op: _make_op(op, channels, affine=True)})
            self.edges.append(edge)

    def forward(self, x):
        nodes = [x]
        for node in (1, 2, 3):
            total = 0
            for e, ((to, src), op) in enumerate(zip(EDGES, self.ops)):
                if to == node:
                    total = total + self.edges[e][op](nodes[src])
            nodes.append(total)
        return nodes[3]


class Reduction(nn.Module):
    """ResNet basic block with stride 2 between stages."""

    def __init__(self, c_in, c_out, residual_first):
        super().__init__()
        # Creation order decides the random init: the reference creates the residual branch first.
        if residual_first:
            self.residual = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, affine=True)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, affine=True)
        if not residual_first:
            self.residual = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x):
        return self.residual(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NB201 macro skeleton: stem, 3 stages of N cells joined by reductions, BN-ReLU, pooling, linear."""

    def __init__(self, arch, num_classes=10, layout="compact", channels=16, cells_per_stage=5):
        super().__init__()
        self.arch, self.layout = validate(arch), check_layout(layout)
        ops, reference = parse(arch), layout == "reference"
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        layers, c = [], channels
        for stage in range(3):
            if stage > 0:
                layers.append(Reduction(c, 2 * c, residual_first=reference))
                c *= 2
            layers.extend(Cell(ops, c, candidates=reference) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(self.pool(x).flatten(1))

    def without_batchnorm(self):
        """A copy with the same weights and no BatchNorm, as synflow wants it.

        The reference code's copy keeps the BatchNorms of the two reduction blocks (its builder has no
        switch for them); the compact layout drops every BatchNorm.
        """
        net = copy.deepcopy(self)
        keep = set()
        if self.layout == "reference":
            keep = {id(m) for block in net.cells if isinstance(block, Reduction) for m in block.modules()}
        for module in list(net.modules()):
            for name, child in module.named_children():
                if isinstance(child, nn.BatchNorm2d) and id(child) not in keep:
                    setattr(module, name, nn.Identity())
        return net


def build(arch, num_classes=10, layout="compact", channels=16, cells_per_stage=5):
    """Build the network of an arch string. Initialisation is PyTorch's default under the current RNG state."""
    return NB201Network(arch, num_classes, layout, channels, cells_per_stage)


@dataclass
class NB201Config:
    """The `space=nb201` config (conf/space/nb201.yaml): its options are NB201Space's arguments."""

    name: str = NAME
    layout: Layout = Layout.compact


@register_space(NAME)
class NB201Space(CellSpace):
    """NAS-Bench-201 as a search space; `layout` (compact or reference) is the network `build` makes."""

    schema = NB201Config
    name = NAME
    edges = EDGES
    ops = OPS

    def __init__(self, layout="compact"):
        self.layout = check_layout(getattr(layout, "value", layout))

    encode = staticmethod(parse)
    decode = staticmethod(to_string)
    validate = staticmethod(validate)
    is_degenerate = staticmethod(is_degenerate)

    def build(self, arch, num_classes):
        return build(arch, num_classes=num_classes, layout=self.layout)

    def build_for_training(self, arch, num_classes, *, init_channels, layers, auxiliary, input_size):
        """The network `stage=train` trains: `init_channels` channels in the first stage and `layers` cells per
        stage (NB201 trained 16 and 5). It has no auxiliary head, and takes any `input_size`."""
        if auxiliary:
            raise HnasError("NB201 networks have no auxiliary head: set train.auxiliary=false")
        return build(arch, num_classes=num_classes, layout=self.layout, channels=init_channels,
                     cells_per_stage=layers)
