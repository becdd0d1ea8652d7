"""Search stage: run the configured search algorithm (`search=<name>`) on a space's benchmark oracle.

Writes into the run folder `out_dir`:
- `result.json`: the chosen architecture, its official index and validation accuracy, the test accuracies
  its oracle reports (NB201: 200 epochs on cifar10 / cifar100 / ImageNet16-120) and their column names,
  what a query returned (oracle, dataset, split, epochs), search cost (summed query seconds), metric seconds,
  number of queries, algorithm, metric, seed, the command-line overrides and the whole config;
- `queries.csv`: every query in order (query_columns), with the best-so-far architecture's test accuracies,
  so reports can plot test error against search cost;
- `tb/`: TensorBoard events, one point per query;
- the log, through Python logging (Hydra sends it to the run folder).
"""

import json
import logging
import math
from pathlib import Path

from omegaconf import OmegaConf

from hnas import paths
from hnas.app import run_overrides
from hnas.io import atomic_write_text
from hnas.metric_table import MetricTable, TableSettings
from hnas.oracles import oracle_for_run
from hnas.search import Problem, Universe, run_search
from hnas.spaces import create_space, space_options
from hnas.search.core import SEARCHES

log = logging.getLogger(__name__)

def query_columns(test_columns):
    """The columns of queries.csv: the query, then the best-so-far architecture and its test accuracies (the
    oracle's `test_columns`, each prefixed with best_)."""
    return ["step", "arch", "index", "t", "c", "score", "val_acc", "cost_s", "cum_cost_s",
            "best_arch", "best_index", "best_val_acc", *[f"best_{column}" for column in test_columns]]


def run(cfg, out_dir, oracle=None, metrics_of=None, tensorboard=True):
    """Run one search of the typed config `cfg` (hnas.config.validate); return result.json's content (without
    the config).

    `oracle` and `metrics_of` (a metric source) default to the space's default oracle (hnas.oracles; NB201:
    the benchmark table of the data folder, else the shipped one) and a MetricSource on the run's metric
    table; tests pass constructed ones.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scfg = cfg.search
    space = create_space(cfg.space.name, **space_options(cfg.space))
    if oracle is None:
        oracle = oracle_for_run(cfg)
    metric = cfg.metric.name
    names = SEARCHES.get(scfg.name)(scfg).metric_names(metric)
    # The table columns read: an aggregate metric's components in its place.
    columns = list(dict.fromkeys(c for n in names for c in (cfg.metric.components if n == metric else [n])))
    settings = TableSettings.from_config(cfg)
    metric_table = device = None
    if names and metrics_of is None:
        from hnas.devices import resolve_device
        from hnas.metric_source import MetricSource

        device = resolve_device(cfg.device, cfg.jobs_per_gpu)
        metrics_of = MetricSource(settings, device, columns, workers=scfg.metric_workers)
        metric_table = metrics_of.table  # read once, for the values and the universe
    if scfg.universe == "metric_table" and metric_table is None:
        metric_table = MetricTable.existing(paths.results_dir(), settings)
    archs = oracle.archs if scfg.universe == "space" else table_archs(metric_table, settings, oracle,
                                                                         columns or cfg.metric.components)
    if cfg.metric.combined and metric in names:
        from hnas.metrics.aggregate import CombinedMetric

        # over the universe (or, unlisted, over what each call asks for): a rank depends on it
        metrics_of = CombinedMetric(metrics_of, metric, cfg.metric.combine, cfg.metric.of, names, population=archs)
    problem = Problem(space=Universe(space, archs), oracle=oracle, seed=int(cfg.seed), metric=metric,
                      metrics_of=metrics_of)

    listeners = [_log_query]
    writer = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(out_dir / "tb"))
        listeners.append(lambda record: _tensorboard(writer, record))
    log.info("search=%s metric=%s seed=%d: queries %s, budget %s s", scfg.name, metric if names else "-",
             problem.seed, scfg.queries, scfg.budget_s)
    try:
        result = run_search(scfg, problem, listeners)
    finally:
        if writer is not None:
            writer.close()

    payload = write_outputs(result, out_dir, space=space.name, overrides=run_overrides(), config=_config_dict(cfg),
                            device=device)
    tests = ", ".join(f"{ds} {acc:.2f}" for ds, acc in result.test_acc.items()) or "not known to the oracle"
    log.info("chose %s (index %d, val %.2f): test %s; search cost %.0f s in %d queries, metric time %.0f s, "
             "wall %.1f s (%s)", result.arch, result.index, result.val_acc, tests, result.search_cost_s,
             result.n_queries, result.metric_s, result.wall_s, result.stop_reason)
    log.info("to train it from scratch: python run.py stage=train space=%s dataset=%s stage.from_result=%s "
             "train=<protocol> (conf/train/)", space.name, cfg.dataset.name, out_dir.resolve())
    payload.pop("config")
    return payload


def table_archs(metric_table, settings, oracle, required):
    """The universe of `search.universe=metric_table`: the architectures the oracle answers for (any, for an
    oracle that trains) that the run's metric table holds with every metric of `required`."""
    archs = []
    if metric_table is not None:
        candidates = metric_table.rows if oracle.archs is None else oracle.archs
        archs = [a for a in candidates if a in metric_table.rows and not metric_table.missing(a, required)]
    if not archs:
        raise MetricTable.not_found(paths.results_dir(), settings, f"{', '.join(required)} (search.universe="
                                    "metric_table)")
    log.info("candidates: the %d architectures of %s with %s", len(archs),
             " + ".join(str(layer) for layer in metric_table.layers), ", ".join(required))
    return archs


def write_outputs(result, out_dir, space, overrides=(), config=None, device=None):
    """Write a SearchResult's queries.csv and result.json into `out_dir`; return result.json's content.
    `device`: the device metric values missing from the table are computed on (None: the search reads
    no metric)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_queries(result.records, out_dir / "queries.csv", list(result.test_columns.values()))
    payload = result.to_json()
    payload["space"] = space
    payload["device"] = None if device is None else str(device)
    payload["overrides"] = list(overrides)
    payload["config"] = config
    # result.json last: its presence marks a finished run for the sweep summary.
    atomic_write_text(out_dir / "result.json", json.dumps(payload, indent=2, default=str) + "\n")
    return payload


def write_queries(records, path, test_columns):
    import pandas as pd

    frame = pd.DataFrame(records, columns=query_columns(test_columns))
    atomic_write_text(path, frame.to_csv(index=False))


def _log_query(r):
    extra = "" if math.isnan(r["t"]) else f" t={r['t']:.3f} c={r['c']:.3f} score={r['score']:.4g}"
    log.info("query %d: %s (index %d) val %.2f, cost %.1f s, total %.1f s; best val %.2f (index %d)%s",
             r["step"], r["arch"], r["index"], r["val_acc"], r["cost_s"], r["cum_cost_s"], r["best_val_acc"],
             r["best_index"], extra)


def _tensorboard(writer, r):
    step = r["step"]
    tests = [key for key in r if key.startswith("best_") and key not in ("best_arch", "best_index")]
    for key in ("t", "c", "score", "val_acc", "cost_s", "cum_cost_s", *tests):
        value = r[key]
        if value is not None and math.isfinite(value):
            writer.add_scalar(f"query/{key}", value, step)
    writer.flush()


def _config_dict(config):
    return OmegaConf.to_container(OmegaConf.structured(config), enum_to_str=True)
