"""RoBoT (He, Shu, Dai & Low, ICLR 2024): robustified training-free NAS by Bayesian optimisation over the
weights of a linear combination of training-free metrics (proxies.md; its search_nb201.py).

Semantics, as the reference runs it on NAS-Bench-201:
- every metric of `metrics` is min-max normalised over the universe (a metric with one value everywhere is
  left as it is); a missing or non-finite value adds nothing to a score;
- exploration: `explore` BO evaluations (default: `queries`; the first at a random point, the rest UCB) over
  weights w in `weight_bounds` per metric. An evaluation scores the universe by sum_k w_k m_k, takes the
  highest score (the last in universe order on ties, as the reference's flipped argsort) and returns its
  validation accuracy: queried if it is new, else the recorded one, at no cost (the reference counts
  distinct architectures only). So `explore` may exceed `queries`; the exploration ends at the
  `queries`-th distinct query in any case;
- exploitation: with the weights of the best evaluation (the latest on ties), the universe in descending
  score order fills the queries up to `queries` distinct architectures;
- the result is the queried architecture with the best validation accuracy.
"""

import warnings

import numpy as np

from hnas.search.config import RobotSearch
from hnas.search.core import SEARCHES, metric_value
from hnas.search.hnas import quiet_suggest


def normalised_columns(values, archs, metrics):
    """(len(archs), len(metrics)) array of min-max normalised metric values, NaN where a value is missing."""
    columns = np.array([[metric_value(values[a][m]) for m in metrics] for a in archs], dtype=float)
    columns[~np.isfinite(columns)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column
        low, high = np.nanmin(columns, axis=0), np.nanmax(columns, axis=0)
    span = high - low
    varies = np.isfinite(span) & (span > 0)
    columns[:, varies] = (columns[:, varies] - low[varies]) / span[varies]
    return columns


def ranked(columns, weights):
    """Universe positions by descending score sum_k w_k m_k (NaN terms add 0), ties last-position first."""
    scores = np.where(np.isnan(columns), 0.0, columns) @ np.asarray(weights, dtype=float)
    order = np.argsort(scores, kind="stable")
    return order[::-1]


@SEARCHES.register("robot")
class RoBoT:
    schema = RobotSearch
    label = "RoBoT"  # as papers and reports name it

    def __init__(self, cfg):
        self.cfg = cfg

    def metric_names(self, metric):
        return list(self.cfg.metrics)

    def result_metric(self, metric):
        return None  # it combines search.metrics, whatever metric= says

    def search(self, problem, qlog):
        from bayes_opt import BayesianOptimization, acquisition

        cfg = self.cfg
        archs = problem.space.archs
        columns = normalised_columns(problem.metrics_of(archs), archs, cfg.metrics)
        keys = [f"w{k:02d}_{m}" for k, m in enumerate(cfg.metrics)]  # BO sorts its keys: keep the metric order
        optimizer = BayesianOptimization(
            f=None, pbounds={key: tuple(cfg.weight_bounds) for key in keys},
            acquisition_function=acquisition.UpperConfidenceBound(kappa=cfg.kappa), random_state=problem.seed,
            verbose=0, allow_duplicate_points=True)
        answers = {}  # arch -> validation accuracy (each queried once)
        best = None  # (validation accuracy, weights) of the best evaluation so far
        for _ in range(cfg.explore or cfg.queries):
            if qlog.exhausted:
                break
            suggestion = quiet_suggest(optimizer)
            weights = [float(suggestion[key]) for key in keys]
            arch = archs[ranked(columns, weights)[0]]
            if arch not in answers:
                answers[arch] = qlog.query(arch)
            if best is None or answers[arch] >= best[0]:
                best = (answers[arch], weights)
            optimizer.register(params=dict(zip(keys, weights)), target=answers[arch])
        if best is not None:
            for i in ranked(columns, best[1]):
                if qlog.exhausted:
                    break
                if archs[i] not in answers:
                    answers[archs[i]] = qlog.query(archs[i])
        return None

