"""Reports of finished searches: the paper-style table and the test-error-vs-budget figure (and the sweep
summary of hnas.reports.results), for runs of any space: the test accuracies shown, and the oracle whose
optimum is marked, are those the runs' result.json files record. The table also shows the published rows
that `published.csv` (beside this file) holds for that oracle.
"""

import importlib.resources
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from hnas.errors import HnasError
from hnas.io import atomic_write_text
from hnas.metrics.aggregate import combined_label
from hnas.reports.results import (failed_jobs, load_results, markdown_table, pm, summarize, summary_setting,
                                  write_summary)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Paper-style table and figure


def method_name(algorithm):
    """An algorithm (search=<name>) as papers name it: its class's `label`; an unregistered one by its name."""
    from hnas.search import SEARCHES

    return SEARCHES.get(algorithm).label if algorithm in SEARCHES else algorithm


def _readable_override(key, value):
    """An override as a label shows it: 'budget 18000 s', 'queries=50', 'space.layout=reference'."""
    name = key.removeprefix("search.")
    if name == "budget_s":
        return "no budget" if value == "null" else f"budget {value} s"
    if name == "queries":
        return "no query limit" if value == "null" else f"queries={value}"
    return f"{name}={value}"


def _metric_label(row):
    """The metric of a row of a setting frame; a combined metric with its components, as the correlation
    report names it: 'agg(az_expressivity,flops)'."""
    of = row.get("metric.of", "")
    return combined_label(row["metric"], [c.strip() for c in of.strip("[]").split(",")]) if of else row["metric"]


def method_labels(frame, setting):
    """The display label of each row of `frame` (which holds the `setting` columns), in row order.

    The method as a paper names it ('HNAS (snip)', 'REA', 'Training-free (snip)'); only where settings of
    the same algorithm and metric differ are the overrides that tell them apart appended ('REA (budget 18000
    s)', 'HNAS (snip, queries=50)'); a combined metric is named with its components ('Training-free
    (agg(synflow,flops))'). Distinct settings get distinct labels: two settings of one method differ
    in some override, at least one of them sets it (an unset one is empty), and that one's label shows it.
    """
    overrides = [c for c in setting if c not in ("algorithm", "metric", "metric.of")]
    metrics = frame.apply(_metric_label, axis=1)
    labels = []
    for i, row in frame.iterrows():
        same_method = frame[(frame["algorithm"] == row["algorithm"]) & (metrics == metrics[i])]
        parts = [metrics[i]] if row["metric"] != "-" else []
        parts += [_readable_override(c, row[c]) for c in overrides
                  if row[c] != "" and same_method[c].nunique() > 1]
        name = method_name(row["algorithm"])
        labels.append(f"{name} ({', '.join(parts)})" if parts else name)
    return labels


def optimum(oracle):
    """{dataset: the best test accuracy any architecture of `oracle` reaches} (over `oracle.archs`)."""
    accs = [oracle.test_accs(arch) for arch in oracle.archs]
    return {ds: max(a[ds] for a in accs) for ds in oracle.test_columns}


def default_optimum(runs):
    """The optimum of the oracle the runs queried, or None (with a warning) when it cannot be built."""
    from hnas.oracles import create_oracle

    if runs.oracle is None:
        log.warning("the runs do not record their oracle: no benchmark optimum is marked")
        return None
    try:
        return optimum(create_oracle(runs.oracle))
    except HnasError as error:  # no table: the report still works, without the optimum
        log.warning("no optimum of oracle %s to mark (%s)", runs.oracle, error)
        return None


def published_rows(oracle, datasets):
    """{method: {"acc": {dataset: (mean, std)}, "search_cost_s", "runs", "source"}}: the published results
    in published.csv for searches that query `oracle`, for methods published on every one of `datasets`."""
    if oracle is None:
        return {}
    with importlib.resources.files("hnas.reports").joinpath("published.csv").open() as f:
        frame = pd.read_csv(f)
    rows = {}
    for method, group in frame[frame.oracle == oracle].groupby("method", sort=False):
        acc = {r.dataset: (float(r.mean), float(r.std)) for r in group.itertuples()}
        if all(ds in acc for ds in datasets):
            first = group.iloc[0]
            rows[method] = {"acc": acc, "search_cost_s": float(first.search_cost_s), "runs": int(first.runs),
                            "source": first.source}
    return rows


def paper_table(runs, out_dir, best=None, published=None, stem="paper_table"):
    """Test accuracy (mean ± std over seeds) on each dataset the runs report and search cost per setting, as
    in the paper, then the `published` rows (published_rows) and the benchmark's optimum `best` ({dataset:
    accuracy}) when given. Writes <stem>.csv and .md; returns the CSV's frame."""
    summary = summarize(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, header = [], ["method", *runs.test_columns, "search cost (s)", "metric time (s)", "n seeds"]
    csv_rows = []
    if not summary.empty:
        setting = summary_setting(summary)
        for label, (_, r) in zip(method_labels(summary, setting), summary.iterrows()):
            rows.append([label, *[pm(r[f"{c}_mean"], r[f"{c}_std"]) for c in runs.test_columns.values()],
                         f"{r['search_cost_s_mean']:.0f}", f"{r['metric_s_mean']:.0f}", str(r["n_seeds"])])
            # The setting columns too: the label names a method, the CSV keeps every setting's overrides.
            csv_rows.append({"method": label, **{c: r[c] for c in setting},
                             **{k: r[k] for k in r.index if k.endswith(("_mean", "_std"))},
                             "n_seeds": r["n_seeds"]})
    for method, row in (published or {}).items():
        label = f"{method} (published)"
        rows.append([label, *[pm(*row["acc"][ds]) for ds in runs.test_columns],
                     f"{row['search_cost_s']:.0f}", "-", str(row["runs"])])
        csv_rows.append({"method": label, **{f"{c}_mean": row["acc"][ds][0] for ds, c in runs.test_columns.items()},
                         **{f"{c}_std": row["acc"][ds][1] for ds, c in runs.test_columns.items()},
                         "search_cost_s_mean": row["search_cost_s"], "n_seeds": row["runs"],
                         "source": row["source"]})
    if best is not None:
        rows.append(["optimum (benchmark)", *[f"{best[ds]:.2f}" for ds in runs.test_columns], "-", "-", "-"])
        csv_rows.append({"method": "optimum", **{f"{c}_mean": best[ds] for ds, c in runs.test_columns.items()}})
    frame = pd.DataFrame(csv_rows)
    atomic_write_text(out_dir / f"{stem}.csv", frame.to_csv(index=False))
    atomic_write_text(out_dir / f"{stem}.md", markdown_table(header, rows))
    return frame


def best_so_far_curve(run_dir, budgets):
    """Per dataset, the test accuracy of the best-so-far (by validation) architecture at each budget.

    Before the first query the value is NaN; after the run's last query it stays at the final one. A run with
    no query (training-free, top-1) has its result's accuracy at every budget.
    """
    run_dir = Path(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    budgets = np.asarray(budgets, dtype=float)
    queries_path = run_dir / "queries.csv"
    queries = pd.read_csv(queries_path) if queries_path.exists() else pd.DataFrame()
    if queries.empty:
        return {ds: np.full(len(budgets), float(result["test_acc"][ds])) for ds in result["test_columns"]}
    cum = queries["cum_cost_s"].to_numpy(dtype=float)
    last = np.searchsorted(cum, budgets, side="right") - 1  # the last query that fits in each budget
    curves = {}
    for ds, column in result["test_columns"].items():
        values = queries[f"best_{column}"].to_numpy(dtype=float)
        curves[ds] = np.where(last >= 0, values[np.clip(last, 0, None)], np.nan)
    return curves


def budget_curves(runs, budget_max=18000.0, n_points=181):
    """{label: {dataset: (mean, standard error, n) arrays}} over `budgets`, plus budgets and mean final costs."""
    frame = runs.frame
    budgets = np.linspace(0.0, budget_max, n_points)
    curves, costs = {}, {}
    if frame.empty:
        return budgets, curves, costs
    setting = runs.setting
    labels = pd.Series(method_labels(frame, setting), index=frame.index)
    for _, group in frame.groupby(setting, sort=True, dropna=False):
        label = labels[group.index[0]]
        per_run = [best_so_far_curve(d, budgets) for d in group["run_dir"]]
        curves[label] = {}
        for ds in runs.test_columns:
            stack = np.vstack([c[ds] for c in per_run])
            n = np.sum(~np.isnan(stack), axis=0)
            with warnings.catch_warnings():
                # Before any run's first query a column is all NaN: NaN is the right answer, not a warning.
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(stack, axis=0)
                std = np.nanstd(stack, axis=0, ddof=1) if len(per_run) > 1 else np.zeros(len(budgets))
            sem = np.where(n > 1, std / np.sqrt(np.maximum(n, 1)), 0.0)
            curves[label][ds] = (mean, sem, n)
        costs[label] = float(group["search_cost_s"].astype(float).mean())
    return budgets, curves, costs


def _seconds_tick(x, _pos):
    """A budget tick as '0', '500', '2.5k', '10k': short enough that the ticks of a panel never touch."""
    return f"{x / 1000:g}k" if abs(x) >= 1000 else f"{x:g}"


LINE_STYLES = ("-", "--", ":", "-.")


def draw_budget_figure(runs, best=None, budget_max=18000.0, n_points=181):
    """The matplotlib Figure of budget_figure (not saved)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    budgets, curves, costs = budget_curves(runs, budget_max, n_points)
    fig = Figure(figsize=(5 * len(runs.test_columns), 4), layout="constrained")
    axes = fig.subplots(1, len(runs.test_columns), squeeze=False)[0]
    for ax, ds in zip(axes, runs.test_columns):
        finals = []
        for k, (label, per_ds) in enumerate(curves.items()):
            mean, sem, _ = per_ds[ds]
            error = 100.0 - mean
            finals.append(error[-1])
            # Ten colours, then the next line style: a 14-setting sweep would otherwise reuse colours.
            color, style = f"C{k % 10}", LINE_STYLES[k // 10 % len(LINE_STYLES)]
            # Best-so-far is a step function of the budget: draw it as steps, not slopes.
            ax.plot(budgets, error, color=color, linestyle=style, label=label, drawstyle="steps-post")
            ax.fill_between(budgets, error - sem, error + sem, color=color, alpha=0.2, linewidth=0, step="post")
            end = costs[label]
            if 0 < end <= budget_max:
                ax.plot([end], [np.interp(end, budgets, error)], "o", color=color, markersize=4)
        title = ds
        if best is not None:
            ax.axhline(100.0 - best[ds], color="black", linestyle="--", linewidth=1, label="benchmark optimum")
            title = f"{ds} (optimum: {100.0 - best[ds]:.2f} % error)"
        ax.set_title(title)
        ax.set_xlabel("search budget (s of query training)")
        ax.set_ylabel("test error (%)")
        ax.set_xlim(0, budget_max)
        # The first queries' errors (up to 90 %) would squash the final differences of a few tenths into one
        # line: show from the optimum to the worst final error, the start cut off at the top.
        high = np.nanmax(finals, initial=-np.inf)
        low = np.nanmin([*finals, *([100.0 - best[ds]] if best is not None else [])], initial=np.inf)
        if np.isfinite(high) and np.isfinite(low):
            span = max(high - low, 1.0)
            ax.set_ylim(low - 0.1 * span, high + 0.6 * span)
        # Matplotlib's default ticks at 18,000 s are 0, 2500, ..., 17500: eight five-digit labels that run
        # together in a 5-inch panel. At most six intervals, written in thousands, stay apart (tested from
        # 1,000 to 200,000 s).
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        ax.xaxis.set_major_formatter(FuncFormatter(_seconds_tick))
        ax.grid(alpha=0.3)
    # One legend under the panels: inside one, a sweep's many settings would hide that panel's curves.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=max(1, min(len(labels), 4)), fontsize=8)
    return fig


def budget_figure(runs, out_dir, best=None, budget_max=18000.0, n_points=181, name="budget_figure.png"):
    """Test error (100 - test accuracy of the best-so-far-by-validation architecture) against search budget,
    mean and standard-error band over seeds, one panel per dataset, one line per setting (labelled by
    method_labels), the benchmark's optimum `best` dashed (when given). A dot marks each setting's mean
    final search cost. Returns the path."""
    fig = draw_budget_figure(runs, best, budget_max, n_points)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)
    return path


def run_report(inputs, out_dir, oracle=None, budget_max=18000.0):
    """The search report of run / sweep folders `inputs`: summary.csv/.md, paper_table.csv/.md and
    budget_figure.png in `out_dir`, with the optimum of `oracle` marked (by default of the oracle the runs
    queried, where it can be built) and the table's published rows for the oracle the runs queried."""
    inputs = [Path(p) for p in inputs]
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise HnasError(f"report inputs not found: {', '.join(missing)}")
    runs = load_results(inputs)
    if runs.frame.empty:
        raise HnasError(f"no usable result.json under {', '.join(map(str, inputs))}: nothing to report (the "
                        "warnings above name any that were skipped); point stage.inputs at finished search runs")
    for folder in inputs:
        failed = failed_jobs(folder)
        if failed:
            log.warning("%d job folder(s) under %s have no result.json (failed or unfinished)", len(failed),
                        folder)
    best = optimum(oracle) if oracle is not None else default_optimum(runs)
    summary_csv, summary_md = write_summary(runs, summarize(runs), out_dir)
    paper_table(runs, out_dir, best, published_rows(runs.oracle, list(runs.test_columns)))
    figure = budget_figure(runs, out_dir, best, budget_max)
    log.info("search report of %d runs written to %s", len(runs), out_dir)
    return {"runs": len(runs), "summary": str(summary_csv), "summary_md": str(summary_md),
            "paper_table": str(Path(out_dir) / "paper_table.md"), "figure": str(figure)}
