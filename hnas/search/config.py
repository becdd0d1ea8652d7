"""Structured-config schemas of the `search` group: one dataclass per option (conf/search/<name>.yaml).

`hnas.config.register_configs` stores each under group "search" as "<name>_schema"; the YAML options only
name their schema, so every default lives here, once. Keys shared by all algorithms:

- `queries`: stop after this many oracle queries (None: no limit; then `budget_s` must be set).
- `budget_s`: stop before the query whose cost would push the summed query cost past this many seconds
  (None: no budget).
- `universe`: `space` (draw from the whole space) or `metric_table` (draw only from the architectures
  that the run's metric table already holds, for searching where only part of the space is precomputed).
- `query_dataset` / `query_epochs`: what a query returns: the validation accuracy after `query_epochs`
  epochs on `query_dataset`, costing that training's time (HNAS: 12-epoch cifar10-valid).
"""

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class _Common:
    name: str = ""
    queries: Optional[int] = 20
    budget_s: Optional[float] = None
    query_dataset: str = "cifar10-valid"
    query_epochs: int = 12
    # space: draw candidates from the whole space. metric_table: only from the architectures of the run's
    # metric table (for searching where only part of the space has precomputed metrics).
    universe: str = "space"


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
    n_sample: int = 2000  # uniform draws (with replacement) added to the candidate pool per step
    condnum: str = "condnum"  # the metric used as K
    abs_metric: bool = False  # the reference scores the signed metric value (matters for grasp only)


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


@dataclass
class ReinforceSearch(_Common):
    """REINFORCE with a per-edge softmax policy, Adam and an EMA reward baseline (NAS-Bench-201)."""

    name: str = "reinforce"
    queries: Optional[int] = None
    budget_s: Optional[float] = 12000.0
    learning_rate: float = 0.001
    ema_momentum: float = 0.9
    init_std: float = 1e-3  # policy logits start as init_std * N(0, 1)


@dataclass
class TrainingFreeSearch(_Common):
    """Rank `candidates` uniform draws by the metric alone; optionally query the top `query_top_k`."""

    name: str = "training_free"
    queries: Optional[int] = None  # the query_top_k bounds the queries; this can lower it further
    candidates: int = 2000  # uniform draws with replacement, duplicates removed (as the reference)
    query_top_k: int = 0  # 0: return the top-ranked architecture without any query
    abs_metric: bool = True  # the reference's zero-cost baseline ranks by |metric|, largest first


SEARCH_SCHEMAS = {
    "hnas": HnasSearch,
    "random": RandomSearch,
    "rea": REASearch,
    "reinforce": ReinforceSearch,
    "training_free": TrainingFreeSearch,
}
