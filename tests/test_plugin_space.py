"""A new search space and its oracle plug in from one file: this one. Nothing else in hnas or conf/ names them.

The test registers a small cell space (with a real network, so every stage computes real metrics on it), its
config group option and a benchmark-like oracle, then runs what a user runs through `run.py`: a precompute, a
sweep of every search algorithm, and both reports.
"""

import json
import runpy
import sys
from dataclasses import dataclass

import pandas as pd
import pytest
from hydra.core.config_store import ConfigStore
from torch import nn

from conftest import REPO
from hnas.errors import HnasError
from hnas.oracles import Outcome, register_oracle
from hnas.search import SEARCHES
from hnas.spaces import list_spaces, register_space
from hnas.spaces.cell import CellSpace

OPS = ("conv", "pool", "skip", "none")
EDGES = ((1, 0), (2, 0), (2, 1))  # node 1 <- 0; node 2 <- 0, 1
METRICS = ["grad_norm", "snip", "naswot", "condnum", "params"]


class TinyCell(nn.Module):
    def __init__(self, ops, channels):
        super().__init__()
        make = {"conv": lambda: nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                              nn.BatchNorm2d(channels)),
                "pool": lambda: nn.AvgPool2d(3, stride=1, padding=1), "skip": nn.Identity, "none": None}
        self.ops = ops
        self.edges = nn.ModuleList(make[op]() if op != "none" else nn.Identity() for op in ops)

    def forward(self, x):
        nodes = [x]
        for node in (1, 2):
            nodes.append(sum(edge(nodes[src]) * (op != "none") for (to, src), op, edge
                             in zip(EDGES, self.ops, self.edges) if to == node))
        return nodes[-1]


class TinyNet(nn.Module):
    def __init__(self, ops, num_classes, channels=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.cell = TinyCell(ops, channels)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.head(self.cell(self.stem(x)).mean(dim=(2, 3)))


@dataclass
class PlugSpaceConfig:
    name: str = "plug"


@register_space("plug")
class PlugSpace(CellSpace):
    """64 cells written 'conv-pool-skip', one op per edge."""

    schema = PlugSpaceConfig
    name = "plug"
    ops = OPS
    edges = EDGES

    def encode(self, arch):
        ops = tuple(str(arch).split("-"))
        if len(ops) != len(EDGES) or any(op not in OPS for op in ops):
            raise HnasError(f"malformed plug architecture {arch!r}: write {len(EDGES)} of {OPS} joined by '-'")
        return ops

    def decode(self, ops):
        return "-".join(ops)

    def build(self, arch, num_classes):
        return TinyNet(self.encode(arch), num_classes)


@register_oracle("plug-table", space="plug")
class PlugOracle:
    """A made-up benchmark: more convs train better; its own datasets, splits and epochs."""

    test_columns = {"plug-a": "a_test_acc_5ep", "plug-b": "b_test_acc_5ep"}
    targets = (("plug-a", "test", 5), ("plug-b", "test", 5), ("plug-a", "valid", 1))

    def __init__(self, dataset="plug-a", epochs=1):
        self.archs = PlugSpace().all_archs()
        self.dataset, self.epochs = dataset, epochs

    def index(self, arch):
        return self.archs.index(arch)

    def accuracy(self, arch, dataset, split, epochs):
        ops = arch.split("-")
        score = 20 * ops.count("conv") + 7 * ops.count("skip") + 3 * ops.count("pool") + self.index(arch) / 100
        return score + (10.0 if split == "test" else 0.0) - (5.0 if dataset == "plug-b" else 0.0)

    def cost_in_advance(self, arch):
        return 10.0 + self.index(arch)

    def query(self, arch):
        return Outcome(self.accuracy(arch, "plug-a", "valid", 1), self.cost_in_advance(arch))

    def test_accs(self, arch):
        return {ds: self.accuracy(arch, ds, "test", 5) for ds in self.test_columns}

    def describe(self):
        return {"oracle": self.name, "dataset": "plug-a", "split": "valid", "epochs": 1}


ConfigStore.instance().store(group="space", name="plug", node=PlugSpaceConfig)
COMMON = ["space=plug", "dataset=fake", "probe.batch_size=8", "device=cpu"]


def run_py(*args):
    """`python run.py <args>`, in this process (so the registrations above are seen)."""
    argv = sys.argv
    sys.argv = ["run.py", *args]
    try:
        runpy.run_path(str(REPO / "run.py"), run_name="__main__")
    finally:
        sys.argv = argv


@pytest.fixture
def folders(tmp_path, monkeypatch):
    # run.py exports the folders of its config to the environment; restore them after the test.
    monkeypatch.setenv("HNAS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HNAS_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path


def test_a_space_and_oracle_defined_here_run_every_stage(folders):
    assert "plug" in list_spaces()
    run_py("stage=precompute", *COMMON, f"stage.metrics=[{','.join(METRICS)}]", f"hydra.run.dir={folders}/pre")
    (table,) = (folders / "results" / "metric-tables").iterdir()
    assert table.name == "plug-fake-train-b8-seed0"
    frame = pd.read_csv(table / "table.csv")
    assert sorted(frame["arch"]) == sorted(PlugSpace().all_archs())
    oracle = PlugOracle()
    assert [oracle.index(a) for a in frame["arch"]] == frame["index"].tolist()
    assert frame[METRICS].notna().all().all() and frame["params"].nunique() > 1

    algorithms = SEARCHES.names()
    run_py("-m", "stage=search", *COMMON, "metric=snip", f"search={','.join(algorithms)}", "search.queries=6",
           f"hydra.sweep.dir={folders}/sweep")
    results = [json.loads(p.read_text()) for p in sorted((folders / "sweep").rglob("result.json"))]
    assert sorted(r["algorithm"] for r in results) == algorithms
    for r in results:
        assert r["space"] == "plug" and r["test_columns"] == PlugOracle.test_columns
        assert r["query"]["oracle"] == "plug-table" and r["test_acc"] == oracle.test_accs(r["arch"])
        assert r["arch"] in oracle.archs and r["n_queries"] <= 6
    summary = pd.read_csv(folders / "sweep" / "summary.csv")
    assert len(summary) == len(algorithms) and "a_test_acc_5ep_mean" in summary.columns

    run_py("stage=report", "stage.kind=search", f"stage.inputs=[{folders}/sweep]", f"hydra.run.dir={folders}/rep")
    paper = pd.read_csv(folders / "rep" / "paper_table.csv").set_index("method")
    best = max(oracle.test_accs(a)["plug-a"] for a in oracle.archs)
    assert paper.loc["optimum", "a_test_acc_5ep_mean"] == best  # the plugged-in oracle's optimum
    labels = {SEARCHES.get(name).label for name in algorithms}
    assert {m.split(" (")[0] for m in paper.index if m != "optimum"} == labels
    markdown = (folders / "rep" / "paper_table.md").read_text()
    assert "| method | plug-a | plug-b |" in markdown and (folders / "rep" / "budget_figure.png").is_file()

    run_py("stage=report", "stage.kind=correlation", *COMMON, f"hydra.run.dir={folders}/corr")
    corr = pd.read_csv(folders / "corr" / "correlation.csv")
    assert sorted(set(corr["target"])) == ["plug-a test 5ep", "plug-a valid 1ep", "plug-b test 5ep"]
    # the precomputed metrics, and those the searches computed on demand (RoBoT's six)
    from hnas.search.config import ROBOT_METRICS

    assert set(corr["metric"]) == set(METRICS) | set(ROBOT_METRICS)
    # params ranks the made-up accuracy (which counts convs) as the network's size does.
    rho = corr.set_index(["metric", "target"]).loc[("params", "plug-a test 5ep"), "spearman"]
    assert rho > 0.8
    assert (folders / "corr" / "scatter.png").is_file()
