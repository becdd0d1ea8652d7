"""Rank aggregation: a metric made of other metrics, `metric=agg` with `metric.of=[...]`.

AZ-NAS's and VKDNW's rule (proxies.md): over a population of N architectures, each component's values are
ranked ascending (ties get their average rank, scipy's `rankdata`), and an architecture's aggregate is
sum_k log(rank_k / N). Here it is sum_k log(rank_k), the same plus K log N: the same order within a
population, and never negative, so that |value| orders as the value does (training_free ranks by |metric|);
K log N for the best in every component, 0 for the worst. A rank depends on the population,
so an aggregate is only comparable within one: a search's universe (NB201: every architecture it may
propose, the whole metric table with `search.universe=metric_table`), or the architectures asked for
together when the universe cannot be listed (the DARTS pool is asked for at once). A value that is missing
or not finite ranks lowest.
"""

import numpy as np
from scipy import stats

AGGREGATE = "agg"
# The default components: on the 5,609 architectures of the shipped reference-layout NB201 table, their
# aggregate has Spearman 0.903 with the 200-epoch CIFAR-10 test accuracy (each alone: 0.78, 0.69, 0.79, 0.75).
DEFAULT_COMPONENTS = ("synflow", "jacob_cov", "naswot", "flops")


def log_rank_sum(columns):
    """sum_k log(rank_k) per row of an (N, K) array of component values."""
    columns = np.asarray(columns, dtype=float)
    if len(columns) == 0:
        return np.zeros(0)
    columns = np.where(np.isfinite(columns), columns, -np.inf)
    return sum(np.log(stats.rankdata(columns[:, k])) for k in range(columns.shape[1]))


class RankAggregate:
    """A metric source (`__call__(archs) -> {arch: {name: value}}`) that adds the aggregate `name` of
    `components` to what `source` gives, ranked over `population` (None: over the architectures of each call).
    `names`: the other metrics passed through from `source`."""

    def __init__(self, source, name, components, names=(), population=None):
        self.source, self.name, self.components = source, name, list(components)
        self.names = [n for n in names if n != name]
        self.population = None if population is None else list(dict.fromkeys(population))
        self._values = None  # {arch: aggregate} over the population, computed once

    @property
    def metric_seconds(self):
        return getattr(self.source, "metric_seconds", 0.0)

    def _ranked(self, archs):
        values = self.source(archs)
        column = log_rank_sum([[values[a][c] for c in self.components] for a in archs])
        return dict(zip(archs, column.tolist())), values

    def __call__(self, archs):
        archs = list(archs)
        if self.population is None:
            aggregate, values = self._ranked(list(dict.fromkeys(archs)))
        else:
            if self._values is None:
                self._values = self._ranked(self.population)[0]
            outside = [a for a in archs if a not in self._values]
            if outside:
                raise ValueError(f"{len(outside)} architectures are outside the population the aggregate ranks "
                                 f"over, e.g. {outside[0]}")
            aggregate, values = self._values, self.source(archs)
        return {a: {self.name: aggregate[a], **{n: values[a][n] for n in self.names}} for a in archs}
