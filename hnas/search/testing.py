"""Small constructed problems for tests: a toy cell space and an in-memory benchmark table with its interface.

Nothing here is used by a real run; it lets tests (and anyone checking an algorithm) build a problem whose
answer is known by construction, without the NB201 table.
"""


import numpy as np

from hnas.oracles import NB201TableOracle
from hnas.search.core import Problem
from hnas.search.space import Universe
from hnas.spaces.cell import CellSpace


class FakeTable:
    """In-memory table with NB201Table's interface: `archs`, `index_of`, `accuracy`, `train_time`, so
    NB201TableOracle(table=...) answers from it.

    `val`, `cost`: per architecture (in `archs` order) the query's validation accuracy and training time;
    `test`: {dataset: per-architecture 200-epoch test accuracy}.
    """

    def __init__(self, archs, val, cost, test, query=("cifar10-valid", 12)):
        self.archs = list(archs)
        self._index = {a: i for i, a in enumerate(self.archs)}
        self.val = np.asarray(val, dtype=float)
        self.cost = np.asarray(cost, dtype=float)
        self.test = {ds: np.asarray(v, dtype=float) for ds, v in test.items()}
        self.query = query

    def index_of(self, arch):
        return self._index[arch]

    def _i(self, arch_or_index):
        return arch_or_index if isinstance(arch_or_index, (int, np.integer)) else self._index[arch_or_index]

    def accuracy(self, arch_or_index, dataset, split, epochs):
        i = self._i(arch_or_index)
        if split == "valid" and (dataset, epochs) == self.query:
            return float(self.val[i])
        if split == "test" and epochs == 200 and dataset in self.test:
            return float(self.test[dataset][i])
        raise KeyError(f"FakeTable has no {dataset} {split} accuracy at {epochs} epochs")

    def train_time(self, arch_or_index, dataset, epochs):
        if (dataset, epochs) != self.query:
            raise KeyError(f"FakeTable has no {dataset} training time at {epochs} epochs")
        return float(self.cost[self._i(arch_or_index)])


class ToySpace(CellSpace):
    """A cell space of len(ops) ** len(edges) architectures written 'a|b|c|d' (256 by default)."""

    name = "toy"

    def __init__(self, ops=("a", "b", "c", "d"), edges=((1, 0), (2, 0), (2, 1), (3, 0))):
        self.ops, self.edges = tuple(ops), tuple(edges)

    def encode(self, arch):
        return tuple(arch.split("|"))

    def decode(self, ops):
        return "|".join(ops)


def toy_space(ops=("a", "b", "c", "d"), edges=((1, 0), (2, 0), (2, 1), (3, 0))):
    """The whole toy space as a search universe."""
    space = ToySpace(ops, edges)
    return Universe(space, space.all_archs())


class MetricDict(dict):
    """`metrics_of` over a fixed {arch: {name: value}} dict; counts the architectures it was asked for."""

    def __init__(self, values, seconds_per_arch=0.0):
        super().__init__(values)
        self.seconds_per_arch = seconds_per_arch
        self.metric_seconds = 0.0
        self.seen = set()

    def __call__(self, archs):
        for arch in archs:
            if arch not in self.seen:
                self.seen.add(arch)
                self.metric_seconds += self.seconds_per_arch
        return {arch: self[arch] for arch in archs}


def constructed_problem(seed=0, peak=120, metric_step=10.0, condnum=0.0, cost=100.0):
    """A toy problem (256 archs) where HNAS's pick is known by construction.

    Architecture i (in space order) has metric M = metric_step * i, condition number `condnum`, validation
    accuracy 100 - |i - peak| / 10 (best at i = peak) and cost `cost` (+ i / 1000, so costs differ). With
    K = 0 the score mu * |M^2 - (t * scale)^2| is lowest at the architecture whose M is closest to t * scale,
    whatever mu is: with scale = metric_step * 200, t = 0.25 picks i = 50.
    Test accuracies: cifar10 = val - 5, cifar100 = val - 25, ImageNet16-120 = val - 50.
    """
    space = toy_space()
    n = len(space)
    i = np.arange(n)
    val = 100.0 - np.abs(i - peak) / 10.0
    test = {"cifar10": val - 5, "cifar100": val - 25, "ImageNet16-120": val - 50}
    table = FakeTable(space.archs, val, cost + i / 1000.0, test)
    metrics = MetricDict({a: {"fake": metric_step * k, "condnum": condnum} for k, a in enumerate(space.archs)},
                         seconds_per_arch=0.5)
    problem = Problem(space=space, oracle=NB201TableOracle(table=table), seed=seed, metric="fake", metrics_of=metrics)
    return problem, table
