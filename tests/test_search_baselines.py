"""Baselines: each runs on the shared oracle, respects the query limit and the cost budget, is reproducible."""

import numpy as np
import pytest
import torch

from hnas.search import Universe, run_search
from hnas.search.baselines import _draw_from_universe
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


class RaggedSpace:
    """Decisions of 2, 3 and 5 options (as a graph space's edge bits beside its ops): 30 architectures."""

    name = "ragged"
    decisions = (("0", "1"), ("a", "b", "c"), ("p", "q", "r", "s", "t"))
    size = 30

    def encode(self, arch):
        return tuple(arch)

    def decode(self, choices):
        return "".join(choices)


def test_reinforce_runs_on_decisions_of_different_widths():
    import itertools

    from hnas.oracles import Outcome

    archs = ["".join(c) for c in itertools.product(*RaggedSpace.decisions)]
    best = "1ct"

    class Oracle:
        test_columns = {}

        def index(self, arch):
            return archs.index(arch)

        def query(self, arch):
            return Outcome(val_acc=float(sum(a == b for a, b in zip(arch, best))) * 10, cost_s=1.0)

        def test_accs(self, arch):
            return {}

        def describe(self):
            return {}

    from hnas.search import Problem

    problem = Problem(space=Universe(RaggedSpace(), archs), oracle=Oracle(), seed=0)
    result = run_search({"name": "reinforce", "queries": 300, "budget_s": None, "learning_rate": 0.1}, problem)
    queried = [r["arch"] for r in result.records]
    assert set(queried) <= set(archs)  # a masked option is never drawn
    assert {a[2] for a in queried} == set("pqrst")  # every option of the widest decision is
    assert np.mean([r["val_acc"] for r in result.records][-50:]) > 25  # it learns (random: 10 + 10/3 + 2)


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
    nb201_space = nb201.NB201Space()
    space = Universe(nb201_space, nb201_space.all_archs())
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
    distinct = list(space.distinct_draws(np.random.RandomState(0)))
    assert sorted(distinct) == sorted(space.archs)  # each once, then the draws stop


# ---------------------------------------------------------------------------------------------------------
# Universes: the whole space (unchanged behaviour) and a subset of it


def test_whole_space_runs_are_the_ones_recorded_before_universes_were_honoured():
    # Recorded with the code before REA / REINFORCE learnt about universes: the whole-space path is unchanged.
    problem, _ = constructed_problem(seed=0)
    assert problem.space.is_whole
    rea = run_search({"name": "rea", "queries": 25, "budget_s": None}, problem)
    assert indices(rea) == [172, 47, 117, 192, 67, 251, 195, 103, 9, 211, 116, 116, 84, 71, 107, 148, 149, 244,
                            92, 180, 124, 118, 116, 21, 122]
    reinforce = run_search({"name": "reinforce", "queries": 25, "budget_s": None, "learning_rate": 0.1},
                           constructed_problem(seed=0)[0])
    assert indices(reinforce) == [97, 119, 201, 75, 245, 65, 248, 48, 36, 50, 44, 119, 178, 32, 28, 79, 96, 99,
                                  14, 87, 126, 162, 99, 107, 175]


def _toy_universe(archs):
    return Universe(toy_space().space, archs)


def test_mutation_in_a_universe_follows_nb201_probabilities_conditioned_on_the_universe():
    # Toy edges (1,0), (2,0), (2,1), (3,0): NB201 picks edge 0 with 1/3 (node 1 has one input), edge 1 with
    # 1/6 (node 2 has two), then one of 3 other ops. Neighbours "b|a|a|a" (1/9) and "a|b|a|a" (1/18) are the
    # only ones in the universe: conditioned on it, they come with 2/3 and 1/3. "c|c|a|a" is two edges away.
    space = _toy_universe(["a|a|a|a", "b|a|a|a", "a|b|a|a", "c|c|a|a"])
    assert not space.is_whole
    rng = np.random.RandomState(0)
    children = [space.mutate("a|a|a|a", rng) for _ in range(3000)]
    assert set(children) == {"b|a|a|a", "a|b|a|a"}
    assert children.count("b|a|a|a") / 3000 == pytest.approx(2 / 3, abs=0.03)


def test_mutation_without_a_neighbour_in_the_universe_takes_the_nearest_members():
    # No member one edge from the parent: the two members two edges away are drawn uniformly, never the
    # three-edge one, never the parent itself.
    space = _toy_universe(["a|a|a|a", "b|b|a|a", "a|a|c|c", "b|b|b|a"])
    rng = np.random.RandomState(0)
    children = [space.mutate("a|a|a|a", rng) for _ in range(2000)]
    assert set(children) == {"b|b|a|a", "a|a|c|c"}
    assert children.count("b|b|a|a") / 2000 == pytest.approx(0.5, abs=0.04)
    assert _toy_universe(["a|b|c|d"]).mutate("a|b|c|d", rng) == "a|b|c|d"  # nothing else to become


def test_restricted_policy_draws_with_the_restricted_probabilities():
    space = _toy_universe(["a|a|a|a", "b|a|a|a", "d|c|b|a"])
    logits = torch.tensor(np.random.RandomState(1).normal(size=(4, 4)), dtype=torch.float64, requires_grad=True)
    p = torch.softmax(logits, dim=1).detach().numpy()
    unrestricted = np.array([np.prod([p[e, "abcd".index(op)] for e, op in enumerate(a.split("|"))])
                             for a in space.archs])
    expected = unrestricted / unrestricted.sum()
    universe = torch.from_numpy(space.choice_indices)
    generator = torch.Generator().manual_seed(0)
    draws = [_draw_from_universe(logits, space, universe, generator) for _ in range(4000)]
    frequency = np.array([sum(arch == a for arch, _ in draws) for a in space.archs]) / len(draws)
    assert frequency == pytest.approx(expected, abs=0.03)
    for arch, log_prob in draws[:10]:
        assert log_prob.item() == pytest.approx(np.log(expected[space.archs.index(arch)]), rel=1e-12)
    # The gradient flows through the restricted log-probability (its normaliser included).
    draws[0][1].backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["rea", "reinforce"])
@pytest.mark.parametrize("size", [5, 50])
def test_rea_and_reinforce_query_only_the_universe(name, size):
    full = toy_space()
    members = [full.archs[i] for i in np.random.RandomState(size).choice(len(full), size, replace=False)]
    for seed in range(3):
        problem, _ = constructed_problem(seed=seed)
        problem.space = _toy_universe(members)
        result = run_search({"name": name, "queries": 30, "budget_s": None}, problem)
        assert result.n_queries == 30 and {r["arch"] for r in result.records} <= set(members)
        assert result.arch in members
