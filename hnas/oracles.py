"""Oracles: what a search queries, and what its result reports.

An oracle answers for one space (`@register_oracle(name, space=...)`) and owns its datasets, splits and
epochs. Its protocol (hnas.search and the stages use nothing else):

- `query(arch)` -> Outcome (validation accuracy, cost in seconds, extra info); `describe()`: what a query
  returns (oracle name, dataset, split, epochs), for result files;
- `cost_in_advance(arch)`, only where the cost is known before querying (a lookup table), so the budget can
  refuse a query it cannot afford (hnas.search.oracle.QueryLog states the rule for both kinds);
- `index(arch)`: the architecture's official benchmark index; `archs`: every architecture it answers for,
  where it can list them;
- `test_columns` ({dataset: column name}) and `test_accs(arch)` ({dataset: accuracy}): the test accuracies
  a result reports (for reports only; no algorithm sees them);
- `targets` ((dataset, split, epochs), ...) and `accuracy(arch, dataset, split, epochs)`: the accuracies
  a correlation report ranks metrics against;
- optionally `from_config(cfg)` (a classmethod), for an oracle made from the run's config rather than from
  search.query_* (the training oracle: the `query` protocol), and `official_index = False` for one whose
  indices are not a benchmark's (metric tables then record none).

`create_oracle` builds one, `default_oracle(space)` names the first registered for a space, and
`oracle_for_run(cfg)` builds a run's.

    oracle = create_oracle("nb201-table", dataset="cifar10-valid", epochs=12)
"""

import inspect
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

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
        cls.name = name
        _SPACE_OF[name] = space
        return cls

    return add


def create_oracle(name, **options):
    """The oracle `name` with `options`; an option it does not take is an HnasError listing those it does."""
    cls = ORACLES.get(name)
    accepted = [p for p in inspect.signature(cls).parameters if p != "table"]
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise HnasError(f"oracle {name!r} takes no option {', '.join(unknown)} (search.query_{unknown[0]}); it "
                        f"takes: {', '.join(accepted)}")
    return cls(**options)


def oracles_for(space):
    """The oracles of `space` in the order they were registered: the first is its default."""
    return [name for name, of in _SPACE_OF.items() if of == space]


def default_oracle(space):
    names = oracles_for(space)
    if not names:
        raise HnasError(f"no oracle answers queries on space {space!r}: a search there needs one "
                        f"(registered oracles: {', '.join(f'{n} ({_SPACE_OF[n]})' for n in ORACLES.names())})")
    return names[0]


def oracle_for_run(cfg):
    """The oracle a search of the typed config `cfg` queries: the space's default, made by its class's
    `from_config(cfg)` where it has one (an oracle that trains), else with the options of search.query_*."""
    name = default_oracle(cfg.space.name)
    cls = ORACLES.get(name)
    if hasattr(cls, "from_config"):
        return cls.from_config(cfg)
    return create_oracle(name, **query_options(cfg))


def official_indexer(space):
    """`index(arch)`: the benchmark index of `arch` from the space's default oracle, or None where there is
    none (no oracle, one without official indices, or its benchmark table is missing or lacks the
    architecture). The oracle is made once, so reading a table of many rows does not make one per row."""
    try:
        name = default_oracle(space)
        if not getattr(ORACLES.get(name), "official_index", True):
            return lambda arch: None
        oracle = create_oracle(name)
    except HnasError:
        return lambda arch: None

    def index(arch):
        try:
            return oracle.index(arch)
        except HnasError:
            return None

    return index


def query_options(cfg):
    """The options search.query_* give a benchmark table's oracle (those that are set)."""
    scfg = cfg.search
    query = {"dataset": scfg.query_dataset, "epochs": scfg.query_epochs, "split": scfg.query_split,
             "repeat": _repeat(scfg.query_repeat)}
    if scfg.query_repeat == "random":
        query["seed"] = int(cfg.seed)
    return {k: v for k, v in query.items() if v is not None}


def _repeat(text):
    """search.query_repeat as an oracle takes it: a run number as an int ("1" -> 1), else as given."""
    return int(text) if text is not None and text.isdigit() else text


class BenchmarkOracle:
    """Answers from a benchmark table with `archs`, `index_of`, `accuracy(arch, dataset, split, epochs)` and
    `train_time(arch, dataset, epochs)`: the validation accuracy after `epochs` on `dataset`, at the cost of
    that training's recorded time. A lookup knows the cost before the query (`cost_in_advance`).

    Subclasses name the table's test accuracies (`test_columns`, at `test_epochs`) and correlation `targets`.
    """

    name = "benchmark"
    test_columns = {}
    test_epochs = None
    targets = ()

    def __init__(self, table, dataset, epochs):
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
        return Outcome(val_acc=self.accuracy(arch, self.dataset, "valid", self.epochs),
                       cost_s=self.cost_in_advance(arch))

    def accuracy(self, arch, dataset, split, epochs):
        return float(self.table.accuracy(arch, dataset, split, epochs))

    def test_accs(self, arch):
        return {ds: self.accuracy(arch, ds, "test", self.test_epochs) for ds in self.test_columns}

    def describe(self):
        """What a query returns, for result files."""
        return {"oracle": self.name, "dataset": self.dataset, "split": "valid", "epochs": self.epochs}


@register_oracle("nb201-table", space="nb201")
class NB201TableOracle(BenchmarkOracle):
    """NAS-Bench-201's compact table (the data folder's, else the one shipped with hnas); results report the
    200-epoch test accuracy on its three datasets."""

    test_columns = {"cifar10": "cifar10_test_acc_200ep", "cifar100": "cifar100_test_acc_200ep",
                    "ImageNet16-120": "imagenet16_test_acc_200ep"}
    test_epochs = 200
    # cifar10-valid's 200-epoch validation accuracy: the ground truth the zero-cost-nas Spearman values match
    targets = (("cifar10", "test", 200), ("cifar100", "test", 200), ("ImageNet16-120", "test", 200),
               ("cifar10-valid", "valid", 200), ("cifar10-valid", "valid", 12), ("cifar100", "valid", 12),
               ("ImageNet16-120", "valid", 12))

    def __init__(self, dataset="cifar10-valid", epochs=12, table=None):
        if table is None:
            from hnas.benchmarks.nb201 import load_table

            table = load_table()
        super().__init__(table, dataset, epochs)


@register_oracle("nb101-table", space="nb101")
class NB101TableOracle:
    """NAS-Bench-101's compact table (`<data folder>/nb101/nb101.npz`, made once by `hnas-nb101-convert` from
    the official tfrecord, or from NASLib's 30-cell pickle for a try-out; docs/nb101.md).

    A query returns the CIFAR-10 `split` accuracy (validation: the 10k images held out of the training set)
    after `epochs` at the cost of that budget's training time; results report the 108-epoch test accuracy.
    `repeat` says which of the 3 training runs: "mean" (the default, the benchmark README's convention), 0, 1
    or 2, or "random": one run per architecture drawn from (`seed`, the cell's hash), so a run is
    reproducible and the accuracy and cost of a query come from the same run.
    """

    test_columns = {"cifar10": "cifar10_test_acc_108ep"}
    targets = (("cifar10", "valid", 108), ("cifar10", "test", 108))

    def __init__(self, dataset="cifar10", epochs=108, split="valid", repeat="mean", seed=0, table=None):
        from hnas.benchmarks.nb101 import load_table
        from hnas.spaces import create_space

        if dataset != "cifar10":
            raise HnasError(f"NAS-Bench-101 was trained on CIFAR-10 only; a query on {dataset!r} is not in it "
                            "(search.query_dataset=cifar10, or leave it null)")
        self.table = load_table() if table is None else table
        self.dataset, self.epochs, self.split, self.repeat, self.seed = dataset, int(epochs), split, repeat, seed
        self.space = create_space("nb101")
        # An unknown budget, split or repeat fails here, not at the first query.
        self.table.accuracy(0, split, self.epochs, repeat, np.random.default_rng(0))

    @cached_property
    def archs(self):
        """The cells of the table as canonical arch strings, in row (hash) order."""
        from hnas.spaces.nb101.spec import arch_string

        return [arch_string(*self.table.spec(h)) for h in self.table.hashes]

    def index(self, arch):
        return self.table.row(self.space.hash(arch))

    def _run(self, arch):
        """(row, repeat, rng) of the run a query of `arch` reads."""
        cell = self.space.hash(arch)
        if self.repeat != "random":
            return self.table.row(cell), self.repeat, None
        return self.table.row(cell), "random", np.random.default_rng([int(self.seed), int(cell[:15], 16)])

    def accuracy(self, arch, dataset, split, epochs):
        if dataset != "cifar10":
            raise HnasError(f"NAS-Bench-101 has CIFAR-10 accuracies only, not {dataset!r}")
        row, repeat, rng = self._run(arch)
        return float(self.table.accuracy(row, split, int(epochs), repeat, rng))

    def cost_in_advance(self, arch):
        row, repeat, rng = self._run(arch)
        return float(self.table.train_time(row, self.epochs, repeat, rng))

    def query(self, arch):
        return Outcome(val_acc=self.accuracy(arch, self.dataset, self.split, self.epochs),
                       cost_s=self.cost_in_advance(arch))

    def test_accs(self, arch):
        return {"cifar10": self.accuracy(arch, "cifar10", "test", 108)}

    def describe(self):
        return {"oracle": self.name, "dataset": self.dataset, "split": self.split, "epochs": self.epochs,
                "repeat": self.repeat}


@register_oracle("nb101-naslib-zc", space="nb101")
class NASLibZeroCostOracle:
    """The 108-epoch CIFAR-10 validation accuracies of NASLib's NB101 zero-cost JSON
    (`<data folder>/naslib-zc-proxies/zc_nasbench101.json`, or `path`), for a correlation report over its cells
    where the official table is absent: `stage=report stage.oracle=nb101-naslib-zc` (docs/nb101.md).

    Its 500 keys are 292 cells (NASLib spells some cells several ways); a cell's accuracy, like each of NASLib's
    scores, is the mean over its spellings. A cell the JSON lacks has no accuracy (NaN: the report counts it out
    of n). The report ranks NASLib's own scores too (`reference_columns`: `naslib_<proxy>`), beside ours. The
    JSON holds no training times, so no search can query it.
    """

    official_index = False
    test_columns = {}
    targets = (("cifar10", "valid", 108),)

    def __init__(self, path=None):
        from hnas import paths
        from hnas.benchmarks.nb101 import read_zc_proxies
        from hnas.spaces import create_space
        from hnas.spaces.nb101.spec import arch_string, from_naslib

        self.path = path or paths.data_dir() / "naslib-zc-proxies" / "zc_nasbench101.json"
        space = create_space("nb101")
        spellings = {}
        for key, values in read_zc_proxies(self.path).items():
            spellings.setdefault(space.validate(arch_string(*from_naslib(key))), []).append(values)
        # A score one spelling lacks is averaged over the spellings that have it.
        self.scores = {arch: {name: float(np.mean([v[name] for v in values if name in v]))
                              for name in set().union(*values)}
                       for arch, values in spellings.items()}

    @property
    def archs(self):
        return list(self.scores)

    def index(self, arch):
        return None

    def accuracy(self, arch, dataset, split, epochs):
        if (dataset, split, int(epochs)) not in self.targets:
            raise HnasError(f"NASLib's zero-cost JSON holds the CIFAR-10 validation accuracy after 108 epochs "
                            f"only, not {dataset} {split} after {epochs}")
        return self.scores.get(arch, {}).get("val_accuracy", float("nan"))

    def reference_columns(self, archs):
        """{"naslib_<proxy>": values in the order of `archs`} for each of NASLib's scores (NaN where absent)."""
        names = sorted({name for values in self.scores.values() for name in values} - {"val_accuracy"})
        return {f"naslib_{name}": [self.scores.get(arch, {}).get(name, float("nan")) for arch in archs]
                for name in names}

    def query(self, arch):
        raise HnasError(f"{self.name} has no training times, so a search cannot query it: it serves correlation "
                        "reports (stage=report stage.oracle=nb101-naslib-zc). A search on NB101 queries "
                        "nb101-table, the official benchmark converted by hnas-nb101-convert (docs/nb101.md)")

    def test_accs(self, arch):
        return {}

    def describe(self):
        return {"oracle": self.name, "dataset": "cifar10", "split": "valid", "epochs": 108}


@register_oracle("train", space="darts")
class TrainingOracle:
    """Answers a query by training the architecture with a query protocol (a `train` config: HNAS's is
    conf/query/<dataset>.yaml, darts.md 3.3) and returning its accuracy on the protocol's evaluation split
    (with `holdout`: the held-out part of the training set), at the cost of the seconds that training took.

    Every finished query goes to the query table of its settings (hnas.query_table) at once: a query asked
    again, by this run, a rerun after a kill or another run with the same settings, returns the recorded
    outcome (the same accuracy and cost) without training. The network of a query is trained from the seed
    of (run seed, architecture), so its outcome does not depend on when it is asked. Results report no test
    accuracy (`stage=train` trains the chosen architecture for that).
    """

    official_index = False
    test_columns = {}
    targets = ()
    archs = None  # the space is searched through its own sampler (hnas.search.space.Universe)

    def __init__(self, space_cfg, protocol, dataset, num_classes, seed, results_dir, device):
        """`space_cfg`: the typed space config; `protocol`: a typed train config (hnas.config.TrainConfig)."""
        from hnas.query_table import QueryTable
        from hnas.spaces import create_space, space_options
        from hnas.train.fit import protocol_settings

        options = space_options(space_cfg)
        self.space = space = create_space(space_cfg.name, **options)
        self.protocol, self.dataset, self.num_classes = protocol, dataset, num_classes
        self.seed, self.device = int(seed), device
        self.settings = {"space": space.name, "space_options": {k: str(v) for k, v in options.items()},
                         "dataset": dataset, "protocol": protocol_settings(protocol), "seed": self.seed}
        self.table = QueryTable(results_dir, self.settings, space.validate)
        self.trained = 0  # queries this oracle trained (not read from the table)

    @classmethod
    def from_config(cls, cfg):
        from hnas import paths
        from hnas.devices import resolve_device

        set_options = [f"search.query_{k}" for k in ("dataset", "epochs", "split", "repeat")
                       if getattr(cfg.search, f"query_{k}") is not None]
        if set_options:
            raise HnasError(f"space={cfg.space.name} trains each queried architecture, so {', '.join(set_options)} "
                            "does not apply: the query protocol is the `query` group (conf/query/; e.g. "
                            "query.epochs=3) and the dataset is dataset=<name>")
        if cfg.query is None:
            raise HnasError(f"a search on space={cfg.space.name} trains each queried architecture with a query "
                            f"protocol, and dataset={cfg.dataset.name} has none: choose one with query=<name> "
                            f"(conf/query/: HNAS's are cifar10, cifar100, imagenet)")
        return cls(cfg.space, cfg.query, cfg.dataset.name, cfg.dataset.num_classes, cfg.seed, paths.results_dir(),
                   resolve_device(cfg.device, cfg.jobs_per_gpu))

    def index(self, arch):
        return self.table.number(self.space.validate(arch))

    def query(self, arch):
        arch = self.space.validate(arch)
        record = self.table.get(arch)
        if record is None:
            with self.table.training(arch) as folder:
                record = self.table.get(arch) or self.table.add(self._train(arch, folder))
        return Outcome(val_acc=float(record["val_acc"]), cost_s=float(record["cost_s"]), info=record)

    def _train(self, arch, folder):
        from hnas.train import checkpoint
        from hnas.train.distributed import World
        from hnas.train.fit import fit

        world = World(0, 0, 1, self.device)
        seed = self.space.arch_seed(self.seed, arch) % 2**32  # numpy's seeds are 32-bit
        saved = checkpoint.rng_state()  # training reseeds the global generators: the search's draws stay its own
        try:
            fitted = fit(arch, self.space, self.protocol, self.dataset, self.num_classes, seed, folder, world,
                         {"arch": arch, **self.settings})
        finally:
            checkpoint.set_rng_state(saved)
        self.trained += bool(fitted.trained_epochs)
        last = fitted.history[-1]
        return {"arch": arch, "val_acc": last["test_top1"], "cost_s": fitted.elapsed_s, "epochs": len(fitted.history),
                "train_images": fitted.loader_images[0], "eval_images": fitted.loader_images[1],
                "params_m": fitted.params_m, "device": str(self.device), "run": folder.name}

    def test_accs(self, arch):
        return {}

    def describe(self):
        split = "test" if self.protocol.holdout is None else f"holdout {self.protocol.holdout}"
        return {"oracle": self.name, "dataset": self.dataset, "split": split, "epochs": self.protocol.epochs,
                "protocol": self.protocol.name, "table": str(self.table.folder), "trained_now": self.trained}
