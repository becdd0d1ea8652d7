"""The NAS-Bench-101 network of a pruned cell in PyTorch, laid out as the official TF builder lays it out
(nasbench `model_builder.py`), so its parameter count is the benchmark's `trainable_parameters`.

Skeleton: a 3x3 conv-bn-relu stem, `num_stacks` stacks of `cells_per_stack` cells (a 2x2 stride-2 max-pool and
twice the channels before every stack but the first), global average pooling and a dense layer with bias.

Inside a cell every interior vertex gets a channel count (`vertex_channels`) and applies its op to the sum of
its interior predecessors, cut to its own channel count, plus a 1x1 conv-bn-relu projection of the cell input
when the input feeds it. The output concatenates the interior vertices that feed it, plus the projection of
the input when input->output exists; a cell of input and output alone outputs that projection.

Two initialisations: "port", that of the PyTorch port the zero-cost proxy papers scored (zero-cost-nas,
NASLib), and "tf", the official TF builder's.
"""

import math

import torch
from torch import nn

from hnas.errors import HnasError, require
from hnas.spaces.nb101.hashing import OPS
from hnas.spaces.nb101.spec import INPUT, OUTPUT, as_spec, check_spec

# The std of a standard normal truncated to [-2, 2]: TF's truncated-normal variance scaling divides its scale
# by it, so that the truncated draws have the std sqrt(1 / fan_in).
TRUNCATED_NORMAL_STD = 0.87962566103423978


def _pruned_cell(matrix, ops):
    """(matrix, ops) as tuples, checked to be a valid cell that pruning leaves whole; HnasError otherwise."""
    cell = as_spec(matrix, ops)
    pruned = check_spec(*cell)
    if pruned != cell:
        raise HnasError(f"the NB101 cell {cell} is not pruned: some of its vertices lie on no path from input to "
                        f"output. Build the network of its pruned form, hnas.spaces.nb101.spec.prune(matrix, "
                        f"ops) = {pruned}")
    return cell


def vertex_channels(in_channels, out_channels, matrix):
    """The channel count of every vertex of a cell from `in_channels` to `out_channels` (plain ints).

    The vertices feeding the output share `out_channels` (the first `out_channels % k` of the k of them one
    more); every other interior vertex gets the largest count among its interior successors.
    """
    try:
        n = len(matrix)
    except TypeError:
        raise HnasError(f"an NB101 cell matrix is a sequence of rows; got {matrix!r}") from None
    # The ops do not change the channels: any valid labelling will do for the check.
    edges, _ = _pruned_cell(matrix, (INPUT,) + (OPS[0],) * (n - 2) + (OUTPUT,))
    in_channels, out_channels = int(in_channels), int(out_channels)
    channels = [in_channels] + [0] * (n - 2) + [out_channels]
    feeding = [v for v in range(1, n - 1) if edges[v][n - 1]]
    if out_channels < len(feeding):
        raise HnasError(f"cannot split {out_channels} channels among the {len(feeding)} vertices that feed the "
                        f"NB101 cell's output: each needs at least one (use more stem channels)")
    for i, v in enumerate(feeding):
        channels[v] = out_channels // len(feeding) + (i < out_channels % len(feeding))
    for v in range(n - 3, 0, -1):
        if not edges[v][n - 1]:
            channels[v] = max(channels[w] for w in range(v + 1, n - 1) if edges[v][w])
    return channels


def _conv_bn_relu(c_in, c_out, kernel):
    # PyTorch's BatchNorm defaults: eps 1e-5 as in TF, but momentum 0.1 (TF's 0.9) where the official builder
    # uses TF momentum 0.997; only the running statistics differ, which a train-mode forward does not use.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=False),
    )


def _first_channels(x, channels):
    """x cut to its first `channels` channels. Most vertices take all of them, and there the slice is left
    out: its backward would fill a zero tensor of x's size on every backward pass, for nothing."""
    return x if x.shape[1] == channels else x[:, :channels]


def _vertex_op(op, channels):
    if op == "maxpool3x3":
        return nn.MaxPool2d(3, stride=1, padding=1)
    return _conv_bn_relu(channels, channels, 3 if op == "conv3x3-bn-relu" else 1)


class Cell(nn.Module):
    """One NB101 cell (module) from `in_channels` to `out_channels`; `channels` holds its vertex channels."""

    def __init__(self, matrix, ops, in_channels, out_channels):
        super().__init__()
        self.channels = vertex_channels(in_channels, out_channels, matrix)
        n = len(matrix)
        # The interior predecessors of each vertex (vertex 0, the input, is projected, never used directly).
        self.sources = tuple(tuple(u for u in range(1, v) if matrix[u][v]) for v in range(n))
        # Vertex ops before projections, as the zero-cost-nas port creates them: the same seed draws the
        # same weights.
        self.vertex_ops = nn.ModuleList(_vertex_op(op, c) for op, c in zip(ops[1:-1], self.channels[1:-1]))
        self.projections = nn.ModuleDict(
            {str(v): _conv_bn_relu(in_channels, self.channels[v], 1) for v in range(1, n) if matrix[0][v]})

    def forward(self, x):
        out = len(self.channels) - 1
        tensors = [x]
        for v in range(1, out):
            fan_in = [_first_channels(tensors[u], self.channels[v]) for u in self.sources[v]]
            if str(v) in self.projections:
                fan_in.append(self.projections[str(v)](x))
            tensors.append(self.vertex_ops[v - 1](sum(fan_in)))
        if not self.sources[out]:
            return self.projections[str(out)](x)
        y = torch.cat([tensors[u] for u in self.sources[out]], dim=1)
        if str(out) in self.projections:
            # Out of place. The zero-cost-nas port adds in place, and when a single conv vertex feeds the
            # output that modifies the vertex's ReLU output, which autograd still needs: backward fails.
            y = y + self.projections[str(out)](x)
        return y


def _init_port(net):
    """zero-cost-nas / NASLib: conv N(0, sqrt(2 / (k*k*C_out))) (He, fan-out), dense N(0, 0.01), zero bias."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _init_tf(net):
    """The official builder: conv `tf.variance_scaling_initializer()` (truncated normal at two std, std
    sqrt(1 / fan_in)), dense glorot uniform (`tf.layers.dense`'s default), zero bias."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            std = math.sqrt(1.0 / fan_in) / TRUNCATED_NORMAL_STD
            nn.init.trunc_normal_(m.weight, 0.0, std, -2.0 * std, 2.0 * std)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


_INITIALISERS = {"port": _init_port, "tf": _init_tf}
INITS = tuple(_INITIALISERS)


class NB101Network(nn.Module):
    """The NB101 network of the pruned cell (matrix, ops). Convolutions have no bias, and BatchNorm starts at
    weight 1, bias 0 under both inits (PyTorch's default, and TF's)."""

    def __init__(self, matrix, ops, num_classes=10, stem_channels=128, num_stacks=3, cells_per_stack=3,
                 init="port"):
        super().__init__()
        if init not in INITS:
            raise HnasError(f"unknown NB101 init {init!r}; choose one of: {', '.join(INITS)}")
        for key, value in (("num_classes", num_classes), ("stem_channels", stem_channels),
                           ("num_stacks", num_stacks), ("cells_per_stack", cells_per_stack)):
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, key, value,
                    "a positive integer")
        self.matrix, self.ops = _pruned_cell(matrix, ops)
        self.init = init
        self.stem = _conv_bn_relu(3, stem_channels, 3)
        layers, channels = [], stem_channels
        for stack in range(num_stacks):
            if stack > 0:
                layers.append(nn.MaxPool2d(2, stride=2))
            for _ in range(cells_per_stack):
                layers.append(Cell(self.matrix, self.ops, channels, stem_channels * 2**stack))
                channels = stem_channels * 2**stack
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        _INITIALISERS[init](self)

    def forward(self, x):
        return self.classifier(self.pool(self.layers(self.stem(x))).flatten(1))

    @property
    def cells(self):
        """The blocks between the stem and the head, in order (the cells and the max-pools between stacks):
        the features AZ-NAS's metrics read."""
        return self.layers
