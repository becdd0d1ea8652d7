"""How well each metric ranks architectures: Spearman and Kendall correlation with benchmark accuracies.

The accuracies are the oracle's `targets` ((dataset, split, epochs), read with `oracle.accuracy`), so the
report works for any space with an oracle; the scatter figure plots the test-split targets (all of them where
none is one). Where a paper published a metric's correlation with one of the oracle's targets
(`published_correlations.csv` beside this file), the report sets it beside ours.
"""

import importlib.resources
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from hnas.io import atomic_write_text


def target_label(dataset, split, epochs):
    """A target as a column and a panel name it: 'cifar10 test 200ep'."""
    return f"{dataset} {split} {epochs}ep"


def plotted(oracle):
    """The labels of the targets the scatter figure plots: the test-split ones, or all where none is a test split."""
    test = [t for t in oracle.targets if t[1] == "test"]
    return [target_label(*t) for t in test or oracle.targets]


def attach_accuracies(frame, oracle):
    """Add one column per target of `oracle` (labelled by target_label) to a metric-table frame."""
    frame = frame.copy()
    for dataset, split, epochs in oracle.targets:
        frame[target_label(dataset, split, epochs)] = [oracle.accuracy(arch, dataset, split, epochs)
                                                      for arch in frame["arch"]]
    return frame


def correlations(frame, metrics, targets):
    """Spearman and Kendall per (metric, target label). NaN where undefined: fewer than 3 finite pairs, or a
    metric that is constant over the table (params in NB201's reference layout, where every network is the
    same)."""
    rows = []
    for metric in metrics:
        for label in targets:
            pair = frame[[metric, label]].replace([np.inf, -np.inf], np.nan).dropna()
            defined = len(pair) > 2 and pair[metric].nunique() > 1 and pair[label].nunique() > 1
            rows.append({
                "metric": metric, "target": label, "n": len(pair),
                "spearman": stats.spearmanr(pair[metric], pair[label]).statistic if defined else math.nan,
                "kendall": stats.kendalltau(pair[metric], pair[label]).statistic if defined else math.nan,
            })
    return pd.DataFrame(rows)


def published_correlations(oracle_name):
    """The published Spearman (and Kendall, where given) of metrics on `oracle_name`'s targets, with sources;
    a combined metric is named with its components, as `agg(a,b,c)`."""
    with importlib.resources.files("hnas.reports").joinpath("published_correlations.csv").open() as f:
        published = pd.read_csv(f)
    return published[published["oracle"] == oracle_name].drop(columns="oracle")


def beside_published(corr, published, names=None):
    """`corr` with the published values of its (metric, target) pairs: columns published_spearman,
    published_kendall and published_source, NaN where nothing is published. `names` maps a metric column to
    the name it is published under (a combined metric's `agg(a,b,c)`); other metrics keep theirs."""
    names = names or {}
    keyed = corr.assign(published_as=[names.get(m, m) for m in corr["metric"]])
    found = published.rename(columns={"metric": "published_as", "spearman": "published_spearman",
                                      "kendall": "published_kendall", "source": "published_source"})
    return keyed.merge(found, on=["published_as", "target"], how="left").drop(columns="published_as")


def published_markdown(corr):
    """Our Spearman beside the published one, for the pairs that have one ('' where none has)."""
    pairs = corr.dropna(subset=["published_spearman"])
    if pairs.empty:
        return ""
    lines = ["| metric | target | n | ours | published | ours - published | source |", "|---|---|---|---|---|---|---|"]
    for row in pairs.itertuples():
        lines.append(f"| {row.metric} | {row.target} | {row.n} | {row.spearman:.3f} | {row.published_spearman:.3f} "
                     f"| {row.spearman - row.published_spearman:+.3f} | {row.published_source} |")
    return ("## Spearman beside published values\n\nA correlation depends on the population: a published value "
            "over the whole space compares with ours only where n covers it too.\n\n" + "\n".join(lines) + "\n")


def markdown_table(corr, statistic):
    """One row per metric, one column per target, and `n`: the architectures the metric's correlations are over
    (a partial table's metrics can cover fewer rows than it has)."""
    wide = corr.pivot(index="metric", columns="target", values=statistic)
    wide = wide[list(dict.fromkeys(corr["target"]))]
    covered = corr.groupby("metric")["n"].min()
    header = f"| metric ({statistic}) | n | " + " | ".join(wide.columns) + " |"
    lines = [header, "|" + "---|" * (len(wide.columns) + 2)]
    for metric, row in wide.iterrows():
        lines.append(f"| {metric} | {covered[metric]} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines)


def panel_text(corr, metric, target):
    """'Spearman ρ = 0.812, Kendall τ = 0.634': the correlation of one scatter panel, read from the report's
    correlation frame so the figure shows the numbers of correlation.csv."""
    row = corr[(corr["metric"] == metric) & (corr["target"] == target)].iloc[0]
    values = [f"{v:.3f}" if math.isfinite(v) else "undefined" for v in (row["spearman"], row["kendall"])]
    return f"Spearman ρ = {values[0]}, Kendall τ = {values[1]}"


def scatter_figure(frame, corr, metrics, targets):
    """One row of panels per metric, one panel per target label of `targets`: accuracy against metric value,
    titled with that pair's correlation (panel_text)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(targets), 3 * len(metrics)), layout="tight")
    axes = fig.subplots(len(metrics), len(targets), squeeze=False)
    for r, metric in enumerate(metrics):
        x = frame[metric].to_numpy(dtype=float)
        magnitudes = np.abs(x[np.isfinite(x) & (x != 0)])
        # Heavy-tailed metrics (synflow spans 40 decades) are only readable on a symmetric log axis, which
        # also keeps the zeros and negative values of degenerate architectures.
        wide = len(magnitudes) > 0 and magnitudes.max() / magnitudes.min() > 1e3
        for c, label in enumerate(targets):
            ax = axes[r][c]
            ax.scatter(x, frame[label], s=3, alpha=0.4)
            if wide:
                ax.set_xscale("symlog", linthresh=float(np.percentile(magnitudes, 5)))
            ax.set_title(panel_text(corr, metric, label), fontsize=9)
            ax.set_xlabel(metric)
            ax.set_ylabel(f"{label} acc (%)")
    return fig


def correlation_report(frame, oracle, metrics, out_dir, published_names=None):
    """Write correlation.csv, correlation.md and scatter.png into out_dir; return the correlation frame, with
    the published values beside ours (beside_published; `published_names` as its `names`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = attach_accuracies(frame, oracle)
    corr = correlations(frame, metrics, [target_label(*t) for t in oracle.targets])
    corr = beside_published(corr, published_correlations(oracle.name), published_names)
    atomic_write_text(out_dir / "correlation.csv", corr.to_csv(index=False))
    text = (f"# Rank correlation of metrics with {oracle.name} accuracies\n\n"
            f"The table has {len(frame)} architectures; n is how many of them hold the metric's value.\n\n"
            + markdown_table(corr, "spearman") + "\n\n" + markdown_table(corr, "kendall") + "\n")
    published = published_markdown(corr)
    if published:
        text += "\n" + published
    atomic_write_text(out_dir / "correlation.md", text)
    tmp = out_dir / ".scatter.tmp.png"
    scatter_figure(frame, corr, metrics, plotted(oracle)).savefig(tmp, dpi=80)
    tmp.replace(out_dir / "scatter.png")
    return corr
