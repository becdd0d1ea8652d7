"""Reports of finished searches: the sweep summary, the paper-style table and the test-error-vs-budget figure.

Everything is rebuilt from the files each search run writes (result.json, queries.csv), so it works on a
finished sweep, a partly failed one (jobs without result.json are skipped and counted), or loose run folders.
An input folder is a run folder (it holds result.json) or any folder above run folders (a sweep).
"""

import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from hnas.io import atomic_write_text
from hnas.search.config import is_int, is_number
from hnas.oracles import TEST_DATASETS, test_column

log = logging.getLogger(__name__)

TEST_COLUMNS = [test_column(ds) for ds in TEST_DATASETS]
VALUE_COLUMNS = [*TEST_COLUMNS, "val_acc", "search_cost_s", "metric_s", "n_queries"]
# Override keys that do not define a setting: the seed is what a setting is averaged over; algorithm and
# metric have their own columns; folders, devices and launcher settings do not change a result.
_IGNORED_KEYS = ("seed", "search", "metric", "stage", "device")
_IGNORED_PREFIXES = ("paths.", "hydra.")


# ----------------------------------------------------------------------------------------------------------
# Loading runs


def find_run_dirs(inputs):
    """Run folders (holding result.json) under each input folder, sorted, without duplicates."""
    found = []
    for folder in [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]:
        if (folder / "result.json").is_file():
            found.append(folder)
        else:
            found.extend(sorted(p.parent for p in folder.rglob("result.json")))
    return list(dict.fromkeys(p.resolve() for p in found))


def _setting_overrides(overrides):
    """{key: value} of the command-line overrides that define a setting."""
    out = {}
    for item in overrides or []:
        key, sep, value = item.lstrip("+~").partition("=")
        if sep and key not in _IGNORED_KEYS and not key.startswith(_IGNORED_PREFIXES):
            out[key] = value
    return out


def result_problems(result):
    """What keeps a result.json payload out of a report: missing keys and wrong types (empty when usable).

    Required: `algorithm` (a string) and `test_acc` (a number per test dataset); the other keys a report
    reads may be absent but must have the right type when present.
    """
    if not isinstance(result, dict):
        return [f"it holds a JSON {type(result).__name__}, not an object"]
    problems = []
    algorithm = result.get("algorithm")
    if not (isinstance(algorithm, str) and algorithm):
        problems.append("'algorithm' is missing or not a non-empty string")
    test_acc = result.get("test_acc")
    if not isinstance(test_acc, dict):
        problems.append("'test_acc' is missing or not an object")
    else:
        problems += [f"'test_acc.{ds}' is missing or not a number" for ds in TEST_DATASETS
                     if not is_number(test_acc.get(ds))]
    optional = [  # (key, check, what it must be)
        ("metric", lambda v: isinstance(v, str), "a string"),
        ("seed", is_int, "an integer"),
        ("overrides", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
        *[(key, is_number, "a number") for key in ("val_acc", "search_cost_s", "metric_s", "n_queries")],
    ]
    problems += [f"'{key}' is not {what}" for key, check, what in optional
                 if result.get(key) is not None and not check(result[key])]
    return problems


def load_results(inputs):
    """One row per run: setting columns (algorithm, metric, other overrides), seed, values, run folder.

    A result.json that cannot be read, or lacks what a report needs (result_problems), is skipped with a
    warning naming the file.
    """
    rows = []
    for folder in find_run_dirs(inputs):
        path = folder / "result.json"
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            log.warning("skipping %s: unreadable (%s)", path, error)
            continue
        problems = result_problems(result)
        if problems:
            log.warning("skipping %s: %s (a finished search run writes them all; rerun it or remove the "
                        "folder)", path, "; ".join(problems))
            continue
        row = {"algorithm": result["algorithm"], "metric": result.get("metric") or "-"}
        row.update(_setting_overrides(result.get("overrides")))
        row["seed"] = result.get("seed")
        for ds in TEST_DATASETS:
            row[test_column(ds)] = result["test_acc"][ds]
        for key in ("val_acc", "search_cost_s", "metric_s", "n_queries"):
            row[key] = result.get(key, math.nan)
        row["run_dir"] = str(folder)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    setting = setting_columns(frame)
    frame[setting] = frame[setting].fillna("").astype(str)
    # A sweep over metrics repeats the runs of algorithms that read no metric: count each (setting, seed) once.
    return frame.drop_duplicates(subset=[*setting, "seed"], keep="first").reset_index(drop=True)


def setting_columns(frame):
    """The columns that define a setting: algorithm, metric, then every other override key, in order."""
    fixed = {"seed", "run_dir", *VALUE_COLUMNS}
    return [c for c in frame.columns if c not in fixed]


def _count_failed(sweep_dir):
    """Job folders of a sweep (they hold .hydra/) without a result.json: failed or unfinished jobs."""
    jobs = (p.parent for p in Path(sweep_dir).rglob(".hydra"))
    return sorted(str(job) for job in jobs if not (job / "result.json").exists())


# ----------------------------------------------------------------------------------------------------------
# Summary (mean and std per setting)


def summarize(frame):
    """Mean and std (numpy's, ddof=0, as NAS papers report) of every value per setting, plus n_seeds."""
    if frame.empty:
        return pd.DataFrame()
    setting = setting_columns(frame)
    rows = []
    for key, group in frame.groupby(setting, sort=True, dropna=False):
        row = dict(zip(setting, key if isinstance(key, tuple) else (key,)))
        for column in VALUE_COLUMNS:
            values = group[column].astype(float).to_numpy()
            row[f"{column}_mean"] = float(np.mean(values))
            row[f"{column}_std"] = float(np.std(values))
        row["n_seeds"] = len(group)
        row["seeds"] = " ".join(str(s) for s in sorted(group["seed"].dropna().astype(int)))
        rows.append(row)
    return pd.DataFrame(rows)


def summarize_sweep(sweep_dir):
    """The summary DataFrame of every run folder under `sweep_dir` (finished or partly failed sweep)."""
    frame = load_results([sweep_dir])
    failed = _count_failed(sweep_dir)
    if failed:
        log.warning("%d job folder(s) under %s have no result.json (failed or unfinished): %s", len(failed),
                    sweep_dir, ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else ""))
    return summarize(frame)


def write_summary(summary, out_dir, stem="summary"):
    """summary.csv (every number) and summary.md (mean +- std) in `out_dir`; returns their paths."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    atomic_write_text(csv_path, summary.to_csv(index=False))
    atomic_write_text(md_path, _summary_markdown(summary))
    return csv_path, md_path


def _summary_setting(summary):
    return [c for c in summary.columns if not c.endswith(("_mean", "_std")) and c not in ("n_seeds", "seeds")]


def _pm(mean, std, digits=2):
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _summary_markdown(summary):
    if summary.empty:
        return "No finished runs (no result.json) found.\n"
    setting = _summary_setting(summary)
    header = [*setting, *TEST_DATASETS, "search cost (s)", "metric time (s)", "queries", "n seeds"]
    rows = []
    for _, r in summary.iterrows():
        rows.append([
            *[str(r[c]) for c in setting],
            *[_pm(r[f"{c}_mean"], r[f"{c}_std"]) for c in TEST_COLUMNS],
            _pm(r["search_cost_s_mean"], r["search_cost_s_std"], 0),
            _pm(r["metric_s_mean"], r["metric_s_std"], 0),
            f"{r['n_queries_mean']:.1f}",
            str(r["n_seeds"]),
        ])
    return markdown_table(header, rows)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------
# Paper-style table and figure


# The algorithms (search=<name>) as papers name them; one not listed here is shown by its own name.
METHOD_NAMES = {"hnas": "HNAS", "random": "Random", "rea": "REA", "reinforce": "REINFORCE",
                "training_free": "Training-free"}


def _readable_override(key, value):
    """An override as a label shows it: 'budget 18000 s', 'queries=50', 'space.layout=reference'."""
    name = key.removeprefix("search.")
    if name == "budget_s":
        return "no budget" if value == "null" else f"budget {value} s"
    if name == "queries":
        return "no query limit" if value == "null" else f"queries={value}"
    return f"{name}={value}"


def method_labels(frame, setting):
    """The display label of each row of `frame` (which holds the `setting` columns), in row order.

    The method as a paper names it ('HNAS (snip)', 'REA', 'Training-free (snip)'); only where settings of
    the same algorithm and metric differ are the overrides that tell them apart appended ('REA (budget 18000
    s)', 'HNAS (snip, queries=50)'). Distinct settings get distinct labels: two settings of one method differ
    in some override, at least one of them sets it (an unset one is empty), and that one's label shows it.
    """
    overrides = [c for c in setting if c not in ("algorithm", "metric")]
    labels = []
    for _, row in frame.iterrows():
        same_method = frame[(frame["algorithm"] == row["algorithm"]) & (frame["metric"] == row["metric"])]
        parts = [row["metric"]] if row["metric"] != "-" else []
        parts += [_readable_override(c, row[c]) for c in overrides
                  if row[c] != "" and same_method[c].nunique() > 1]
        name = METHOD_NAMES.get(row["algorithm"], row["algorithm"])
        labels.append(f"{name} ({', '.join(parts)})" if parts else name)
    return labels


def optimum(table):
    """The best 200-epoch test accuracy over the whole benchmark table, per dataset."""
    out = {}
    for ds in TEST_DATASETS:
        if hasattr(table, "column"):
            out[ds] = float(np.nanmax(np.asarray(table.column(ds, "test", 200), dtype=float)))
        else:
            out[ds] = max(float(table.accuracy(i, ds, "test", 200)) for i in range(len(table.archs)))
    return out


def _default_table():
    try:
        from hnas.benchmarks.nb201 import load_table

        return load_table()
    except Exception as error:  # no table: the report still works, without the optimum
        log.warning("no NB201 table to mark the optimum (%s)", error)
        return None


def paper_table(inputs, out_dir, table=None, stem="paper_table"):
    """Test accuracy (mean ± std over seeds) on the three datasets and search cost per setting, as in the
    paper, plus the benchmark's optimum when `table` is given (or loadable). Writes <stem>.csv and .md."""

    summary = summarize(load_results(inputs))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, header = [], ["method", *TEST_DATASETS, "search cost (s)", "metric time (s)", "n seeds"]
    csv_rows = []
    if not summary.empty:
        setting = _summary_setting(summary)
        for label, (_, r) in zip(method_labels(summary, setting), summary.iterrows()):
            rows.append([label, *[_pm(r[f"{c}_mean"], r[f"{c}_std"]) for c in TEST_COLUMNS],
                         f"{r['search_cost_s_mean']:.0f}", f"{r['metric_s_mean']:.0f}", str(r["n_seeds"])])
            # The setting columns too: the label names a method, the CSV keeps every setting's overrides.
            csv_rows.append({"method": label, **{c: r[c] for c in setting},
                             **{k: r[k] for k in r.index if k.endswith(("_mean", "_std"))},
                             "n_seeds": r["n_seeds"]})
    if table is not None:
        best = optimum(table)
        rows.append(["optimum (benchmark)", *[f"{best[ds]:.2f}" for ds in TEST_DATASETS], "-", "-", "-"])
        csv_rows.append({"method": "optimum", **{f"{test_column(ds)}_mean": best[ds] for ds in TEST_DATASETS}})
    frame = pd.DataFrame(csv_rows)
    atomic_write_text(out_dir / f"{stem}.csv", frame.to_csv(index=False))
    atomic_write_text(out_dir / f"{stem}.md", markdown_table(header, rows))
    return frame


def best_so_far_curve(run_dir, budgets):
    """Per dataset, the 200-epoch test accuracy of the best-so-far (by validation) architecture at each budget.

    Before the first query the value is NaN; after the run's last query it stays at the final one. A run with
    no query (training-free, top-1) has its result's accuracy at every budget.
    """
    run_dir = Path(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    budgets = np.asarray(budgets, dtype=float)
    queries_path = run_dir / "queries.csv"
    queries = pd.read_csv(queries_path) if queries_path.exists() else pd.DataFrame()
    if queries.empty:
        return {ds: np.full(len(budgets), float(result["test_acc"][ds])) for ds in TEST_DATASETS}
    cum = queries["cum_cost_s"].to_numpy(dtype=float)
    last = np.searchsorted(cum, budgets, side="right") - 1  # the last query that fits in each budget
    curves = {}
    for ds in TEST_DATASETS:
        values = queries[f"best_{test_column(ds)}"].to_numpy(dtype=float)
        curves[ds] = np.where(last >= 0, values[np.clip(last, 0, None)], np.nan)
    return curves


def budget_curves(inputs, budget_max=18000.0, n_points=181):
    """{label: {dataset: (mean, standard error, n) arrays}} over `budgets`, plus budgets and mean final costs."""
    frame = load_results(inputs)
    budgets = np.linspace(0.0, budget_max, n_points)
    curves, costs = {}, {}
    if frame.empty:
        return budgets, curves, costs
    setting = setting_columns(frame)
    labels = pd.Series(method_labels(frame, setting), index=frame.index)
    for _, group in frame.groupby(setting, sort=True, dropna=False):
        label = labels[group.index[0]]
        per_run = [best_so_far_curve(d, budgets) for d in group["run_dir"]]
        curves[label] = {}
        for ds in TEST_DATASETS:
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


def draw_budget_figure(inputs, table=None, budget_max=18000.0, n_points=181):
    """The matplotlib Figure of budget_figure (not saved)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    budgets, curves, costs = budget_curves(inputs, budget_max, n_points)
    best = optimum(table) if table is not None else None
    fig = Figure(figsize=(5 * len(TEST_DATASETS), 4), layout="constrained")
    axes = fig.subplots(1, len(TEST_DATASETS))
    for ax, ds in zip(axes, TEST_DATASETS):
        for k, (label, per_ds) in enumerate(curves.items()):
            mean, sem, _ = per_ds[ds]
            error = 100.0 - mean
            color = f"C{k % 10}"
            # Best-so-far is a step function of the budget: draw it as steps, not slopes.
            ax.plot(budgets, error, color=color, label=label, drawstyle="steps-post")
            ax.fill_between(budgets, error - sem, error + sem, color=color, alpha=0.2, linewidth=0, step="post")
            end = costs[label]
            if 0 < end <= budget_max:
                ax.plot([end], [np.interp(end, budgets, error)], "o", color=color, markersize=4)
        title = ds
        if best is not None:
            ax.axhline(100.0 - best[ds], color="black", linestyle="--", linewidth=1, label="benchmark optimum")
            title = f"{ds} (optimum: {100.0 - best[ds]:.2f} % error)"
        ax.set_title(title)
        ax.set_xlabel("search budget (s of 12-epoch training)")
        ax.set_ylabel("test error (%) after 200 epochs")
        ax.set_xlim(0, budget_max)
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


def budget_figure(inputs, out_dir, table=None, budget_max=18000.0, n_points=181, name="budget_figure.png"):
    """Test error (100 - test accuracy of the best-so-far-by-validation architecture) against search budget,
    mean and standard-error band over seeds, one panel per dataset, one line per setting (labelled by
    method_labels), the benchmark's optimum dashed (when `table` is given). A dot marks each setting's mean
    final search cost. Returns the path."""
    fig = draw_budget_figure(inputs, table, budget_max, n_points)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)
    return path


def run_report(inputs, out_dir, table=None, budget_max=18000.0):
    """The search report of run / sweep folders `inputs`: summary.csv/.md, paper_table.csv/.md and
    budget_figure.png in `out_dir`. `table` (for the optimum) defaults to the NB201 table, if it loads."""
    inputs = [Path(p) for p in inputs]
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        from hnas.errors import HnasError

        raise HnasError(f"report inputs not found: {', '.join(missing)}")
    if table is None:
        table = _default_table()
    frame = load_results(inputs)
    if frame.empty:
        from hnas.errors import HnasError

        raise HnasError(f"no usable result.json under {', '.join(map(str, inputs))}: nothing to report (the "
                        "warnings above name any that were skipped); point stage.inputs at finished search runs")
    for folder in inputs:
        failed = _count_failed(folder)
        if failed:
            log.warning("%d job folder(s) under %s have no result.json (failed or unfinished)", len(failed),
                        folder)
    summary_csv, summary_md = write_summary(summarize(frame), out_dir)
    paper_table(inputs, out_dir, table)
    figure = budget_figure(inputs, out_dir, table, budget_max)
    log.info("search report of %d runs written to %s", len(frame), out_dir)
    return {"runs": len(frame), "summary": str(summary_csv), "summary_md": str(summary_md),
            "paper_table": str(Path(out_dir) / "paper_table.md"), "figure": str(figure)}
