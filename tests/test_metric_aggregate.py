"""Combined metrics (hnas.metrics.aggregate): rank aggregation (`metric=agg`), the log-rank rule over a
population, and reg-SWAP (`metric=reg_swap`)."""

import gzip
import json
import math

import numpy as np
import pandas as pd
import pytest

from conftest import configure
from hnas import paths
from hnas.errors import HnasError
from hnas.metrics.aggregate import DEFAULT_COMPONENTS, CombinedMetric, log_rank_sum
from hnas.search.testing import MetricDict


def test_log_rank_sum_by_hand():
    # ranks ascending, ties averaged: column 0 -> 1, 2.5, 2.5, 4; column 1 -> 3, 1, 2, NaN ranks lowest -> ...
    columns = [[1.0, 9.0], [5.0, 2.0], [5.0, 4.0], [7.0, float("nan")]]
    expected = [math.log(1) + math.log(4), math.log(2.5) + math.log(2), math.log(2.5) + math.log(3),
                math.log(4) + math.log(1)]
    np.testing.assert_allclose(log_rank_sum(columns), expected)


def test_the_aggregate_ranks_over_its_population_and_passes_other_metrics_through():
    values = MetricDict({a: {"x": float(i), "y": float(-i), "k": 10.0 * i} for i, a in enumerate("abcd")})
    over_all = CombinedMetric(values, "agg", log_rank_sum, ["x", "y"], names=["agg", "k"], population="abcd")
    out = over_all(["b", "d"])
    assert out["b"] == {"agg": pytest.approx(math.log(2) + math.log(3)), "k": 10.0}
    assert out["d"]["agg"] == pytest.approx(math.log(4) + math.log(1))
    per_call = CombinedMetric(values, "agg", log_rank_sum, ["x", "y"])  # no population: the architectures of the call
    assert per_call(["b", "d"])["d"]["agg"] == pytest.approx(math.log(2) + math.log(1))
    with pytest.raises(ValueError, match="outside the population"):
        CombinedMetric(values, "agg", log_rank_sum, ["x", "y"], population="ab")(["c"])


def test_aggregate_settings_are_checked():
    assert configure("metric=agg").metric.of == list(DEFAULT_COMPONENTS)
    with pytest.raises(HnasError, match="metric.of"):
        configure("metric=agg", "metric.of=[snip]")
    with pytest.raises(HnasError, match="metric.of"):
        configure("metric=agg", "metric.of=[snip,no_such]")
    with pytest.raises(HnasError, match="only a combined metric"):
        configure("metric=snip", "metric.of=[snip,synflow]")


def test_a_training_free_search_on_the_aggregate_picks_the_table_argmax(tmp_path, monkeypatch):
    from hnas.stages import search as stage

    monkeypatch.setenv("HNAS_RESULTS_DIR", str(tmp_path))
    cfg = configure("experiment=hnas_nb201", "metric=agg", "search=training_free", "search.candidates=100000")
    result = stage.run(cfg, tmp_path / "run", tensorboard=False)
    # Independently: pandas' average ranks over the shipped table's rows.
    folder = paths.embedded_dir() / "metric-tables" / "nb201-reference-cifar10-test-b64-seed0"
    with gzip.open(folder / "rows.jsonl.gz", "rt") as f:
        frame = pd.DataFrame([{"arch": r["arch"], **r["metrics"]} for r in map(json.loads, f)])
    frame = frame.drop_duplicates("arch").set_index("arch")
    score = sum(np.log(frame[c].rank(method="average")) for c in DEFAULT_COMPONENTS)
    assert result["arch"] == score.idxmax()


def test_the_correlation_report_ranks_the_aggregate_over_the_rows_holding_its_components():
    from hnas.stages.report import with_combined

    frame = pd.DataFrame({"arch": list("abcde"), "x": [1.0, 2.0, 3.0, np.nan, 5.0], "y": [5.0, 3.0, 4.0, 1.0, 2.0]})
    out = with_combined(frame, "agg", ["x", "y"], log_rank_sum)
    complete = frame.dropna()  # d lacks x: not in the population, no value
    expected = np.log(complete["x"].rank()) + np.log(complete["y"].rank())
    np.testing.assert_allclose(out.loc[complete.index, "agg"], expected)
    assert math.isnan(out.loc[3, "agg"])
    with pytest.raises(HnasError, match="no column"):
        with_combined(frame, "agg", ["x", "zico"], log_rank_sum)


def test_reg_swap_settings_are_checked():
    cfg = configure("metric=reg_swap", "metric.options.mu=300", "metric.options.sigma=2e5")
    assert cfg.metric.of == ["swap", "params"] and cfg.metric.options == {"mu": 300.0, "sigma": 2e5}
    with pytest.raises(HnasError, match="metric.options.mu=<number>"):
        configure("metric=reg_swap")  # the paper's mu and sigma are per space and not published for NB201
    with pytest.raises(HnasError, match="made of"):
        configure("metric=reg_swap", "metric.of=[swap,flops]", "metric.options.mu=1", "metric.options.sigma=1")
    with pytest.raises(HnasError, match="takes no options"):
        configure("metric=snip", "+metric.options.mu=1")


def test_a_training_free_search_on_reg_swap_picks_the_table_argmax(tmp_path, monkeypatch):
    from hnas.stages import search as stage

    monkeypatch.setenv("HNAS_RESULTS_DIR", str(tmp_path))
    mu, sigma = 800.0, 1e5
    cfg = configure("experiment=hnas_nb201", "space.layout=compact", "metric=reg_swap", f"metric.options.mu={mu}",
                    f"metric.options.sigma={sigma}", "search=training_free", "search.candidates=100000")
    result = stage.run(cfg, tmp_path / "run", tensorboard=False)
    # Independently: SWAP's regular factor, its count_parameters in thousands, over the shipped rows with swap.
    folder = paths.embedded_dir() / "metric-tables" / "nb201-compact-cifar10-test-b64-seed0"
    rows = {}
    with gzip.open(folder / "rows.jsonl.gz", "rt") as f:
        for r in map(json.loads, f):
            rows.setdefault(r["arch"], {}).update(r["metrics"])
    score = {a: m["swap"] * math.exp(-((m["params"] / 1e3 - mu) ** 2) / sigma) for a, m in rows.items() if "swap" in m}
    assert len(score) >= 500 and result["arch"] == max(score, key=score.get)
