"""Structured-config schemas of the `search` group: one dataclass per option (conf/search/<name>.yaml).

Each algorithm class names its schema (`schema = ...`, hnas/search/hnas.py and baselines.py);
`hnas.config.register_configs` stores it as "schema/search/<name>"; the YAML options only
name their schema, so every default lives here, once. Keys shared by all algorithms:

- `queries`: stop after this many oracle queries (None: no limit; then `budget_s` must be set).
- `budget_s`: stop before the query whose cost would push the summed query cost past this many seconds
  (None: no budget).
- `universe`: `space` (draw from the whole space) or `metric_table` (draw only from the architectures
  that the run's metric table already holds, for searching where only part of the space is precomputed).
- `query_dataset` / `query_epochs`: what a query returns: the validation accuracy after `query_epochs`
  epochs on `query_dataset`, costing that training's time; None: the space's oracle's default (NB201:
  12-epoch cifar10-valid, as HNAS; NB101: 108-epoch cifar10).
- `query_split` / `query_repeat`: for oracles that take them (NB101: the split a query reads, and which of
  the 3 training runs: mean, 0, 1, 2, or random, drawn from the run's seed and the cell); None: the default.

Every value is checked when the dataclass is constructed (`__post_init__`): `OmegaConf.to_object` of the
composed config, and `hnas.search.search_config`, construct it, so a bad setting fails with an HnasError
naming the key before any metric is computed or any query made.
"""

import math
import numbers
from dataclasses import dataclass, field
from typing import ClassVar, List, Optional

from hnas.errors import HnasError, require

UNIVERSES = ("space", "metric_table")
ACQUISITIONS = ("ei", "ucb", "poi")
POOLS = ("per_step", "once")


def is_number(value):
    """A real number (numpy's too), not a bool (True would pass as 1)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value):
    """An integer (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_bounds(key, bounds, example):
    ok = (isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(is_number(b) for b in bounds)
          and all(math.isfinite(b) for b in bounds) and bounds[0] < bounds[1])
    require(ok, f"search.{key}", bounds,
            f"give two finite numbers [low, high] with low < high, e.g. search.{key}={example}")


@dataclass
class _Common:
    name: str = ""
    queries: Optional[int] = 20
    budget_s: Optional[float] = None
    query_dataset: Optional[str] = None
    query_epochs: Optional[int] = None
    query_split: Optional[str] = None  # valid | test (NB101's oracle); None: the oracle's default
    query_repeat: Optional[str] = None  # NB101: mean | 0 | 1 | 2 | random (one run per cell, from the seed)
    # space: draw candidates from the whole space. metric_table: only from the architectures of the run's
    # metric table (for searching where only part of the space has precomputed metrics).
    universe: str = "space"
    metric_workers: int = 1  # processes computing the metric values a search lacks (cores / N threads each)

    # Whether a run needs search.queries or search.budget_s to end (training_free ends after its ranking).
    needs_limit: ClassVar[bool] = True

    def __post_init__(self):
        require(self.queries is None or (is_int(self.queries) and self.queries >= 1), "search.queries",
                self.queries, "with fewer than 1 no query can be made; give an integer >= 1, or null for no "
                "query limit")
        require(self.budget_s is None or (is_number(self.budget_s) and self.budget_s > 0), "search.budget_s",
                self.budget_s, "give a number of seconds > 0, or null for no budget")
        if self.needs_limit and self.queries is None and self.budget_s is None:
            raise HnasError(f"search={self.name} needs a limit: set search.queries or search.budget_s")
        require(self.query_epochs is None or (is_int(self.query_epochs) and self.query_epochs > 0),
                "search.query_epochs", self.query_epochs,
                "give a number of training epochs > 0 that the benchmark table holds (NB201: 12 or 200)")
        require(self.universe in UNIVERSES, "search.universe", self.universe,
                f"choose one of: {', '.join(UNIVERSES)}")
        require(is_int(self.metric_workers) and self.metric_workers >= 1, "search.metric_workers",
                self.metric_workers, "give a number of processes >= 1")


@dataclass
class HnasSearch(_Common):
    """HNAS (DESIGN.md section 4); defaults are the reference's NB201 settings."""

    name: str = "hnas"
    scale: float = 5e3  # t * scale is the target metric value
    t_bounds: List[float] = field(default_factory=lambda: [0.0, 1.0])
    c_bounds: List[float] = field(default_factory=lambda: [-4.0, 0.0])  # mu = 10 ** c
    init_portion: float = 0.25  # probed points = min(int(queries * init_portion), max_init) ...
    max_init: int = 10
    init_points: Optional[int] = None  # ... unless given here (budget-only runs count queries as 20)
    init_c: float = -2.0  # the probed points sit at t = linspace(t_bounds, n_init), c = init_c
    acquisition: str = "ei"  # ei | ucb | poi
    xi: float = 0.0  # exploration of ei / poi (the reference's default)
    kappa: float = 2.576  # exploration of ucb
    n_sample: int = 2000  # uniform draws (with replacement) added to the candidate pool per step ...
    pool: str = "per_step"  # ... or, with `once` (the reference's DARTS search), at the first step only
    condnum: str = "condnum"  # the metric used as K
    abs_metric: bool = False  # the reference scores the signed metric value (matters for grasp only)

    def __post_init__(self):
        super().__post_init__()
        require(is_number(self.scale) and math.isfinite(self.scale) and self.scale > 0, "search.scale",
                self.scale, "give a finite number > 0 (the target metric value is t * scale)")
        _check_bounds("t_bounds", self.t_bounds, "[0,1]")
        _check_bounds("c_bounds", self.c_bounds, "[-4,0]")
        require(is_number(self.init_portion) and 0 <= self.init_portion <= 1, "search.init_portion",
                self.init_portion, "give a fraction of the queries in [0, 1]")
        require(is_int(self.max_init) and self.max_init >= 0, "search.max_init", self.max_init,
                "give an integer >= 0")
        require(self.init_points is None or (is_int(self.init_points) and self.init_points >= 0),
                "search.init_points", self.init_points,
                "give an integer >= 0, or null for min(int(queries * init_portion), max_init)")
        # The probed points are BO points: they must lie in BO's domain.
        low, high = self.c_bounds
        require(is_number(self.init_c) and low <= self.init_c <= high, "search.init_c", self.init_c,
                f"give a number within search.c_bounds [{low}, {high}]")
        require(self.acquisition in ACQUISITIONS, "search.acquisition", self.acquisition,
                f"choose one of: {', '.join(ACQUISITIONS)}")
        require(is_number(self.xi) and self.xi >= 0, "search.xi", self.xi, "give a number >= 0")
        require(is_number(self.kappa) and self.kappa >= 0, "search.kappa", self.kappa, "give a number >= 0")
        require(is_int(self.n_sample) and self.n_sample >= 1, "search.n_sample", self.n_sample,
                "give a number of draws per step >= 1")
        require(self.pool in POOLS, "search.pool", self.pool, f"choose one of: {', '.join(POOLS)}")
        from hnas.metrics import list_metrics  # imported here: the metric registry pulls in torch

        require(self.condnum in list_metrics(), "search.condnum", self.condnum,
                f"unknown metric {self.condnum!r}; choose one of: {', '.join(list_metrics())}")


@dataclass
class RandomSearch(_Common):
    """Query distinct uniformly random architectures; return the best by validation accuracy."""

    name: str = "random"


@dataclass
class REASearch(_Common):
    """Regularised evolution with NAS-Bench-201's settings (12,000 s budget)."""

    name: str = "rea"
    queries: Optional[int] = None
    budget_s: Optional[float] = 12000.0
    population: int = 10
    sample_size: int = 3

    def __post_init__(self):
        super().__post_init__()
        require(is_int(self.population) and self.population >= 1, "search.population", self.population,
                "give an integer >= 1")
        require(is_int(self.sample_size) and self.sample_size >= 1, "search.sample_size", self.sample_size,
                "give an integer >= 1")


@dataclass
class ReinforceSearch(_Common):
    """REINFORCE with a per-edge softmax policy, Adam and an EMA reward baseline (NAS-Bench-201)."""

    name: str = "reinforce"
    queries: Optional[int] = None
    budget_s: Optional[float] = 12000.0
    learning_rate: float = 0.001
    ema_momentum: float = 0.9
    init_std: float = 1e-3  # policy logits start as init_std * N(0, 1)

    def __post_init__(self):
        super().__post_init__()
        require(is_number(self.learning_rate) and math.isfinite(self.learning_rate) and self.learning_rate > 0,
                "search.learning_rate", self.learning_rate, "give a finite number > 0")
        require(is_number(self.ema_momentum) and 0 <= self.ema_momentum < 1, "search.ema_momentum",
                self.ema_momentum, "give a number in [0, 1)")
        require(is_number(self.init_std) and math.isfinite(self.init_std) and self.init_std >= 0,
                "search.init_std", self.init_std, "give a finite number >= 0")


@dataclass
class TrainingFreeSearch(_Common):
    """Rank `candidates` uniform draws by the metric alone; optionally query the top `query_top_k`."""

    name: str = "training_free"
    queries: Optional[int] = None  # the query_top_k bounds the queries; this can lower it further
    candidates: int = 2000  # uniform draws with replacement, duplicates removed (as the reference)
    query_top_k: int = 0  # 0: return the top-ranked architecture without any query
    abs_metric: bool = True  # the reference's zero-cost baseline ranks by |metric|, largest first

    needs_limit: ClassVar[bool] = False  # query_top_k bounds the queries

    def __post_init__(self):
        super().__post_init__()
        require(is_int(self.candidates) and self.candidates >= 1, "search.candidates", self.candidates,
                "give a number of draws >= 1")
        require(is_int(self.query_top_k) and self.query_top_k >= 0, "search.query_top_k", self.query_top_k,
                "give an integer >= 0 (0: the top-ranked architecture is the result, without a query)")


ROBOT_METRICS = ["grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov"]


@dataclass
class RobotSearch(_Common):
    """RoBoT (He et al., ICLR 2024): BO over the weights of a combination of precomputed metrics, then greedy
    picks by the best combination; defaults are its NB201 settings (search_nb201.py)."""

    name: str = "robot"
    metrics: List[str] = field(default_factory=lambda: list(ROBOT_METRICS))
    weight_bounds: List[float] = field(default_factory=lambda: [-1.0, 1.0])  # each metric's weight
    explore: Optional[int] = None  # BO evaluations (one random, then UCB); null: as many as search.queries
    kappa: float = 2.576  # UCB exploration (bayesian-optimization's default, which RoBoT uses)

    def __post_init__(self):
        super().__post_init__()
        require(self.queries is not None, "search.queries", self.queries,
                "RoBoT spends a number of distinct queries (its T: 20 on NB201)")
        from hnas.metrics import list_metrics

        unknown = [m for m in self.metrics if m not in list_metrics()]
        require(len(self.metrics) >= 1 and not unknown and len(set(self.metrics)) == len(self.metrics),
                "search.metrics", self.metrics, f"give distinct registered metrics ({', '.join(list_metrics())})")
        _check_bounds("weight_bounds", self.weight_bounds, "[-1,1]")
        require(self.explore is None or (is_int(self.explore) and self.explore >= 1), "search.explore",
                self.explore, "give a number of BO evaluations >= 1, or null for search.queries")
        require(is_number(self.kappa) and self.kappa >= 0, "search.kappa", self.kappa, "give a number >= 0")
