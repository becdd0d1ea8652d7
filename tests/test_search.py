"""HNAS on constructed problems whose answers are known by construction, the score, config and limits."""

import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from hnas.errors import HnasError
from hnas.search import SEARCHES, hnas_score, run_search, search_config
from hnas.search.config import HnasSearch
from hnas.search.hnas import CandidatePool, n_init_points
from hnas.search.testing import MetricDict, constructed_problem

CONF = Path(__file__).resolve().parents[1] / "conf"
# The constructed problem: arch i has M = 10 * i, so t * scale with scale 2000 targets arch 200 * t.
HNAS = {"name": "hnas", "scale": 2000.0, "n_sample": 5000}


def indices(result):
    return [r["index"] for r in result.records]


# ---------------------------------------------------------------------------------------------------------
# The score


def test_score_matches_hand_computed_values():
    # mu = 10^-1, target = 0.5 * 10 = 5: 0.1 * |4 - 25| + 3 / (2 + 1e-6)
    assert hnas_score(2.0, 3.0, t=0.5, c=-1.0, scale=10.0) == pytest.approx(2.1 + 1.4999992500003750, rel=1e-12)
    # signed metric (grasp): 1 * |16 - 0| + 8 / (-4 + 1e-6)
    assert hnas_score(-4.0, 8.0, t=0.0, c=0.0, scale=5e3) == pytest.approx(16.0 - 2.0000005000001250, rel=1e-12)
    # NB201 defaults: mu = 10^-2, target = 0.25 * 5000 = 1250
    assert hnas_score(1000.0, 100.0, t=0.25, c=-2.0, scale=5e3) == pytest.approx(
        0.01 * (1250.0**2 - 1000.0**2) + 100.0 / (1000.0 + 1e-6), rel=1e-12)
    vector = hnas_score([2.0, -4.0], [3.0, 8.0], t=0.0, c=0.0, scale=1.0)
    assert vector == pytest.approx([4.0 + 3.0 / (2.0 + 1e-6), 16.0 + 8.0 / (-4.0 + 1e-6)], rel=1e-12)


def test_pool_picks_lowest_score_excluding_queried_and_non_finite():
    archs = [f"a{i}" for i in range(6)]
    # M: 0, 10, ..., 50; arch a3 (M = 30) has a huge K, a4 a NaN metric.
    values = {a: {"m": 10.0 * i, "k": 1.0} for i, a in enumerate(archs)}
    values["a3"]["k"] = 1e9
    values["a4"]["m"] = None
    pool = CandidatePool(MetricDict(values), "m", "k", abs_metric=False)
    pool.add(["a1", "a3", "a1", "a4", "a2", "a3"], queried=set())
    assert pool.archs == ["a1", "a3", "a4", "a2"]  # draw order, duplicates dropped
    assert pool.best(t=0.3, c=0.0, scale=100.0)[0] == "a2"  # nearest M is a3, but its K/M term dominates
    pool.add(["a5", "a0"], queried={"a0"})
    assert "a0" not in pool.archs  # already queried: never enters the pool
    assert pool.best(t=0.5, c=0.0, scale=100.0)[0] == "a5"
    pool.remove("a5")
    assert pool.best(t=0.5, c=0.0, scale=100.0)[0] == "a2"  # a4 (NaN) ranks last
    for arch in ("a1", "a2", "a3"):
        pool.remove(arch)
    assert pool.best(t=0.5, c=0.0, scale=100.0)[0] == "a4"  # only the NaN one left: still picked
    pool.remove("a4")
    assert pool.best(t=0.5, c=0.0, scale=100.0) is None


def test_init_points_follow_the_reference_rule():
    assert n_init_points(search_config({"name": "hnas"})) == 5
    assert n_init_points(search_config({"name": "hnas", "queries": 100})) == 10
    assert n_init_points(search_config({"name": "hnas", "queries": 6})) == 1
    assert n_init_points(search_config({"name": "hnas", "queries": None, "budget_s": 1e4})) == 5
    assert n_init_points(search_config({"name": "hnas", "init_points": 3})) == 3


# ---------------------------------------------------------------------------------------------------------
# The loop


def test_probed_queries_are_known_by_construction():
    problem, _ = constructed_problem(seed=0)
    result = run_search({**HNAS, "queries": 5, "init_points": 5}, problem)
    assert indices(result) == [0, 50, 100, 150, 200]  # t = 0, .25, .5, .75, 1 -> arch 200 t
    assert [r["t"] for r in result.records] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert {r["c"] for r in result.records} == {-2.0}
    # Validation accuracy 100 - |i - 120| / 10: of these, arch 100 (98.0) is the best.
    assert result.index == 100 and result.val_acc == 98.0
    assert result.test_acc == {"cifar10": 93.0, "cifar100": 73.0, "ImageNet16-120": 48.0}
    costs = [100.0 + i / 1000.0 for i in (0, 50, 100, 150, 200)]
    assert result.search_cost_s == pytest.approx(sum(costs))
    assert [r["cum_cost_s"] for r in result.records] == pytest.approx(np.cumsum(costs))
    assert [r["best_index"] for r in result.records] == [0, 50, 100, 100, 100]
    assert result.metric_s == pytest.approx(0.5 * 256)  # the pool covered the space: every metric looked up
    assert result.n_queries == 5 and result.algorithm == "hnas" and result.metric == "fake"


def test_bo_steps_find_the_peak():
    problem, _ = constructed_problem(seed=0, peak=120)
    result = run_search(HNAS, problem)
    assert result.n_queries == 20
    assert len(set(indices(result))) == 20  # a queried architecture never comes back
    later = result.records[5:]
    assert all(0.0 <= r["t"] <= 1.0 and -4.0 <= r["c"] <= 0.0 for r in later)
    assert len({(r["t"], r["c"]) for r in later}) > 1  # expected improvement moves
    assert abs(result.index - 120) <= 3 and result.val_acc >= 99.7
    assert result.stop_reason == "reached 20 queries"


def test_condition_number_term_steers_the_pick():
    # With a constant K the K / M term favours large M: at c = -4 and tiny targets mu |M^2 - T^2| is small
    # against K / M for M near 0, so the pick moves away from M = 0 (arch 0).
    problem, _ = constructed_problem(seed=0, condnum=1e6)
    result = run_search({**HNAS, "queries": 1, "init_points": 1, "init_c": -4.0}, problem)
    m = 10.0 * np.arange(256)
    expected = int(np.argmin(hnas_score(m, 1e6, 0.0, -4.0, 2000.0)))
    assert expected > 0 and indices(result) == [expected]


def test_same_seed_same_queries_other_seed_other_queries():
    config = {"name": "hnas", "scale": 2000.0, "n_sample": 40, "queries": 8}
    a = run_search(config, constructed_problem(seed=0)[0])
    b = run_search(config, constructed_problem(seed=0)[0])
    c = run_search(config, constructed_problem(seed=1)[0])
    assert indices(a) == indices(b)
    assert [(r["t"], r["c"]) for r in a.records] == [(r["t"], r["c"]) for r in b.records]
    assert indices(a) != indices(c)


def test_budget_stops_before_the_query_that_would_exceed_it():
    problem, _ = constructed_problem(seed=0)
    # Costs 100, 100.05, 100.1, 100.15, ...: three queries fit in 350 s, the fourth would not.
    result = run_search({**HNAS, "queries": None, "budget_s": 350.0}, problem)
    assert result.n_queries == 3 and result.search_cost_s <= 350.0
    assert "budget" in result.stop_reason


def test_limits_and_config_errors():
    problem, _ = constructed_problem(seed=0)
    with pytest.raises(HnasError, match="needs a limit"):
        run_search({"name": "hnas", "queries": None}, problem)
    with pytest.raises(HnasError, match="no query"):
        run_search({**HNAS, "budget_s": 10.0}, problem)
    with pytest.raises(HnasError, match="unknown search algorithm"):
        run_search({"name": "hnass"}, problem)
    with pytest.raises(HnasError, match="invalid search config"):
        search_config({"name": "hnas", "n_smaple": 3})
    with pytest.raises(HnasError, match="acquisition"):
        run_search({**HNAS, "acquisition": "pi"}, problem)
    problem.metrics_of = None
    with pytest.raises(HnasError, match="no metric source"):
        run_search(HNAS, problem)


def test_ucb_and_poi_acquisitions_run():
    for acquisition in ("ucb", "poi"):
        result = run_search({**HNAS, "queries": 7, "acquisition": acquisition}, constructed_problem(seed=0)[0])
        assert result.n_queries == 7


# ---------------------------------------------------------------------------------------------------------
# Config group


def test_every_schema_is_registered_and_named_after_its_option():
    for name in SEARCHES.names():
        schema = SEARCHES.get(name).schema
        assert schema().name == name
        assert (CONF / "search" / f"{name}.yaml").is_file()
    assert HnasSearch().queries == 20 and HnasSearch().scale == 5e3 and HnasSearch().c_bounds == [-4.0, 0.0]


def test_yaml_options_compose_to_the_schema_defaults_and_validate_overrides():
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from hnas.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in SEARCHES.names():
            schema = SEARCHES.get(name).schema
            cfg = compose(overrides=[f"+search={name}"])
            assert OmegaConf.to_container(cfg.search) == OmegaConf.to_container(OmegaConf.structured(schema))
        cfg = compose(overrides=["+search=hnas", "search.queries=50", "search.budget_s=18000"])
        assert cfg.search.queries == 50 and cfg.search.budget_s == 18000.0
        assert search_config(cfg.search).queries == 50
        with pytest.raises(ConfigCompositionException):
            compose(overrides=["+search=hnas", "search.queries=many"])
        with pytest.raises(ConfigCompositionException):
            compose(overrides=["+search=rea", "search.populaton=5"])


def test_search_config_fills_defaults_from_a_partial_dict():
    cfg = search_config({"name": "rea"})
    assert (cfg.population, cfg.sample_size, cfg.budget_s, cfg.queries) == (10, 3, 12000.0, None)
    assert math.isclose(search_config({"name": "reinforce"}).learning_rate, 0.001)



# ---------------------------------------------------------------------------------------------------------
# Every setting is checked when the config is built, before any metric or query

BAD_SETTINGS = [  # (search config, what the error must say)
    ({"name": "hnas", "queries": 0}, "search.queries=0 is invalid: with fewer than 1 no query can be made"),
    ({"name": "random", "queries": -2}, "search.queries=-2"),
    ({"name": "hnas", "budget_s": 0.0}, "search.budget_s=0.0"),
    ({"name": "rea", "budget_s": -10.0}, "search.budget_s=-10.0"),
    ({"name": "rea", "budget_s": None}, "search=rea needs a limit: set search.queries or search.budget_s"),
    ({"name": "hnas", "queries": None}, "search=hnas needs a limit"),
    ({"name": "reinforce", "query_epochs": 0}, "search.query_epochs=0"),
    ({"name": "random", "universe": "table"}, "search.universe='table' is invalid: choose one of: space, metric"),
    ({"name": "hnas", "t_bounds": [1, 0]}, "search.t_bounds=[1.0, 0.0] is invalid: give two finite numbers"),
    ({"name": "hnas", "t_bounds": [0.5, 0.5]}, "search.t_bounds=[0.5, 0.5]"),
    ({"name": "hnas", "t_bounds": [0, 1, 2]}, "search.t_bounds=[0.0, 1.0, 2.0]"),
    ({"name": "hnas", "c_bounds": [0]}, "search.c_bounds=[0.0]"),
    ({"name": "hnas", "c_bounds": [-4, float("inf")]}, "search.c_bounds=[-4.0, inf]"),
    ({"name": "hnas", "init_portion": 1.5}, "search.init_portion=1.5"),
    ({"name": "hnas", "init_portion": -0.1}, "search.init_portion=-0.1"),
    ({"name": "hnas", "max_init": -1}, "search.max_init=-1"),
    ({"name": "hnas", "init_points": -1}, "search.init_points=-1"),
    ({"name": "hnas", "init_c": 1.0}, "search.init_c=1.0 is invalid: give a number within search.c_bounds"),
    ({"name": "hnas", "acquisition": "pi"}, "search.acquisition='pi' is invalid: choose one of: ei, ucb, poi"),
    ({"name": "hnas", "xi": -0.01}, "search.xi=-0.01"),
    ({"name": "hnas", "kappa": -1.0}, "search.kappa=-1.0"),
    ({"name": "hnas", "n_sample": 0}, "search.n_sample=0"),
    ({"name": "hnas", "scale": 0.0}, "search.scale=0.0"),
    ({"name": "hnas", "condnum": "foo"}, "search.condnum='foo' is invalid: unknown metric 'foo'; choose one of: "),
    ({"name": "rea", "population": 0}, "search.population=0"),
    ({"name": "rea", "sample_size": 0}, "search.sample_size=0"),
    ({"name": "reinforce", "learning_rate": 0.0}, "search.learning_rate=0.0"),
    ({"name": "reinforce", "ema_momentum": 1.0}, "search.ema_momentum=1.0 is invalid: give a number in [0, 1)"),
    ({"name": "reinforce", "ema_momentum": -0.5}, "search.ema_momentum=-0.5"),
    ({"name": "reinforce", "init_std": -1e-3}, "search.init_std=-0.001"),
    ({"name": "training_free", "candidates": 0}, "search.candidates=0"),
    ({"name": "training_free", "query_top_k": -1}, "search.query_top_k=-1"),
]


@pytest.mark.parametrize("config, message", BAD_SETTINGS, ids=[m.split(" ")[0] for _, m in BAD_SETTINGS])
def test_bad_settings_are_refused_naming_the_key(config, message):
    with pytest.raises(HnasError) as error:
        search_config(config)
    assert message in str(error.value)


def test_unknown_condnum_lists_the_registered_metrics():
    from hnas.metrics import list_metrics

    with pytest.raises(HnasError) as error:
        search_config({"name": "hnas", "condnum": "foo"})
    assert str(error.value).endswith(", ".join(list_metrics()))


def test_boundary_settings_are_accepted():
    cfg = search_config({"name": "hnas", "queries": 1, "init_portion": 1.0, "max_init": 0, "init_points": 0,
                         "init_c": 0.0, "xi": 0.0, "kappa": 0.0, "n_sample": 1, "acquisition": "ucb",
                         "condnum": "snip", "universe": "metric_table"})
    assert (cfg.queries, cfg.init_portion, cfg.init_c, cfg.condnum) == (1, 1.0, 0.0, "snip")
    assert search_config({"name": "hnas", "init_portion": 0.0}).init_portion == 0.0
    assert search_config({"name": "reinforce", "ema_momentum": 0.0}).ema_momentum == 0.0
    # training_free ends after its ranking: it needs no limit.
    free = search_config({"name": "training_free", "query_top_k": 0})
    assert (free.queries, free.budget_s, free.query_top_k) == (None, None, 0)


def test_schema_dataclasses_check_their_values_when_built_directly():
    from hnas.search.config import REASearch

    with pytest.raises(HnasError, match="search.t_bounds"):
        HnasSearch(t_bounds=[1.0, 0.0])
    with pytest.raises(HnasError, match="search.sample_size"):
        REASearch(sample_size=0)


def test_composed_config_is_checked_when_built():
    # The app builds the whole composed config with OmegaConf.to_object: that runs the same checks.
    from conftest import compose

    cfg = compose("search=rea", "search.population=0")
    with pytest.raises(HnasError, match="search.population=0"):
        OmegaConf.to_object(cfg)
    assert OmegaConf.to_object(compose("search=rea")).search.population == 10
