"""HNAS (Shu et al., NeurIPS 2022): Bayesian optimisation of the two hyperparameters of a training-free score.

Semantics (DESIGN.md section 4, checked against the reference's NB201 search script):
- score = mu * |M^2 - (t * scale)^2| + K / (M + 1e-6), mu = 10^c; lower is better. M is the signed metric
  value (the reference scores it without abs; `abs_metric` changes that), K the NTK condition number.
- BO over t in t_bounds, c in c_bounds, maximising the queried validation accuracy. The first n_init points
  are probed at t = linspace(t_bounds, n_init), c = init_c; the rest come from the acquisition function.
- Each BO step draws n_sample architectures uniformly with replacement (one numpy RandomState seeded with the
  run seed, separate from BO's own), appends the new ones to the candidate pool in draw order (duplicates
  dropped), drops every queried architecture from the pool, and queries the pool's lowest score (the first
  in pool order on ties; a score that is not finite ranks last). With `pool=once` (the reference's DARTS
  search, darts.md 2.1) only the first step draws: the pool is those n_sample draws, metrics computed for
  all of them before the first query.
- The result is the queried architecture with the best validation accuracy (the first on ties).

One difference from the reference, forced by bayesian-optimization 3.x: the old API silently skipped the
query when BO suggested a point it had already evaluated; here BO accepts duplicate points, so the step still
queries (a different architecture, since the earlier one left the pool) and every step counts as a query.
"""

import logging
import warnings

import numpy as np

from hnas.errors import HnasError
from hnas.search.config import HnasSearch
from hnas.search.core import SEARCHES, metric_value

log = logging.getLogger(__name__)


def hnas_score(metric, condnum, t, c, scale):
    """The HNAS score of architectures with metric values `metric` and condition numbers `condnum`."""
    metric = np.asarray(metric, dtype=float)
    condnum = np.asarray(condnum, dtype=float)
    mu = 10.0 ** c
    target = t * scale
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return mu * np.abs(metric**2 - target**2) + condnum / (metric + 1e-6)


def make_acquisition(cfg):
    """The acquisition function `cfg.acquisition` (one of config.ACQUISITIONS, checked by the schema)."""
    from bayes_opt import acquisition

    make = {
        "ei": lambda: acquisition.ExpectedImprovement(xi=cfg.xi),
        "poi": lambda: acquisition.ProbabilityOfImprovement(xi=cfg.xi),
        "ucb": lambda: acquisition.UpperConfidenceBound(kappa=cfg.kappa),
    }
    return make[cfg.acquisition]()


def quiet_suggest(optimizer):
    """BO's next point. The GP's kernel fit warns when a length scale hits its bound: harmless, and noisy."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="sklearn")
        return optimizer.suggest()


def n_init_points(cfg):
    """Probed points: `init_points` if set, else min(int(queries * init_portion), max_init) (20 queries when
    the run has only a budget)."""
    if cfg.init_points is not None:
        return int(cfg.init_points)
    queries = cfg.queries if cfg.queries is not None else 20
    return min(int(queries * cfg.init_portion), cfg.max_init)


class CandidatePool:
    """The growing pool of candidate architectures with their metric values, in insertion order."""

    def __init__(self, metrics_of, metric, condnum, abs_metric):
        self.metrics_of, self.metric, self.condnum, self.abs_metric = metrics_of, metric, condnum, abs_metric
        self.archs = []
        self.position = {}
        self.m = np.zeros(0)
        self.k = np.zeros(0)
        self.alive = np.zeros(0, dtype=bool)  # False once queried

    def add(self, draws, queried):
        fresh = [a for a in dict.fromkeys(draws) if a not in self.position and a not in queried]
        if not fresh:
            return
        values = self.metrics_of(fresh)
        m = np.array([metric_value(values[a][self.metric]) for a in fresh])
        k = np.array([metric_value(values[a][self.condnum]) for a in fresh])
        if self.abs_metric:
            m = np.abs(m)
        for a in fresh:
            self.position[a] = len(self.archs)
            self.archs.append(a)
        self.m = np.concatenate([self.m, m])
        self.k = np.concatenate([self.k, k])
        self.alive = np.concatenate([self.alive, np.ones(len(fresh), dtype=bool)])

    def remove(self, arch):
        if arch in self.position:
            self.alive[self.position[arch]] = False

    def best(self, t, c, scale):
        """(arch, score) of the lowest score among the pool's unqueried architectures; None if there is none."""
        if not self.alive.any():
            return None
        scores = hnas_score(self.m, self.k, t, c, scale)
        finite = np.where(np.isfinite(scores), scores, np.inf)
        # lexsort: unqueried first, then by score; stable, so ties go to the earliest in pool order.
        i = int(np.lexsort((finite, ~self.alive))[0])
        return self.archs[i], float(scores[i])


@SEARCHES.register("hnas")
class HNAS:
    schema = HnasSearch
    label = "HNAS"  # as papers and reports name it

    def __init__(self, cfg):
        self.cfg = cfg

    def metric_names(self, metric):
        if metric is None:
            raise HnasError("search=hnas needs a metric (metric=<name>)")
        return [metric, self.cfg.condnum]

    def search(self, problem, qlog):
        from bayes_opt import BayesianOptimization

        cfg = self.cfg
        rng = np.random.RandomState(problem.seed)  # the candidate pools (the reference's np.random.seed)
        optimizer = BayesianOptimization(
            f=None,
            pbounds={"t": tuple(cfg.t_bounds), "c": tuple(cfg.c_bounds)},
            acquisition_function=make_acquisition(cfg),
            random_state=problem.seed,
            verbose=0,
            allow_duplicate_points=True,
        )
        n_init = n_init_points(cfg)
        probes = [{"t": float(t), "c": float(cfg.init_c)} for t in np.linspace(*cfg.t_bounds, n_init)]
        pool = CandidatePool(problem.metrics_of, problem.metric, cfg.condnum, cfg.abs_metric)
        step = 0
        while not qlog.exhausted:
            if step < len(probes):
                params = probes[step]
            else:
                suggestion = quiet_suggest(optimizer)
                params = {"t": float(suggestion["t"]), "c": float(suggestion["c"])}
            if step == 0 or cfg.pool == "per_step":
                pool.add(problem.space.sample(cfg.n_sample, rng), qlog.queried)
            pick = pool.best(params["t"], params["c"], cfg.scale)
            if pick is None:
                qlog.stop("every architecture of the candidate pool has been queried")
            arch, score = pick
            val = qlog.query(arch, t=params["t"], c=params["c"], score=score)
            pool.remove(arch)
            optimizer.register(params=params, target=val)
            step += 1
        return None
