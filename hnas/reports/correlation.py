"""How well each metric ranks architectures: Spearman and Kendall correlation with benchmark accuracies."""

import math

import numpy as np
import pandas as pd
from scipy import stats

# (label, dataset, split, epochs): every target is named by dataset, split and epochs.
TARGETS = (
    ("cifar10 test 200ep", "cifar10", "test", 200),
    ("cifar100 test 200ep", "cifar100", "test", 200),
    ("ImageNet16-120 test 200ep", "ImageNet16-120", "test", 200),
    ("cifar10-valid valid 12ep", "cifar10-valid", "valid", 12),
    ("cifar100 valid 12ep", "cifar100", "valid", 12),
    ("ImageNet16-120 valid 12ep", "ImageNet16-120", "valid", 12),
)
PLOTTED = TARGETS[:3]


def attach_accuracies(frame, benchmark):
    """Add one column per target to a metric-table frame, looked up by official index."""
    frame = frame.dropna(subset=["index"]).copy()
    index = frame["index"].astype(int).to_numpy()
    for label, dataset, split, epochs in TARGETS:
        frame[label] = benchmark.column(dataset, split, epochs)[index]
    return frame


def correlations(frame, metrics):
    """Spearman and Kendall per (metric, target). NaN where undefined: fewer than 3 finite pairs, or a metric
    that is constant over the table (params in NB201's reference layout, where every network is the same)."""
    rows = []
    for metric in metrics:
        for label, *_ in TARGETS:
            pair = frame[[metric, label]].replace([np.inf, -np.inf], np.nan).dropna()
            defined = len(pair) > 2 and pair[metric].nunique() > 1 and pair[label].nunique() > 1
            rows.append({
                "metric": metric, "target": label, "n": len(pair),
                "spearman": stats.spearmanr(pair[metric], pair[label]).statistic if defined else math.nan,
                "kendall": stats.kendalltau(pair[metric], pair[label]).statistic if defined else math.nan,
            })
    return pd.DataFrame(rows)


def markdown_table(corr, statistic):
    wide = corr.pivot(index="metric", columns="target", values=statistic)
    wide = wide[[label for label, *_ in TARGETS]]
    header = f"| metric ({statistic}) | " + " | ".join(wide.columns) + " |"
    lines = [header, "|" + "---|" * (len(wide.columns) + 1)]
    for metric, row in wide.iterrows():
        lines.append(f"| {metric} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines)


def panel_text(corr, metric, target):
    """'Spearman ρ = 0.812, Kendall τ = 0.634': the correlation of one scatter panel, read from the report's
    correlation frame so the figure shows the numbers of correlation.csv."""
    row = corr[(corr["metric"] == metric) & (corr["target"] == target)].iloc[0]
    values = [f"{v:.3f}" if math.isfinite(v) else "undefined" for v in (row["spearman"], row["kendall"])]
    return f"Spearman ρ = {values[0]}, Kendall τ = {values[1]}"


def scatter_figure(frame, corr, metrics):
    """One row of panels per metric, one panel per plotted target: accuracy against metric value, titled with
    that pair's correlation (panel_text)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(PLOTTED), 3 * len(metrics)), layout="tight")
    axes = fig.subplots(len(metrics), len(PLOTTED), squeeze=False)
    for r, metric in enumerate(metrics):
        x = frame[metric].to_numpy(dtype=float)
        magnitudes = np.abs(x[np.isfinite(x) & (x != 0)])
        # Heavy-tailed metrics (synflow spans 40 decades) are only readable on a symmetric log axis, which
        # also keeps the zeros and negative values of degenerate architectures.
        wide = len(magnitudes) > 0 and magnitudes.max() / magnitudes.min() > 1e3
        for c, (label, *_) in enumerate(PLOTTED):
            ax = axes[r][c]
            ax.scatter(x, frame[label], s=3, alpha=0.4)
            if wide:
                ax.set_xscale("symlog", linthresh=float(np.percentile(magnitudes, 5)))
            ax.set_title(panel_text(corr, metric, label), fontsize=9)
            ax.set_xlabel(metric)
            ax.set_ylabel(f"{label} acc (%)")
    return fig


def correlation_report(frame, benchmark, metrics, out_dir):
    """Write correlation.csv, correlation.md and scatter.png into out_dir; return the correlation frame."""
    frame = attach_accuracies(frame, benchmark)
    corr = correlations(frame, metrics)
    corr.to_csv(out_dir / "correlation.csv", index=False)
    text = (f"# Rank correlation of metrics with NB201 accuracies ({len(frame)} architectures)\n\n"
            + markdown_table(corr, "spearman") + "\n\n" + markdown_table(corr, "kendall") + "\n")
    (out_dir / "correlation.md").write_text(text)
    scatter_figure(frame, corr, metrics).savefig(out_dir / "scatter.png", dpi=80)
    return corr
