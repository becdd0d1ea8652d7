"""Baselines on the same oracle and cost accounting as HNAS: random search, REA, REINFORCE, training-free.

All randomness comes from generators seeded with the run seed (numpy RandomState, torch.Generator), never
from global state, so a run is reproducible whatever ran before it in the process.
"""

import math
from collections import deque

import numpy as np
import torch

from hnas.errors import HnasError
from hnas.search.config import REASearch, RandomSearch, ReinforceSearch, TrainingFreeSearch
from hnas.search.core import SEARCHES, metric_value
from hnas.search.oracle import SearchStopped


@SEARCHES.register("random")
class RandomSearch:
    """Query distinct uniformly random architectures (a seeded permutation of the space) until a limit."""

    schema = RandomSearch
    label = "Random"  # as papers and reports name it

    def __init__(self, cfg):
        self.cfg = cfg

    def metric_names(self, metric):
        return []

    def search(self, problem, qlog):
        for arch in problem.space.distinct_draws(np.random.RandomState(problem.seed)):
            if qlog.exhausted:
                break
            qlog.query(arch)
        return None


@SEARCHES.register("rea")
class RegularizedEvolution:
    """Regularised evolution (Real et al. 2019) as NAS-Bench-201 runs it.

    A population of `population` uniform random architectures (with replacement); then, per cycle, draw
    `sample_size` members with replacement, mutate the best of them by validation accuracy (one edge gets a
    different op), query the child, append it and drop the oldest member. Repeated architectures are queried
    and charged again, as in NB201's REA. Within a universe smaller than the space, the population and the
    children stay in it (hnas.search.space.Universe.mutate says how the child is drawn then).
    """

    schema = REASearch
    label = "REA"  # as papers and reports name it

    def __init__(self, cfg):
        self.cfg = cfg

    def metric_names(self, metric):
        return []

    def search(self, problem, qlog):
        rng = np.random.RandomState(problem.seed)
        space, population = problem.space, deque()
        while len(population) < self.cfg.population and not qlog.exhausted:
            arch = space.sample(1, rng)[0]
            population.append((arch, qlog.query(arch)))
        while not qlog.exhausted:
            sample = [population[rng.randint(len(population))] for _ in range(self.cfg.sample_size)]
            parent = max(sample, key=lambda member: member[1])  # first of the best on ties
            child = space.mutate(parent[0], rng)
            population.append((child, qlog.query(child)))
            population.popleft()
        return None


class _EMA:
    """Bias-corrected exponential moving average, the reward baseline of NB201's REINFORCE."""

    def __init__(self, momentum):
        self.momentum, self.numerator, self.denominator = momentum, 0.0, 0.0

    def update(self, value):
        self.numerator = self.momentum * self.numerator + (1 - self.momentum) * value
        self.denominator = self.momentum * self.denominator + (1 - self.momentum)

    def value(self):
        return self.numerator / self.denominator


@SEARCHES.register("reinforce")
class Reinforce:
    """REINFORCE (Williams 1992) with NAS-Bench-201's settings.

    Policy: independent softmax over the ops of each edge, logits initialised to init_std * N(0, 1). Each
    step samples one architecture, queries it (reward = validation accuracy in %), updates the EMA baseline
    with the reward, then takes one Adam step on -(log-probability of the architecture) * (reward - baseline),
    the log-probability being the sum of the edges' log-probabilities.

    Within a universe smaller than the space the policy is restricted to it: P(arch) is proportional to the
    product of the edges' probabilities over the universe's architectures only, the draw is made from that
    distribution (with the same seeded generator), and the log-probability in the loss is the restricted one
    (the sum over the edges minus its logsumexp over the universe).

    Decisions may have different numbers of options (a graph space: an edge bit beside an op): the logits
    are one row per decision, as wide as the widest, and the entries past a decision's options are masked
    out (probability 0). Where all decisions are as wide, nothing is masked.
    """

    schema = ReinforceSearch
    label = "REINFORCE"  # as papers and reports name it

    def __init__(self, cfg):
        self.cfg = cfg

    def metric_names(self, metric):
        return []

    def search(self, problem, qlog):
        space = problem.space
        widths = torch.tensor([len(options) for options in space.decisions])
        generator = torch.Generator().manual_seed(int(problem.seed))
        weights = torch.nn.Parameter(
            self.cfg.init_std * torch.randn(len(widths), int(widths.max()), generator=generator,
                                            dtype=torch.float64))
        absent = torch.arange(int(widths.max()))[None, :] >= widths[:, None]
        optimizer = torch.optim.Adam([weights], lr=self.cfg.learning_rate)
        baseline = _EMA(self.cfg.ema_momentum)
        universe = None if space.is_whole else torch.from_numpy(space.choice_indices)
        while not qlog.exhausted:
            logits = weights.masked_fill(absent, -math.inf) if absent.any() else weights
            if universe is None:
                arch, log_prob = _draw_from_space(logits, space, generator)
            else:
                arch, log_prob = _draw_from_universe(logits, space, universe, generator)
            reward = qlog.query(arch)
            baseline.update(reward)
            loss = -log_prob * (reward - baseline.value())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return None


MAX_REDRAWS = 10_000


def _draw_from_space(logits, space, generator):
    """One option per decision from its softmax: (arch, its log-probability, differentiable in `logits`).

    In a space where some combinations are no architecture (an NB101 spelling without an input-output path,
    or with too many edges), `decode` refuses them and the draw is repeated: the policy restricted to valid
    architectures, by rejection. The log-probability is the unrestricted one (the normaliser over the valid
    combinations has no closed form); where every combination is valid (NB201) nothing changes."""
    for _ in range(MAX_REDRAWS):
        with torch.no_grad():
            action = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1)
        try:
            arch = space.decode(tuple(options[i] for options, i in zip(space.decisions, action.tolist())))
        except HnasError:
            continue
        return arch, torch.log_softmax(logits, dim=1).gather(1, action[:, None]).sum()
    raise HnasError(f"search=reinforce drew {MAX_REDRAWS} combinations of {space.space.name}'s decisions and "
                    "none was a valid architecture: the policy has collapsed onto invalid ones")


def _draw_from_universe(logits, space, universe, generator):
    """One of the universe's architectures (`universe`: their option indices, one row each) from the policy
    restricted to them: (arch, its restricted log-probability, differentiable in `logits`)."""
    decisions = torch.arange(len(space.decisions))
    log_p = torch.log_softmax(logits, dim=1)[decisions, universe].sum(dim=1)  # unrestricted, per member
    restricted = log_p - torch.logsumexp(log_p, dim=0)
    with torch.no_grad():
        member = int(torch.multinomial(restricted.exp(), 1, generator=generator))
    return space.archs[member], restricted[member]


@SEARCHES.register("training_free")
class TrainingFree:
    """Rank candidates by the metric alone (the zero-cost baseline of the HNAS reference).

    `candidates` uniform draws with replacement, duplicates removed, ranked by the metric, largest first
    (by |metric| with `abs_metric`, as the reference; a value that is not finite ranks last). With
    query_top_k = 0 the top-ranked architecture is the result and nothing is queried; otherwise the top k are
    queried in rank order (within the query / budget limits) and the best by validation accuracy wins.
    """

    schema = TrainingFreeSearch
    label = "Training-free"  # as papers and reports name it

    def __init__(self, cfg):
        self.cfg = cfg

    def metric_names(self, metric):
        if metric is None:
            raise HnasError("search=training_free needs a metric (metric=<name>)")
        return [metric]

    def search(self, problem, qlog):
        rng = np.random.RandomState(problem.seed)
        candidates = list(dict.fromkeys(problem.space.sample(self.cfg.candidates, rng)))
        values = problem.metrics_of(candidates)
        m = np.array([metric_value(values[a][problem.metric]) for a in candidates])
        if self.cfg.abs_metric:
            m = np.abs(m)
        ranked = np.argsort(-np.where(np.isfinite(m), m, -np.inf), kind="stable")
        try:
            for i in ranked[: self.cfg.query_top_k]:
                if qlog.exhausted:
                    break
                qlog.query(candidates[i], score=m[i])
        except SearchStopped:
            pass
        # No query made (k = 0, or a limit stopped the first): the top-ranked architecture is the answer.
        return candidates[ranked[0]] if qlog.best is None else None
