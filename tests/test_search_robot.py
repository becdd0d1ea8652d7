"""RoBoT (search=robot): BO over metric weights, then greedy picks by the best combination."""

import numpy as np
import pytest

from hnas.errors import HnasError
from hnas.search import run_search, search_config
from hnas.search.robot import normalised_columns, ranked
from hnas.search.testing import MetricDict, constructed_problem


def two_metric_problem(peak=0, seed=0):
    """The toy problem with metrics `snip` = i and `synflow` = noise: only a negative weight on `snip`
    reaches the best architecture, i = `peak` = 0."""
    problem, table = constructed_problem(seed=seed, peak=peak)
    rng = np.random.RandomState(1)
    problem.metrics_of = MetricDict({a: {"snip": float(i), "synflow": float(rng.rand())}
                                     for i, a in enumerate(problem.space.archs)}, seconds_per_arch=0.5)
    return problem, table


def test_normalisation_and_ranking_follow_the_reference():
    archs = ["a", "b", "c", "d"]
    values = {"a": {"x": 2.0, "k": 5.0}, "b": {"x": 4.0, "k": 5.0}, "c": {"x": float("nan"), "k": 5.0},
              "d": {"x": 6.0, "k": 5.0}}
    columns = normalised_columns(values, archs, ["x", "k"])
    np.testing.assert_array_equal(columns[:, 0], [0.0, 0.5, np.nan, 1.0])
    np.testing.assert_array_equal(columns[:, 1], [5.0, 5.0, 5.0, 5.0])  # one value everywhere: left as it is
    # A missing value adds nothing; equal scores go to the last position first (the reference's flipped argsort).
    assert ranked(columns, [1.0, 0.0]).tolist() == [3, 1, 2, 0]
    assert ranked(columns, [0.0, 1.0]).tolist() == [3, 2, 1, 0]


def test_robot_finds_the_combination_that_reaches_the_best_architecture():
    problem, table = two_metric_problem()
    result = run_search({"name": "robot", "metrics": ["snip", "synflow"], "queries": 20}, problem)
    assert result.index == 0 and result.val_acc == table.val.max()
    assert result.metric is None and result.metric_s == 0.5 * 256  # no single metric; read every row
    queried = [r["arch"] for r in result.records]
    assert len(queried) == len(set(queried)) == result.n_queries == 20  # distinct queries, each charged once
    assert result.search_cost_s == pytest.approx(sum(table.cost[table.index_of(a)] for a in queried))
    again = run_search({"name": "robot", "metrics": ["snip", "synflow"], "queries": 20}, two_metric_problem()[0])
    assert [r["arch"] for r in again.records] == queried  # seeded: the same run twice


def test_a_repeated_pick_costs_nothing_and_exploitation_fills_the_queries():
    problem, _ = two_metric_problem()
    # One metric: every weight < 0 picks architecture 0 and every weight > 0 architecture 255, so the 20 BO
    # evaluations query at most 2 architectures; the best weights' ranking supplies the rest, in order.
    result = run_search({"name": "robot", "metrics": ["snip"], "queries": 20}, problem)
    indices = [r["index"] for r in result.records]
    assert result.n_queries == 20 and len(set(indices)) == 20
    explored = indices[:2] if set(indices[:2]) == {0, 255} else indices[:1]
    assert set(explored) <= {0, 255}
    # The best weights are negative (architecture 0 is the best): ascending i, skipping what was queried.
    assert indices[len(explored):] == [i for i in range(256) if i not in explored][:20 - len(explored)]


def test_robot_settings_are_checked():
    with pytest.raises(HnasError, match="search.metrics"):
        search_config({"name": "robot", "metrics": ["no_such_metric"]})
    with pytest.raises(HnasError, match="search.queries"):
        search_config({"name": "robot", "queries": None, "budget_s": 100.0})
    with pytest.raises(HnasError, match="search.weight_bounds"):
        search_config({"name": "robot", "weight_bounds": [1, -1]})


def test_evaluations_beyond_the_query_budget_are_free_and_never_exceed_it():
    # On the one-metric problem BO can reach only architectures 0 and 255, so 30 evaluations still query at
    # most those two: the extra evaluations repeat recorded answers at no cost, and exploitation gets the rest.
    runs = {explore: run_search({"name": "robot", "metrics": ["snip"], "queries": 20, "explore": explore},
                                two_metric_problem()[0]) for explore in (None, 30)}
    assert [r["index"] for r in runs[30].records] == [r["index"] for r in runs[None].records]
    assert runs[30].search_cost_s == runs[None].search_cost_s
    # Architectures on a circle (snip = cos, synflow = sin): each weight direction picks another one, so 40
    # evaluations would reach about 40; the exploration stops at the 20th distinct query.
    problem, _ = constructed_problem(peak=0)
    angle = 2 * np.pi * np.arange(len(problem.space.archs)) / len(problem.space.archs)
    problem.metrics_of = MetricDict({a: {"snip": float(np.cos(t)), "synflow": float(np.sin(t))}
                                     for a, t in zip(problem.space.archs, angle)})
    result = run_search({"name": "robot", "metrics": ["snip", "synflow"], "queries": 20, "explore": 40}, problem)
    queried = [r["arch"] for r in result.records]
    assert len(queried) == len(set(queried)) == result.n_queries == 20
