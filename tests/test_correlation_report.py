"""The correlation report's scatter figure, on the metric table hnas ships and the NB201 table."""

import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import configure
from hnas import paths
from hnas.metric_table import MetricTable, TableSettings
from hnas.oracles import create_oracle
from hnas.reports.correlation import attach_accuracies, correlation_report, plotted, scatter_figure

# snip and grad_norm rank well, synflow spans 40 decades (symlog axis), params is the same for every network
# of the reference layout (no correlation defined).
METRICS = ["snip", "grad_norm", "synflow", "params"]
TITLE = re.compile(r"Spearman ρ = (\S+), Kendall τ = (\S+)")


def shipped_metrics():
    """The frame of the shipped reference-layout metric table: real metric values of a few hundred archs.

    The test's results folder is empty (conftest), so the only table of these settings is the shipped one."""
    settings = TableSettings.from_config(configure("experiment=hnas_nb201"))
    table = MetricTable.existing(paths.results_dir(), settings)
    assert [layer.parent for layer in table.layers] == [paths.embedded_dir() / "metric-tables"]
    return table.frame()


def _shown(title):
    """The (rho, tau) a panel title shows, as floats (NaN for 'undefined')."""
    match = TITLE.fullmatch(title)
    assert match, title
    return tuple(np.nan if v == "undefined" else float(v) for v in match.groups())


def test_scatter_panels_show_the_correlations_of_the_report(tmp_path):
    oracle = create_oracle("nb201-table")
    bench = oracle.table
    shipped = shipped_metrics()
    corr = correlation_report(shipped, oracle, METRICS, tmp_path)
    targets = [("cifar10", "test", 200), ("cifar100", "test", 200), ("ImageNet16-120", "test", 200)]
    assert plotted(oracle) == [f"{d} {s} {e}ep" for d, s, e in targets]

    # The figure is written, one row of panels per metric.
    pixels = matplotlib.image.imread(tmp_path / "scatter.png")
    assert pixels.shape[:2] == (3 * len(METRICS) * 80, 4 * len(targets) * 80)  # figsize x dpi 80
    assert pixels[..., :3].std() > 0.05

    written = pd.read_csv(tmp_path / "correlation.csv").set_index(["metric", "target"])
    frame = attach_accuracies(shipped, oracle)
    fig = scatter_figure(frame, corr, METRICS, plotted(oracle))
    axes = np.array(fig.axes).reshape(len(METRICS), len(targets))
    for r, metric in enumerate(METRICS):
        for c, (dataset, split, epochs) in enumerate(targets):
            target = f"{dataset} {split} {epochs}ep"
            rho, tau = _shown(axes[r][c].get_title())
            # The numbers shown are correlation.csv's ...
            row = written.loc[(metric, target)]
            assert rho == pytest.approx(row["spearman"], abs=5e-4, nan_ok=True)
            assert tau == pytest.approx(row["kendall"], abs=5e-4, nan_ok=True)
            # ... and those of the panel's own points, the metric against the benchmark's accuracy.
            x = shipped[metric].to_numpy(dtype=float)
            y = bench.column(dataset, split, epochs)[shipped["index"].astype(int).to_numpy()]
            if metric == "params":
                assert np.isnan(rho) and np.isnan(tau) and np.unique(x).size == 1
            else:
                assert rho == pytest.approx(stats.spearmanr(x, y).statistic, abs=5e-4)
                assert tau == pytest.approx(stats.kendalltau(x, y).statistic, abs=5e-4)
    # Real metrics rank differently: the panels do not all show one number.
    assert len({axes[r][0].get_title() for r in range(3)}) == 3


def test_every_published_correlation_names_a_metric_and_a_target_of_its_oracle():
    """A typo in published_correlations.csv would silently drop its row from every report."""
    from hnas.metrics import list_metrics
    from hnas.metrics.aggregate import COMBINED
    from hnas.oracles import ORACLES
    from hnas.reports.correlation import published_correlations, target_label

    for oracle_name in ORACLES.names():
        published = published_correlations(oracle_name)
        if published.empty:
            continue
        targets = {target_label(*t) for t in create_oracle(oracle_name).targets}
        assert set(published["target"]) <= targets
        for name in published["metric"]:
            combined, _, components = name.partition("(")
            if components:
                assert combined in COMBINED.names() and set(components.rstrip(")").split(",")) <= set(list_metrics())
            else:
                assert name in list_metrics()
        assert published["spearman"].between(-1, 1).all() and published["source"].str.len().gt(0).all()


def test_the_report_sets_published_values_beside_ours_a_combined_metric_by_its_components(tmp_path):
    """On the shipped compact-layout table: AZ-NAS's aggregate is published under its components, zen alone;
    params has no published value."""
    from hnas.reports.correlation import published_correlations
    from hnas.stages import report

    az = ["az_expressivity", "az_progressivity", "az_trainability", "flops"]
    cfg = configure("experiment=hnas_nb201", "space.layout=compact", "stage=report", "stage.kind=correlation",
                    "metric=agg", f"metric.of=[{','.join(az)}]", "stage.metrics=[agg,zen,params]")
    corr = report.run(cfg, tmp_path).set_index(["metric", "target"])
    published = published_correlations("nb201-table").set_index(["metric", "target"])
    for label in plotted(create_oracle("nb201-table")):
        assert corr.loc[("agg", label), "published_spearman"] == published.loc[(f"agg({','.join(az)})", label),
                                                                               "spearman"]
        assert corr.loc[("zen", label), "published_spearman"] == published.loc[("zen", label), "spearman"]
        assert np.isnan(corr.loc[("params", label), "published_spearman"])
    text = (tmp_path / "correlation.md").read_text()
    ours, theirs = corr.loc[("agg", "cifar10 test 200ep"), ["spearman", "published_spearman"]]
    assert f"| agg | cifar10 test 200ep | 15625 | {ours:.3f} | {theirs:.3f} | {ours - theirs:+.3f} |" in text
    assert "| params | cifar10" not in text.split("## Spearman beside published values")[1]
