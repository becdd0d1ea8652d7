"""Report stage: `stage.kind=correlation` (metrics vs accuracies of the run's metric table, with the rank
aggregate of `metric=agg` as one more column; the accuracies are the space's default oracle's, or
`stage.oracle`'s) or
`stage.kind=search stage.inputs=[folders]` (the paper-style table and figure of finished runs and sweeps)."""

import logging

from hnas import paths
from hnas.errors import HnasError
from hnas.metric_table import MetricTable, TableSettings

log = logging.getLogger(__name__)


def run(cfg, out_dir):
    kind = getattr(cfg.stage.kind, "value", cfg.stage.kind)
    if kind == "search":
        from hnas.reports.search_report import run_report

        if not cfg.stage.inputs:
            raise HnasError("stage.kind=search needs stage.inputs=[<run or sweep folder>, ...]")
        return run_report(list(cfg.stage.inputs), out_dir)
    return correlation(cfg, out_dir)


def correlation(cfg, out_dir):
    from hnas.metrics.aggregate import combined_label
    from hnas.oracles import create_oracle
    from hnas.reports.correlation import correlation_report

    oracle_name = report_oracle(cfg.space.name, cfg.stage.oracle)  # a wrong name fails before any reading
    settings = TableSettings.from_config(cfg)
    table = MetricTable.existing(paths.results_dir(), settings)
    if table is None:
        raise MetricTable.not_found(paths.results_dir(), settings)
    frame = table.frame()
    published_names = {}
    if cfg.metric.combined:
        frame = with_combined(frame, cfg.metric.name, list(cfg.metric.of), cfg.metric.combine)
        published_names[cfg.metric.name] = combined_label(cfg.metric.name, cfg.metric.of)
    metrics = list(cfg.stage.metrics) if cfg.stage.metrics else [
        c for c in frame.columns if c not in ("index", "arch", "seconds")]
    absent = [m for m in metrics if m not in frame.columns]
    if absent:
        raise HnasError(f"the table {table.folder} has no column(s) {absent}; it has: {list(frame.columns)}")
    oracle = create_oracle(oracle_name)
    if hasattr(oracle, "reference_columns"):  # an oracle whose source also publishes scores ranks them beside ours
        for column, values in oracle.reference_columns(list(frame["arch"])).items():
            frame[column] = values
            metrics.append(column)
    corr = correlation_report(frame, oracle, metrics, out_dir, published_names)
    log.info("correlation of %d metrics over %d architectures written to %s", len(metrics), len(frame), out_dir)
    return corr


def report_oracle(space, name):
    """The oracle a correlation report on `space` ranks against: `name` (stage.oracle), or the space's default."""
    from hnas.oracles import default_oracle, oracles_for

    if name is None:
        return default_oracle(space)
    if name not in oracles_for(space):
        raise HnasError(f"stage.oracle={name} does not answer for space {space!r}; oracles for {space}: "
                        f"{', '.join(oracles_for(space)) or 'none'}")
    return name


def with_combined(frame, name, components, combine):
    """`frame` with a column `name`: `combine` (hnas.metrics.aggregate) of the `components` columns over the
    rows that hold all of them (a rank aggregate's population), NaN on the others."""
    absent = [c for c in components if c not in frame.columns]
    if absent:
        raise HnasError(f"metric={name} combines {components}, but the table has no column(s) {absent}")
    frame = frame.copy()
    complete = frame[components].notna().all(axis=1)
    frame[name] = float("nan")
    frame.loc[complete, name] = combine(frame.loc[complete, components].to_numpy())
    return frame
