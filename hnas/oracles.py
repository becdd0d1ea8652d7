"""Oracles: what a search queries. `query(arch)` returns an Outcome (validation accuracy, cost in seconds,
extra info); the benchmark (or trainer) behind an oracle owns its datasets, splits and epochs, and says what
a result reports (`test_accs`: the test accuracies a table has, for reports only; no algorithm sees them).

Oracles are registered for the space they answer (`@register_oracle(name, space=...)`); `create_oracle`
builds one, `default_oracle(space)` names the first registered for a space.

    oracle = create_oracle("nb201-table", dataset="cifar10-valid", epochs=12)
"""

from dataclasses import dataclass, field

from hnas.errors import HnasError
from hnas.registry import Registry

ORACLES = Registry("oracle")
_SPACE_OF = {}


@dataclass(frozen=True)
class Outcome:
    val_acc: float
    cost_s: float
    info: dict = field(default_factory=dict)


def register_oracle(name, space):
    def add(cls):
        ORACLES.register(name)(cls)
        _SPACE_OF[name] = space
        return cls

    return add


def create_oracle(name, **options):
    return ORACLES.get(name)(**options)


def oracles_for(space):
    return [name for name in ORACLES.names() if _SPACE_OF[name] == space]


def default_oracle(space):
    names = oracles_for(space)
    if not names:
        raise HnasError(f"no oracle answers queries on space {space!r}: a search there needs one "
                        f"(registered oracles: {', '.join(f'{n} ({_SPACE_OF[n]})' for n in ORACLES.names())})")
    return names[0]


def official_indexer(space):
    """`index(arch)`: the benchmark index of `arch` from the space's default oracle, or None where there is
    none (no oracle, or its benchmark table is missing or lacks the architecture). The oracle is made once,
    so reading a table of many rows does not make one per row."""
    try:
        oracle = create_oracle(default_oracle(space))
    except HnasError:
        return lambda arch: None

    def index(arch):
        try:
            return oracle.index(arch)
        except HnasError:
            return None

    return index


def official_index(space, arch):
    """The benchmark index of one architecture (see official_indexer)."""
    return official_indexer(space)(arch)


# ---- NAS-Bench-201 ----------------------------------------------------------------------------------------
# Datasets whose 200-epoch test accuracy an NB201 result reports, and their short column keys.
TEST_DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
TEST_KEYS = {"cifar10": "cifar10", "cifar100": "cifar100", "ImageNet16-120": "imagenet16"}
TEST_EPOCHS = 200


def test_column(dataset):
    """Column name of a test accuracy a result reports, e.g. `cifar10_test_acc_200ep` (NB201's datasets by
    their short keys)."""
    return f"{TEST_KEYS.get(dataset, dataset)}_test_acc_{TEST_EPOCHS}ep"


class BenchmarkOracle:
    """Answers from a benchmark table that follows hnas.benchmarks.nb201.NB201Table (`archs`, `index_of`,
    `accuracy`, `train_time`): the validation accuracy after `epochs` on `dataset`, at the cost of that
    training's recorded time. A lookup knows the cost before the query (`cost_in_advance`)."""

    test_datasets = TEST_DATASETS

    def __init__(self, table, dataset="cifar10-valid", epochs=12):
        self.table = table
        self.dataset = dataset
        self.epochs = int(epochs)

    @property
    def archs(self):
        """Every architecture the table answers for, in its official index order."""
        return self.table.archs

    def index(self, arch):
        return int(self.table.index_of(arch))

    def cost_in_advance(self, arch):
        return float(self.table.train_time(arch, self.dataset, self.epochs))

    def query(self, arch):
        return Outcome(val_acc=float(self.table.accuracy(arch, self.dataset, "valid", self.epochs)),
                       cost_s=self.cost_in_advance(arch))

    def test_accs(self, arch):
        return {ds: float(self.table.accuracy(arch, ds, "test", TEST_EPOCHS)) for ds in TEST_DATASETS}

    def describe(self):
        """What a query returns, for result files."""
        return {"dataset": self.dataset, "split": "valid", "epochs": self.epochs}


@register_oracle("nb201-table", space="nb201")
class NB201TableOracle(BenchmarkOracle):
    """NAS-Bench-201's compact table (the data folder's, else the one shipped with hnas)."""

    def __init__(self, dataset="cifar10-valid", epochs=12, table=None):
        if table is None:
            from hnas.benchmarks.nb201 import load_table

            table = load_table()
        super().__init__(table, dataset, epochs)
