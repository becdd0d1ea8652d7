"""The DARTS evaluation networks of a genotype (darts.md §4): `NetworkCIFAR` (32x32 inputs) and
`NetworkImageNet` (224x224), laid out as the DARTS reference `cnn/model.py`, so their parameter counts are
the reference's; plus the reference's parameter counter and a multiply-add counter.

A genotype is any object with the fields `normal`, `normal_concat`, `reduce`, `reduce_concat` (darts.md §1.1):
pairs 2i, 2i+1 of `normal`/`reduce`, each `(op_name, input_index)`, feed node i+2; inputs 0 and 1 are the
preprocessed cell inputs, j >= 2 the earlier nodes; the cell outputs the channel concat of the concat nodes.
"""

import torch
from torch import nn

from hnas.errors import HnasError, require
from hnas.spaces.darts.ops import OPS, FactorizedReduce, ReLUConvBN


def drop_path(x, prob):
    """Zero whole samples with probability `prob`, scaling the kept ones by 1/(1 - prob).

    Out of place, unlike the reference (darts.md §7): an in-place change of an op's output breaks autograd
    and the metric engine's full backward hooks.
    """
    keep = 1.0 - prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * (mask / keep)


def _cell_plan(genotype, reduction):
    """The (op, input) pairs and concat of one cell type, checked to form a DAG of known ops."""
    kind = "reduce" if reduction else "normal"
    try:
        pairs = tuple((str(op), int(index)) for op, index in getattr(genotype, kind))
        concat = tuple(int(i) for i in getattr(genotype, kind + "_concat"))
    except (AttributeError, TypeError, ValueError):
        raise HnasError(f"a DARTS genotype needs the fields normal, normal_concat, reduce, reduce_concat, "
                        f"{kind} a sequence of (op_name, input_index) pairs; got {genotype!r}") from None
    if not pairs or len(pairs) % 2:
        raise HnasError(f"the {kind} cell of a DARTS genotype needs two (op, input) pairs per node; got "
                        f"{len(pairs)} pairs")
    for k, (op, index) in enumerate(pairs):
        if op not in OPS:
            raise HnasError(f"unknown DARTS op {op!r} in the {kind} cell; choose one of: {', '.join(OPS)}")
        if not 0 <= index < 2 + k // 2:
            raise HnasError(f"pair {k} ({op!r}, {index}) of the {kind} cell feeds node {2 + k // 2}, so its "
                            f"input must be 0..{1 + k // 2} (the cell inputs or an earlier node)")
    states = 2 + len(pairs) // 2
    if not concat or not all(0 <= i < states for i in concat):
        raise HnasError(f"the {kind}_concat {concat} of a DARTS genotype must name states 0..{states - 1}")
    return pairs, concat


class Cell(nn.Module):
    """One cell from (C_pp, C_p) input channels to `len(concat) * c` (darts.md §4.2)."""

    def __init__(self, genotype, c_pp, c_p, c, reduction, reduction_prev):
        super().__init__()
        pairs, self.concat = _cell_plan(genotype, reduction)
        # The k-2 input was at twice the resolution when the previous cell reduced.
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        # Stride 2 only on the cell inputs of a reduction cell: the nodes are already reduced (darts.md §1.1).
        self.ops = nn.ModuleList(OPS[op](c, 2 if reduction and index < 2 else 1, True) for op, index in pairs)
        self.inputs = tuple(index for _, index in pairs)
        self.multiplier = len(self.concat)

    def forward(self, s0, s1, drop_prob):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for k in range(0, len(self.ops), 2):
            node = 0
            for op, index in ((self.ops[k], self.inputs[k]), (self.ops[k + 1], self.inputs[k + 1])):
                h = op(states[index])
                # Every op but Identity, the stride-2 skip (a FactorizedReduce) included (darts.md §4.2).
                if self.training and drop_prob > 0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                node = node + h
            states.append(node)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """The auxiliary classifier on the output of the second reduction cell: pooled to 2x2, a 1x1 and a 2x2
    conv, a linear layer. CIFAR (8x8 input, darts.md §4.3): pool stride 3, BN after the 768-channel conv.
    ImageNet (7x7, §4.4): stride 2 and no BN there, as the reference (a typo it kept for consistency)."""

    def __init__(self, c, num_classes, pool_stride, last_batchnorm):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
            *([nn.BatchNorm2d(768)] if last_batchnorm else []),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def cifar_auxiliary_head(c, num_classes):
    return AuxiliaryHead(c, num_classes, pool_stride=3, last_batchnorm=True)


def imagenet_auxiliary_head(c, num_classes):
    return AuxiliaryHead(c, num_classes, pool_stride=2, last_batchnorm=False)


def _check_settings(c, num_classes, layers, drop_path_prob):
    for key, value in (("C", c), ("num_classes", num_classes), ("layers", layers)):
        require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, key, value,
                "a positive integer")
    require(0.0 <= drop_path_prob < 1.0, "drop_path_prob", drop_path_prob, "a probability in [0, 1)")


class _Network(nn.Module):
    """What both networks share: the cells after the stems, the auxiliary head and the classifier.

    `forward(x)` returns the logits, (N, num_classes); only in training with `auxiliary` it returns the
    tuple (logits, aux_logits), for the train loop's auxiliary loss. The metric engine builds the networks
    with auxiliary=False and runs them in train mode, and so gets a plain tensor.

    `drop_path_prob` is a plain attribute that the train loop may set every epoch; drop path acts only in
    training and when it is > 0. Parameters and modules are created in the reference's order (stems, cells,
    auxiliary head, classifier), under PyTorch's default init.

    A subclass creates its stems, calls `_build`, then creates `global_pooling` and `classifier`, and defines
    `_stems(x) -> (s0, s1)`, the two inputs of the first cell.
    """

    def _build(self, genotype, c, num_classes, layers, auxiliary, drop_path_prob, c_stem, reduction_prev,
               aux_head):
        """Create the cells from `c_stem` stem channels; call it after creating the stems."""
        self.genotype = genotype
        self.auxiliary = bool(auxiliary)
        self.drop_path_prob = float(drop_path_prob)
        reductions = (layers // 3, 2 * layers // 3)
        self._aux_after = reductions[1]
        c_pp, c_p, c_curr = c_stem, c_stem, c
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            cell = Cell(genotype, c_pp, c_p, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self._aux_after:
                c_aux = c_p
        if self.auxiliary:
            # The name holds "auxiliary": count_parameters leaves it out, as the reference does.
            self.auxiliary_head = aux_head(c_aux, num_classes)
        return c_p

    def forward(self, x):
        s0, s1 = self._stems(x)
        with_aux = self.training and self.auxiliary
        aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if with_aux and i == self._aux_after:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return (logits, aux_logits) if with_aux else logits


class NetworkCIFAR(_Network):
    """The DARTS CIFAR network (darts.md §4.3): a 3x3 conv-BN stem to 3C channels (no ReLU), `layers` cells
    with reductions at cells floor(L/3) and floor(2L/3), global average pooling and a linear classifier.

    `forward(x)` returns the logits; only when `self.training and self.auxiliary`, the tuple (logits,
    aux_logits). `drop_path_prob` may be set at any time (see `_Network`)."""

    def __init__(self, C, num_classes, layers, auxiliary, genotype, drop_path_prob=0.0):
        super().__init__()
        _check_settings(C, num_classes, layers, drop_path_prob)
        self.stem = nn.Sequential(nn.Conv2d(3, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
        c_p = self._build(genotype, C, num_classes, layers, auxiliary, drop_path_prob, 3 * C, False,
                          cifar_auxiliary_head)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def _stems(self, x):
        s = self.stem(x)
        return s, s


class NetworkImageNet(_Network):
    """The DARTS ImageNet network (darts.md §4.4): two stride-2 stems (224 -> 56 -> 28), `layers` cells with
    reductions at cells floor(L/3) and floor(2L/3) (28 -> 14 -> 7), a 7x7 average pool and a linear
    classifier. C must be even.

    `forward(x)` returns the logits; only when `self.training and self.auxiliary`, the tuple (logits,
    aux_logits). `drop_path_prob` may be set at any time (see `_Network`)."""

    def __init__(self, C, num_classes, layers, auxiliary, genotype, drop_path_prob=0.0):
        super().__init__()
        _check_settings(C, num_classes, layers, drop_path_prob)
        if C % 2:
            raise HnasError(f"NetworkImageNet needs an even C (its first stem conv has C/2 channels), got {C}")
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=False),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        # The first cell's k-2 input (stem0, 56x56) is at twice stem1's resolution: as if a reduction preceded.
        c_p = self._build(genotype, C, num_classes, layers, auxiliary, drop_path_prob, C, True,
                          imagenet_auxiliary_head)
        self.global_pooling = nn.AvgPool2d(7)
        self.classifier = nn.Linear(c_p, num_classes)

    def _stems(self, x):
        s0 = self.stem0(x)
        return s0, self.stem1(s0)
