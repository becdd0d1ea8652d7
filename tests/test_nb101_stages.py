"""NAS-Bench-101 through the same stages as NB201: precompute, every search algorithm and both reports, on a
benchmark table converted from NASLib's 30-cell fixture (the official files are too large to ship)."""

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from conftest import DATA, configure, needs_data
from hnas.benchmarks import nb101 as bench
from hnas.errors import HnasError
from hnas.oracles import NB101TableOracle, create_oracle, default_oracle
from hnas.search import SEARCHES, Problem, Universe, run_search
from hnas.spaces import create_space
from hnas.spaces.nb101.spec import arch_string, canonical_cells, from_naslib

PKL = DATA / "naslib-test-assets" / "nb101_dummy.pkl"
SMALL = ["space=nb101", "space.stem_channels=16", "dataset=fake", "probe.batch_size=8", "device=cpu"]
METRICS = ["grad_norm", "snip", "synflow", "condnum", "params"]


@pytest.fixture
def fixture_data(tmp_path, monkeypatch):
    """A data folder holding the NB101 table converted from the 30-cell pickle, as hnas-nb101-convert does."""
    table = bench.table_from_naslib_pickle(PKL, trust_pickle=True)
    bench.save_table(table, tmp_path / "data" / "nb101" / "nb101.npz")
    monkeypatch.setenv("HNAS_DATA_DIR", str(tmp_path / "data"))
    with open(PKL, "rb") as f:
        cells = pickle.load(f)
    return cells


@needs_data
def test_the_oracle_answers_from_the_table(fixture_data):
    oracle = create_oracle(default_oracle("nb101"))
    space = create_space("nb101")
    assert len(oracle.archs) == 30 and all(space.validate(a) == a for a in oracle.archs)  # stored = canonical
    for module_hash, (fixed, computed) in fixture_data.items():
        arch = arch_string(fixed["module_adjacency"].tolist(), fixed["module_operations"])
        runs = computed[108]
        outcome = oracle.query(arch)
        assert outcome.val_acc == pytest.approx(100 * np.mean([r["final_validation_accuracy"] for r in runs]))
        assert outcome.cost_s == pytest.approx(np.mean([r["final_training_time"] for r in runs]))
        assert oracle.test_accs(arch) == {"cifar10": pytest.approx(100 * np.mean([r["final_test_accuracy"]
                                                                                    for r in runs]))}
        assert oracle.archs[oracle.index(arch)] == arch and space.hash(arch) == module_hash
    # one seeded run per cell: accuracy and cost of a query from the same run, the same on every call
    random = NB101TableOracle(repeat="random", seed=3)
    module_hash, (fixed, computed) = next(iter(fixture_data.items()))
    arch = arch_string(fixed["module_adjacency"].tolist(), fixed["module_operations"])
    first = random.query(arch)
    run = [r["final_validation_accuracy"] * 100 for r in computed[108]].index(first.val_acc)
    assert first == random.query(arch) and first.cost_s == computed[108][run]["final_training_time"]
    for bad, message in ([{"dataset": "cifar100"}, "CIFAR-10 only"], [{"epochs": 12}, "12"],
                         [{"repeat": 5}, "repeat"]):
        with pytest.raises(HnasError, match=message):
            NB101TableOracle(**bad)


@needs_data
def test_precompute_every_search_and_both_reports_on_the_fixture(fixture_data, tmp_path):
    from hnas.reports.search_report import run_report
    from hnas.stages import precompute, report, search

    archs = NB101TableOracle().archs
    cfg = configure("stage=precompute", *SMALL, f"stage.metrics=[{','.join(METRICS)}]",
                    f"stage.archs=[{','.join(archs)}]")
    summary = precompute.run(cfg, tmp_path / "pre")
    assert summary["computed"] == 30 and summary["failed"] == 0
    table = pd.read_csv(summary["table"])
    assert sorted(table["arch"]) == sorted(archs)
    assert table["index"].tolist() == [archs.index(a) for a in table["arch"]]  # the oracle's rows
    assert table[METRICS].notna().all().all()

    for name in SEARCHES.names():
        cfg = configure("stage=search", *SMALL, f"search={name}", "metric=snip", "search.queries=5")
        payload = search.run(cfg, tmp_path / "search" / name, tensorboard=False)
        assert payload["arch"] in archs and payload["space"] == "nb101"
        assert payload["query"] == {"oracle": "nb101-table", "dataset": "cifar10", "split": "valid", "epochs": 108,
                                    "repeat": "mean"}
        assert list(payload["test_acc"]) == ["cifar10"] and payload["n_queries"] <= 5
    written = run_report([tmp_path / "search"], tmp_path / "report")
    assert written["runs"] == len(SEARCHES.names())
    paper = pd.read_csv(tmp_path / "report" / "paper_table.csv").set_index("method")
    best = max(100 * np.mean([r["final_test_accuracy"] for r in c[108]]) for _, c in fixture_data.values())
    assert paper.loc["optimum", "cifar10_test_acc_108ep_mean"] == pytest.approx(best)

    corr = report.run(configure("stage=report", "stage.kind=correlation", *SMALL), tmp_path / "corr")
    assert set(corr["target"]) == {"cifar10 valid 108ep", "cifar10 test 108ep"}
    params = corr.set_index(["metric", "target"]).loc[("params", "cifar10 valid 108ep")]
    assert params["n"] == 30 and -1 <= params["spearman"] <= 1


@needs_data
def test_the_query_split_and_repeat_are_config_keys(fixture_data, tmp_path):
    from hnas.stages import search

    overrides = ["stage=search", *SMALL, "search=random", "search.queries=4"]
    one = search.run(configure(*overrides, "search.query_repeat=1", "search.query_split=test"), tmp_path / "a",
                     tensorboard=False)
    assert one["query"]["repeat"] == 1 and one["query"]["split"] == "test"
    by_hash = {h: c[108] for h, (_, c) in fixture_data.items()}
    space = create_space("nb101")
    queries = pd.read_csv(tmp_path / "a" / "queries.csv")
    for arch, val in zip(queries["arch"], queries["val_acc"]):
        assert val == pytest.approx(100 * by_hash[space.hash(arch)][1]["final_test_accuracy"])
    drawn = [search.run(configure(*overrides, "search.query_repeat=random", f"seed={seed}"), tmp_path / str(seed),
                        tensorboard=False) for seed in (0, 0)]
    assert drawn[0]["search_cost_s"] == drawn[1]["search_cost_s"]  # seeded: the same runs again
    with pytest.raises(HnasError, match="oracle 'nb201-table' takes no option repeat.*takes: dataset, epochs"):
        search.run(configure("stage=search", "search=random", "search.query_repeat=mean"), tmp_path / "b")


def test_reinforce_over_the_whole_space_draws_only_valid_cells():
    """Most combinations of NB101's decisions are no cell; REINFORCE redraws them (rejection)."""
    from hnas.oracles import Outcome

    space = create_space("nb101")

    class Oracle:
        test_columns = {}

        def index(self, arch):
            return 0

        def query(self, arch):  # more vertices and convs train better, in this made-up benchmark
            return Outcome(val_acc=float(arch.count("c3") * 10 + len(arch)), cost_s=1.0)

        def test_accs(self, arch):
            return {}

        def describe(self):
            return {}

    universe = Universe(space, space.all_archs())
    assert universe.is_whole
    result = run_search({"name": "reinforce", "queries": 40, "budget_s": None}, Problem(universe, Oracle(), seed=1))
    queried = [r["arch"] for r in result.records]
    assert len(queried) == 40 and all(space.validate(a) == a for a in queried)
    assert len(set(queried)) > 30  # a fresh policy is close to uniform over the decisions


def test_a_search_without_the_table_says_how_to_get_it(tmp_path, monkeypatch):
    from hnas.stages import search

    monkeypatch.setenv("HNAS_DATA_DIR", str(tmp_path / "empty"))
    cfg = configure("stage=search", *SMALL, "search=random", "search.queries=3")
    with pytest.raises(HnasError, match="hnas-nb101-convert --tfrecord"):
        search.run(cfg, tmp_path / "run", tensorboard=False)
    # the probe and table settings of the zero-cost protocol come with the space
    assert configure("space=nb101").probe.batch_size == 256
    assert json.dumps(configure("space=nb101").space.__dict__) == '{"name": "nb101", "init": "port", "stem_channels": 128}'


@needs_data
def test_a_correlation_report_ranks_against_naslibs_zero_cost_json(tmp_path, monkeypatch):
    """stage.oracle=nb101-naslib-zc: our metrics and NASLib's own scores against the JSON's validation accuracy,
    each cell's values the mean over NASLib's spellings of it."""
    from scipy import stats

    from hnas.stages import precompute, report

    monkeypatch.setenv("HNAS_DATA_DIR", str(DATA))
    with open(DATA / "naslib-zc-proxies" / "zc_nasbench101.json") as f:
        entries = json.load(f)["nasbench101"]["cifar10"]
    space = create_space("nb101")
    spellings = {}
    for key, values in entries.items():
        spellings.setdefault(space.validate(arch_string(*from_naslib(key))), []).append(values)
    archs = sorted(spellings, key=lambda a: -len(spellings[a]))[:6]  # cells NASLib spells more than once first
    assert len(spellings[archs[0]]) > 1
    cfg = configure("stage=precompute", *SMALL, "stage.metrics=[synflow,params]", f"stage.archs=[{','.join(archs)}]")
    summary = precompute.run(cfg, tmp_path / "pre")
    assert summary["computed"] == 6

    corr = report.run(configure("stage=report", "stage.kind=correlation", "stage.oracle=nb101-naslib-zc", *SMALL),
                      tmp_path / "corr")
    assert set(corr["target"]) == {"cifar10 valid 108ep"} and (tmp_path / "corr" / "scatter.png").exists()
    corr = corr.set_index("metric")
    assert {"synflow", "params", "naslib_synflow", "naslib_grasp", "naslib_jacov"} <= set(corr.index)
    assert (corr["n"] == 6).all()
    mean = {a: {k: np.mean([v[k] for v in spellings[a]]) for k in ("val_accuracy", "synflow")} for a in archs}
    frame = pd.read_csv(summary["table"])
    ours = dict(zip(frame["arch"], frame["synflow"]))
    accs = [mean[a]["val_accuracy"] for a in archs]
    assert corr.loc["naslib_synflow", "spearman"] == pytest.approx(
        stats.spearmanr([mean[a]["synflow"] for a in archs], accs).statistic)
    assert corr.loc["synflow", "spearman"] == pytest.approx(stats.spearmanr([ours[a] for a in archs], accs).statistic)


@needs_data
def test_the_naslib_json_answers_reports_only_and_is_not_the_default(monkeypatch):
    from hnas.stages import report

    monkeypatch.setenv("HNAS_DATA_DIR", str(DATA))
    assert default_oracle("nb101") == "nb101-table"  # registered first, whatever the names' order
    oracle = create_oracle("nb101-naslib-zc")
    assert len(oracle.archs) == 292
    with pytest.raises(HnasError, match="no training times"):
        oracle.query(oracle.archs[0])
    with pytest.raises(HnasError, match="108 epochs only"):
        oracle.accuracy(oracle.archs[0], "cifar10", "test", 108)
    absent = next(arch_string(*cell) for cell in canonical_cells(4) if arch_string(*cell) not in oracle.archs)
    assert np.isnan(oracle.accuracy(absent, "cifar10", "valid", 108))  # counted out of the report's n
    with pytest.raises(HnasError, match="does not answer for space 'nb101'.*nb101-table, nb101-naslib-zc"):
        report.run(configure("stage=report", "stage.oracle=nb201-table", *SMALL), "unused")


@needs_data
def test_the_hnas_nb101_preset_searches_the_cells_of_its_metric_table(fixture_data, tmp_path):
    from hnas.stages import precompute, search

    archs = NB101TableOracle().archs[:12]
    small = ["experiment=hnas_nb101", "metric=grad_norm", *SMALL]
    precompute.run(configure(*small, "stage=precompute", "stage.metrics=[grad_norm,condnum]",
                             f"stage.archs=[{','.join(archs)}]"), tmp_path / "pre")
    payload = search.run(configure(*small, "search.queries=6"), tmp_path / "search", tensorboard=False)
    assert payload["query"] == {"oracle": "nb101-table", "dataset": "cifar10", "split": "valid", "epochs": 108,
                                "repeat": "mean"}
    queried = pd.read_csv(tmp_path / "search" / "queries.csv")["arch"]
    assert len(queried) == 6 and set(queried) <= set(archs) and payload["arch"] in set(queried)
