"""The reference values of ../shared/reference-nb201.md (HNAS / zero-cost-nas code), reproduced exactly.

Protocol of that file: one fixed batch, torch.manual_seed(0) right before building each network in the
reference layout, two torch threads. Tolerances as the file recommends.
"""

import math

import pytest
import torch

from hnas.metrics import compute_metrics
from hnas.spaces import nb201

torch.set_num_threads(2)

ARCHS = {
    "A": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "B": "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|",
    "C": "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "D": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
}
# The table of reference-nb201.md, column by column (None: no reference value, see the tests below).
REFERENCE = {
    "grad_norm": (26.804580688476562, 1.2314505577087402, 3.0736961364746094, 0.0),
    "snip": (53.373207092285156, 2.842653751373291, 5.4877729415893555, 0.0),
    "grasp": (12.560314178466797, 0.023722082376480103, 0.05288255214691162, 0.0),
    "fisher": (0.06428040564060211, 0.009976399131119251, 0.08269497007131577, 2.0771358322235756e-05),
    "synflow": (6.576447554987543e46, 2135.2804052758183, 1.6635050684007248e17, 0.0),
    "jacob_cov": (-65.03397998757647, -65.11315424420735, -90.96117659127083, None),
    "plain": (0.036790881305933, 0.0072496384382247925, 0.05551648885011673, 0.0),
    "ntk_trace": (40.48379898071289, 10.7440195, 34.171165, 1.0),
    "condnum": (6.042233943939209, 132.22308349609375, 3642.3564453125, None),
}
RTOL = {"grad_norm": 1e-4, "snip": 1e-4, "fisher": 1e-4, "jacob_cov": 1e-4, "ntk_trace": 1e-4,
        "grasp": 1e-3, "plain": 1e-3, "condnum": 1e-3}


@pytest.fixture(scope="module")
def values():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    assert float(x.double().sum()) == pytest.approx(-694.4343631726697, rel=1e-12)
    out = {}
    for key, arch in ARCHS.items():
        torch.manual_seed(0)
        net = nb201.build(arch, num_classes=10, layout="reference")
        assert sum(p.numel() for p in net.parameters()) == 1_692_826
        assert float(sum(p.detach().double().sum() for p in net.parameters())) == pytest.approx(298.10518409866535, rel=1e-12)
        out[key] = compute_metrics(net, x, y, list(REFERENCE) + ["naswot", "l2_norm", "params", "flops"])
    return out


@pytest.mark.parametrize("column", range(4), ids=list(ARCHS))
@pytest.mark.parametrize("metric", list(REFERENCE))
def test_reference_value(values, metric, column):
    expected = REFERENCE[metric][column]
    got = values["ABCD"[column]][metric]
    assert math.isfinite(got)
    if expected is None:
        return  # D's jacob_cov and condnum: see test_degenerate_cell
    if expected == 0.0:
        assert got == 0.0
    elif metric == "synflow":
        assert math.log(got) == pytest.approx(math.log(expected), abs=1e-9)
    elif metric == "condnum" and expected >= 1e3:
        assert got == pytest.approx(expected, rel=0.1)  # ill-conditioned: moves by % between thread counts
    else:
        assert got == pytest.approx(expected, rel=RTOL[metric])


def test_degenerate_cell(values):
    d = values["D"]
    assert all(math.isfinite(v) for v in d.values())
    assert d["condnum"] == 1e5  # the reference gives a negative number (lambda_min < 0)
    # every Jacobian row is zero: the correlation matrix is all ones (eigenvalues 64 and 63 zeros)
    k = 1e-5
    assert d["jacob_cov"] == pytest.approx(-(math.log(64 + k) + 1 / (64 + k) + 63 * (math.log(k) + 1 / k)), rel=1e-9)
    assert d["jacob_cov"] < min(values[c]["jacob_cov"] for c in "ABC")
    assert d["naswot"] < min(values[c]["naswot"] for c in "ABC")


def test_layout_constants(values):
    # l2_norm and params are the same for every architecture of the reference layout; flops are not
    for metric in ("l2_norm", "params"):
        assert len({values[c][metric] for c in "ABCD"}) == 1
    assert values["A"]["flops"] > values["B"]["flops"] > values["D"]["flops"]
