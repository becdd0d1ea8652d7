"""Baselines: each runs on the shared oracle, respects the query limit and the cost budget, is reproducible."""

import numpy as np
import pytest

from hnas.search import nb201_space, run_search
from hnas.search.testing import MetricDict, constructed_problem, toy_space
from hnas.spaces import nb201

QUERY_ALGORITHMS = ("random", "rea", "reinforce")


def indices(result):
    return [r["index"] for r in result.records]


@pytest.mark.parametrize("name", QUERY_ALGORITHMS)
def test_query_limit_and_reproducibility(name):
    config = {"name": name, "queries": 25, "budget_s": None}
    a = run_search(config, constructed_problem(seed=0)[0])
    b = run_search(config, constructed_problem(seed=0)[0])
    c = run_search(config, constructed_problem(seed=1)[0])
    assert a.n_queries == 25 and a.stop_reason == "reached 25 queries"
    assert indices(a) == indices(b) and indices(a) != indices(c)
    # The result is the queried architecture with the best validation accuracy (the first on ties).
    best = max(a.records, key=lambda r: r["val_acc"])
    assert a.index == best["index"] and a.val_acc == best["val_acc"]
    assert a.records[-1]["best_index"] == a.index
    assert a.search_cost_s == pytest.approx(sum(r["cost_s"] for r in a.records))
    assert a.metric is None and a.metric_s == 0.0  # these read no metric


@pytest.mark.parametrize("name", QUERY_ALGORITHMS)
def test_budget(name):
    problem, _ = constructed_problem(seed=3)
    result = run_search({"name": name, "queries": None, "budget_s": 1234.0}, problem)
    # Costs are 100 + i / 1000 s: 12 queries fit, the 13th would exceed the budget.
    assert result.n_queries == 12 and result.search_cost_s <= 1234.0
    assert "budget" in result.stop_reason


def test_random_search_queries_distinct_architectures():
    result = run_search({"name": "random", "queries": 200}, constructed_problem(seed=0)[0])
    assert len(set(indices(result))) == 200


def test_rea_children_are_one_edge_mutations_of_the_population():
    problem, _ = constructed_problem(seed=0)
    result = run_search({"name": "rea", "queries": 60, "budget_s": None, "population": 10, "sample_size": 3},
                        problem)
    archs = [r["arch"] for r in result.records]
    for step in range(10, 60):
        # The population at this step is the 10 most recent queries; the child differs from one in one edge.
        population = archs[step - 10:step]
        child = archs[step].split("|")
        distances = [sum(x != y for x, y in zip(child, p.split("|"))) for p in population]
        assert 1 in distances
    # Selection pressure: the second half of the run is better than the random start.
    vals = [r["val_acc"] for r in result.records]
    assert np.mean(vals[30:]) > np.mean(vals[:10])


def test_reinforce_policy_learns():
    problem, _ = constructed_problem(seed=0)
    result = run_search({"name": "reinforce", "queries": 300, "budget_s": None, "learning_rate": 0.1}, problem)
    vals = [r["val_acc"] for r in result.records]
    assert np.mean(vals[-50:]) > np.mean(vals[:50]) + 2.0


def test_training_free_top1_makes_no_query():
    problem, _ = constructed_problem(seed=0)
    result = run_search({"name": "training_free", "candidates": 2000}, problem)
    # 2,000 draws cover the 256 architectures; the largest metric (10 * i) is arch 255.
    assert result.n_queries == 0 and result.search_cost_s == 0.0 and result.records == []
    assert result.index == 255 and result.metric == "fake"
    assert result.metric_s == pytest.approx(0.5 * 256)


def test_training_free_queries_the_top_k_in_rank_order():
    problem, _ = constructed_problem(seed=0, peak=250)
    result = run_search({"name": "training_free", "candidates": 2000, "query_top_k": 8}, problem)
    assert indices(result) == list(range(255, 247, -1))
    assert result.index == 250  # the best validation accuracy among them
    assert [r["score"] for r in result.records] == [10.0 * i for i in range(255, 247, -1)]
    limited = run_search({"name": "training_free", "candidates": 2000, "query_top_k": 8, "queries": 3},
                         constructed_problem(seed=0, peak=250)[0])
    assert limited.n_queries == 3
    budget = run_search({"name": "training_free", "candidates": 2000, "query_top_k": 8, "budget_s": 50.0},
                        constructed_problem(seed=0, peak=250)[0])
    assert budget.n_queries == 0 and budget.index == 255  # no query fits: the top-ranked one is the answer


def test_training_free_abs_and_non_finite_metrics():
    problem, _ = constructed_problem(seed=0)
    archs = problem.space.archs
    values = {a: {"fake": -1.0} for a in archs}
    values[archs[7]]["fake"] = -50.0  # largest |M|
    values[archs[9]]["fake"] = 20.0  # largest signed M
    values[archs[11]]["fake"] = float("nan")
    problem.metrics_of = MetricDict(values)
    assert run_search({"name": "training_free"}, problem).index == 7
    assert run_search({"name": "training_free", "abs_metric": False}, problem).index == 9


def test_mutation_changes_exactly_one_edge():
    rng = np.random.RandomState(0)
    space = nb201_space()
    arch = nb201.EXAMPLE
    edges = []
    for _ in range(300):
        child = space.mutate(arch, rng)
        diff = [e for e, (x, y) in enumerate(zip(nb201.parse(arch), nb201.parse(child))) if x != y]
        assert len(diff) == 1 and nb201.validate(child) == child
        edges.append(diff[0])
    # NB201's choice: a node uniformly, then one of its inputs: edge (1, 0) gets 1/3, the others less.
    counts = np.bincount(edges, minlength=6) / len(edges)
    assert counts[0] > 0.25 and counts[3:].max() < 0.17


def test_space_sampling_matches_numpy_choice_over_the_given_order():
    space = toy_space()
    draws = space.sample(50, np.random.RandomState(5))
    expected = [space.archs[i] for i in np.random.RandomState(5).choice(len(space), 50)]
    assert draws == expected
    assert len(set(space.sample_distinct(300, np.random.RandomState(0)))) == len(space)
