"""Searches on the real NAS-Bench-201 table (../shared/data) with a constructed metric, and the search stage."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import configure
from hnas.oracles import NB201TableOracle
from hnas.search import Problem, Universe, run_search
from hnas.spaces import create_space
from hnas.search.testing import MetricDict
from hnas.stages import search as stage


@pytest.fixture(scope="module")
def table():
    from hnas.benchmarks.nb201 import load_table

    return load_table()


@pytest.fixture(scope="module")
def noisy_metric(table):
    """A stand-in for a training-free metric: 1000 + 40 * (12-epoch validation accuracy) + N(0, 200).

    Its Spearman correlation with cifar10 test accuracy is about 0.66, like the better real metrics.
    """
    acc = table.column("cifar10-valid", "valid", 12)
    m = 1000.0 + 40.0 * acc + np.random.RandomState(123).normal(0.0, 200.0, len(acc))
    return {arch: {"snip": float(m[i]), "condnum": 100.0} for i, arch in enumerate(table.archs)}


def problem(table, metric, seed):
    return Problem(space=Universe(create_space("nb201"), table.archs), oracle=NB201TableOracle(table=table), seed=seed,
                   metric="snip", metrics_of=MetricDict(metric, seconds_per_arch=0.1))


def test_hnas_finds_good_architectures(table, noisy_metric):
    hnas = [run_search({"name": "hnas"}, problem(table, noisy_metric, seed)) for seed in range(4)]
    rand = [run_search({"name": "random"}, problem(table, noisy_metric, seed)) for seed in range(4)]
    hnas_c10 = np.mean([r.test_acc["cifar10"] for r in hnas])
    rand_c10 = np.mean([r.test_acc["cifar10"] for r in rand])
    assert hnas_c10 > 93.7 and hnas_c10 > rand_c10  # the NB201 optimum is 94.37
    for r in hnas:
        assert r.n_queries == 20 and 1000 < r.search_cost_s < 5000  # ~110 s per 12-epoch training
        assert r.val_acc == table.accuracy(r.arch, "cifar10-valid", "valid", 12)
        assert r.test_acc["cifar100"] == table.accuracy(r.arch, "cifar100", "test", 200)
        assert r.index == table.index_of(r.arch)
        # 20 steps of 2,000 draws with replacement cover most of the 15,625 architectures.
        assert 12000 < r.metric_s / 0.1 < 15625


def test_pools_are_the_reference_pools(table):
    # The reference draws np.random.choice(15625, 2000) after np.random.seed(seed), over official indices.
    space = Universe(create_space("nb201"), table.archs)
    reference = np.random.RandomState(7)
    ours = np.random.RandomState(7)
    for _ in range(3):
        assert space.sample(2000, ours) == [table.archs[i] for i in reference.choice(15625, 2000)]


def _cfg(search, metric="snip", seed=0):
    """The typed config of a search run with the search settings `search` ({"name": ..., key: value})."""
    settings = [f"search.{key}={'null' if value is None else value}" for key, value in search.items() if key != "name"]
    return configure("stage=search", f"search={search['name']}", f"metric={metric}", f"seed={seed}", "device=cpu",
                     *settings)


def test_stage_writes_result_queries_log_and_tensorboard(table, noisy_metric, tmp_path, caplog):
    caplog.set_level("INFO", logger="hnas.stages.search")
    payload = stage.run(_cfg({"name": "hnas", "queries": 7}), tmp_path,
                        metrics_of=MetricDict(noisy_metric, seconds_per_arch=0.1))
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["algorithm"] == "hnas" and result["metric"] == "snip" and result["seed"] == 0
    assert result["n_queries"] == 7 and result["index"] == table.index_of(result["arch"])
    assert set(result["test_acc"]) == {"cifar10", "cifar100", "ImageNet16-120"}
    assert result["query"] == {"oracle": "nb201-table", "dataset": "cifar10-valid", "split": "valid", "epochs": 12}
    assert result["config"]["search"] == result["search_config"] and result["config"]["search"]["queries"] == 7
    assert result["search_config"]["scale"] == 5e3 and result["metric_s"] > 0
    assert payload["arch"] == result["arch"]
    queries = pd.read_csv(tmp_path / "queries.csv")
    assert list(queries["step"]) == list(range(1, 8))
    assert queries["cum_cost_s"].iloc[-1] == pytest.approx(result["search_cost_s"])
    assert queries["best_val_acc"].is_monotonic_increasing
    assert queries["best_cifar10_test_acc_200ep"].iloc[-1] == result["test_acc"]["cifar10"]
    assert queries["c"].iloc[:1].tolist() == [-2.0]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert sum("query 7:" in m for m in caplog.messages) == 1 and any("chose" in m for m in caplog.messages)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"query/t", "query/c", "query/score", "query/val_acc", "query/best_val_acc",
            "query/cum_cost_s"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("query/val_acc")) == 7


def test_stage_runs_baselines_without_a_metric_source(tmp_path):
    for name in ("random", "rea", "reinforce"):
        payload = stage.run(_cfg({"name": name, "queries": 12, "budget_s": None}), tmp_path / name,
                            tensorboard=False)
        assert payload["n_queries"] == 12 and payload["metric"] is None and payload["metric_s"] == 0.0
    rea = stage.run(_cfg({"name": "rea"}), tmp_path / "rea-budget", tensorboard=False)
    assert rea["search_cost_s"] <= 12000.0 and rea["n_queries"] > 80  # NB201's REA budget


def test_stage_needs_a_known_space_with_an_oracle(tmp_path):
    from hnas.errors import HnasError
    from hnas.oracles import default_oracle

    cfg = _cfg({"name": "random"})
    cfg.space.name = "nb301"
    with pytest.raises(HnasError, match="unknown search space 'nb301'"):
        stage.run(cfg, tmp_path)
    assert default_oracle("nb201") == "nb201-table"
    with pytest.raises(HnasError, match="no oracle answers queries on space 'toy'.*nb201-table \\(nb201\\)"):
        default_oracle("toy")


@pytest.mark.parametrize("name", ["hnas", "random", "rea", "reinforce", "training_free"])
def test_stage_runs_every_option_of_the_composed_config(name, table, noisy_metric, tmp_path):
    cfg = configure(f"search={name}", "metric=snip", "seed=3", "search.queries=6", "search.budget_s=null")
    snip = MetricDict(noisy_metric)
    payload = stage.run(cfg, tmp_path, metrics_of=snip, tensorboard=False)
    assert payload["algorithm"] == name and payload["seed"] == 3
    assert payload["n_queries"] == (0 if name == "training_free" else 6)
    assert payload["metric"] == ("snip" if name in ("hnas", "training_free") else None)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["config"]["search"]["name"] == name and result["config"]["search"]["queries"] == 6


# ---------------------------------------------------------------------------------------------------------
# Universes on NB201


def test_whole_space_rea_and_reinforce_are_the_runs_recorded_before_universes_were_honoured(table):
    # Recorded with the code before REA / REINFORCE learnt about universes (seed 4, the NB201 table).
    space = Universe(create_space("nb201"), table.archs)
    assert space.is_whole
    expected = {
        "rea": [1146, 8366, 10679, 709, 6017, 14696, 11863, 456, 6962, 12681, 8073, 6748, 2788, 2338, 541, 11046,
                7712, 456, 6804, 4474, 11065, 3466, 5740, 6748, 4456],
        "reinforce": [5931, 10686, 8889, 13800, 6874, 13891, 7765, 14996, 8332, 7493, 14533, 2853, 2999, 13559,
                      4430, 8162, 1260, 6653, 12401, 15371, 9779, 14466, 3346, 15484, 12593],
    }
    for name, indices in expected.items():
        result = run_search({"name": name, "queries": 25, "budget_s": None},
                            Problem(space=space, oracle=NB201TableOracle(table=table), seed=4))
        assert [r["index"] for r in result.records] == indices


@pytest.mark.parametrize("name", ["rea", "reinforce"])
@pytest.mark.parametrize("size", [5, 50])
def test_rea_and_reinforce_stay_in_a_universe_of_nb201(table, name, size):
    members = [table.archs[i] for i in np.random.RandomState(size).choice(len(table.archs), size, replace=False)]
    space = Universe(create_space("nb201"), members)
    assert not space.is_whole
    for seed in range(2):
        result = run_search({"name": name, "queries": 25, "budget_s": None},
                            Problem(space=space, oracle=NB201TableOracle(table=table), seed=seed))
        assert result.n_queries == 25 and {r["arch"] for r in result.records} <= set(members)


def test_stage_searches_only_the_architectures_of_a_small_metric_table(tmp_path):
    # The case: a 5-architecture metric table, search=rea search.universe=metric_table 20 queries.
    from hnas.spaces import nb201
    from hnas.stages import precompute

    common = ("dataset=fake", "probe.batch_size=8", "metric=params")
    precompute.run(configure("stage=precompute", "stage.metrics=[params]", "stage.limit=5", *common),
                   tmp_path / "precompute")
    members = set(create_space("nb201").sample_distinct(5, seed=0))
    for name in ("rea", "reinforce"):
        out = tmp_path / name
        payload = stage.run(configure("stage=search", f"search={name}", "search.universe=metric_table",
                                             "search.queries=20", *common), out, tensorboard=False)
        assert payload["n_queries"] == 20 and payload["arch"] in members
        assert set(pd.read_csv(out / "queries.csv")["arch"]) <= members


def test_stage_refuses_a_bad_setting_before_computing_any_metric(tmp_path):
    from hnas.errors import HnasError

    metrics = MetricDict({})
    with pytest.raises(HnasError, match=r"search.t_bounds=\[1.0, 0.0\] is invalid"):
        stage.run(_cfg({"name": "hnas", "t_bounds": [1, 0], "universe": "metric_table"}), tmp_path,
                  metrics_of=metrics, tensorboard=False)
    assert metrics.seen == set() and not (tmp_path / "result.json").exists()
