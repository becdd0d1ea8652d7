"""What every search algorithm shares: the problem it solves, its config, and one call that runs it.

An algorithm is a class registered in `SEARCHES` with `schema` (its config dataclass), `label` (its name in
reports), `__init__(cfg)`, `metric_names(metric)` (the metric columns it reads; [] for those that only query)
and `search(problem, log)`, which queries through the QueryLog and returns the chosen architecture, or None
to choose the best queried one by validation accuracy. Optionally `result_metric(metric)`: the metric its
result names (by default the run's `metric=`, where it reads any metric; None for one that reads its own).
"""

import math
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Callable, Optional

from omegaconf import DictConfig, OmegaConf

from hnas.errors import HnasError
from hnas.registry import Registry
from hnas.search.oracle import QueryLog, SearchStopped

SEARCHES = Registry("search algorithm")


@dataclass
class Problem:
    """`metrics_of(archs) -> {arch: {metric name: value}}` is only needed by algorithms that read metrics;
    when it has a `metric_seconds` attribute (MetricSource), that becomes the result's metric time."""

    space: object
    oracle: object
    seed: int = 0
    metric: Optional[str] = None
    metrics_of: Optional[Callable] = None


@dataclass
class SearchResult:
    algorithm: str
    metric: Optional[str]
    seed: int
    arch: str
    index: int
    val_acc: float
    test_acc: dict  # {dataset: test accuracy} as the oracle reports it
    test_columns: dict  # {dataset: column name} of those accuracies (the oracle's)
    search_cost_s: float  # summed cost of the queries
    metric_s: float  # metric computation attributed to the architectures looked up
    n_queries: int
    wall_s: float
    stop_reason: str
    query: dict  # what a query returned: dataset, split, epochs
    search_config: dict
    records: list = field(default_factory=list, repr=False)

    def to_json(self):
        """The result.json fields (without the records, which go to queries.csv)."""
        out = asdict(self)
        out.pop("records")
        return out


def search_config(cfg):
    """A search config (dict, DictConfig or schema dataclass) -> the validated schema dataclass of its `name`,
    with every missing key at its default. Constructing the dataclass checks every value (its
    `__post_init__`), so a bad one raises an HnasError naming the key."""
    if is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = OmegaConf.structured(cfg)
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    schema = SEARCHES.get(cfg.get("name")).schema  # an unknown name: HnasError listing the algorithms
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
    except Exception as error:  # omegaconf's ValidationError / ConfigKeyError name the bad key
        raise HnasError(f"invalid search config for {cfg.get('name')!r}: {error}") from None
    return OmegaConf.to_object(merged)


def run_search(cfg, problem, listeners=()):
    """Run the search algorithm `cfg.name` on `problem`; return a SearchResult.

    `listeners` get each query record as it is made (logging, TensorBoard).
    """
    cfg = search_config(cfg)
    algorithm = SEARCHES.get(cfg.name)(cfg)
    names = algorithm.metric_names(problem.metric)
    if names and problem.metrics_of is None:
        raise HnasError(f"search={cfg.name} reads metrics {names} but no metric source was given")
    log = QueryLog(problem.oracle, cfg.queries, cfg.budget_s, listeners)
    start = time.perf_counter()
    try:
        chosen = algorithm.search(problem, log)
    except SearchStopped:
        chosen = None
    wall = time.perf_counter() - start
    if chosen is None:
        if log.best is None:
            raise HnasError(f"search={cfg.name} made no query (stop reason: {log.stop_reason}); "
                            "raise search.queries or search.budget_s")
        chosen = log.best["arch"]
    oracle = problem.oracle
    metric_s = float(getattr(problem.metrics_of, "metric_seconds", 0.0) or 0.0) if names else 0.0
    return SearchResult(
        algorithm=cfg.name,
        metric=(algorithm.result_metric(problem.metric) if hasattr(algorithm, "result_metric")
                else problem.metric if names else None),
        seed=int(problem.seed),
        arch=chosen,
        index=oracle.index(chosen),
        val_acc=_val_acc(log, chosen),
        test_acc=oracle.test_accs(chosen),
        test_columns=dict(oracle.test_columns),
        search_cost_s=log.cost,
        metric_s=metric_s,
        n_queries=len(log.records),
        wall_s=wall,
        stop_reason=log.stop_reason or (f"reached {log.max_queries} queries" if log.exhausted else "finished"),
        query=oracle.describe(),
        search_config=OmegaConf.to_container(OmegaConf.structured(cfg)),
        records=log.records,
    )


def _val_acc(log, arch):
    """The validation accuracy of a chosen architecture: the one its query returned (a training-free pick
    made without any query asks the oracle, as the result reports it)."""
    queried = [r["val_acc"] for r in log.records if r["arch"] == arch]
    return queried[0] if queried else log.oracle.query(arch).val_acc


def metric_value(value):
    """A metric value as a float; a missing or failed one (None) becomes NaN."""
    return math.nan if value is None else float(value)


__all__ = ["SEARCHES", "Problem", "SearchResult", "run_search", "search_config", "metric_value"]
