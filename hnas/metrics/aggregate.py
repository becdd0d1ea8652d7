"""Combined metrics: a metric computed from other metrics' values, `metric=<name>` with `metric.of=[...]`
(the components) and `metric.options` (its parameters). One registry, COMBINED; each entry says how it
combines an (N, K) array of component values into N values.

- `agg`: rank aggregation, AZ-NAS's and VKDNW's rule (proxies.md). Over a population of N architectures,
  each component's values are ranked ascending (ties get their average rank, scipy's `rankdata`), and an
  architecture's aggregate is sum_k log(rank_k / N). Here it is sum_k log(rank_k), the same plus K log N: the
  same order within a population, and never negative, so that |value| orders as the value does
  (training_free ranks by |metric|); K log N for the best in every component, 0 for the worst. A rank
  depends on the population, so an aggregate is only comparable within one: a search's universe (NB201:
  every architecture it may propose, the whole metric table with `search.universe=metric_table`), or the
  architectures asked for together when the universe cannot be listed (the DARTS pool is asked for at
  once). A value that is missing or not finite ranks lowest.
- `reg_swap`: reg-SWAP (Peng et al., ICLR 2024): swap * exp(-(P - mu)^2 / sigma), P = params / 1e3 (its
  `count_parameters`, in thousands), mu and sigma the user's (`metric.options.mu`, `metric.options.sigma`:
  the paper tunes them per space and publishes none for NB201). Row by row: no population.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hnas.registry import Registry

AGGREGATE = "agg"
# The default components: on the whole shipped reference-layout NB201 table (15,625 architectures), their
# aggregate has Spearman 0.904 with the 200-epoch CIFAR-10 test accuracy (each alone: 0.78, 0.70, 0.79, 0.75).
DEFAULT_COMPONENTS = ("synflow", "jacob_cov", "naswot", "flops")


@dataclass(frozen=True)
class Combined:
    """How a combined metric is made: `combine(columns, **options)` -> one value per row of `columns`."""

    name: str
    combine: object
    components: tuple  # the default `metric.of`
    fixed_components: bool  # `metric.of` is part of the definition
    options: tuple = ()  # the names of the numbers `metric.options` must give

    def problems(self, of, options):
        """What is wrong with these settings (empty when nothing is), as messages naming the key."""
        from hnas.metrics import list_metrics

        found = []
        unknown = [m for m in of if m not in list_metrics()]
        if self.fixed_components and list(of) != list(self.components):
            found.append(("metric.of", f"metric={self.name} is made of {list(self.components)}"))
        elif len(of) < 2 or unknown or len(set(of)) != len(of):
            found.append(("metric.of", f"metric={self.name} combines 2 or more distinct registered metrics "
                                       f"({', '.join(list_metrics())})"))
        missing = [o for o in self.options if options.get(o) is None]
        extra = sorted(set(options) - set(self.options))
        if missing or extra:
            found.append(("metric.options", f"metric={self.name} takes the numbers {list(self.options) or 'none'}"
                                            f"{f'; set metric.options.{missing[0]}=<number>' if missing else ''}"))
        return found


COMBINED = Registry("combined metric")


def combined_label(name, components):
    """How reports name a combined metric: with its components, 'agg(synflow,flops)'."""
    return f"{name}({','.join(components)})"


def log_rank_sum(columns):
    """sum_k log(rank_k) per row of an (N, K) array of component values."""
    columns = np.asarray(columns, dtype=float)
    if len(columns) == 0:
        return np.zeros(0)
    # Imported here: scipy.stats takes seconds to import, and every run.py start imports this module.
    from scipy import stats

    columns = np.where(np.isfinite(columns), columns, -np.inf)
    return sum(np.log(stats.rankdata(columns[:, k])) for k in range(columns.shape[1]))


def regularised_swap(columns, mu, sigma):
    """swap * exp(-(params / 1e3 - mu)^2 / sigma) per row of an (N, 2) array of (swap, params)."""
    columns = np.asarray(columns, dtype=float).reshape(-1, 2)
    return columns[:, 0] * np.exp(-((columns[:, 1] / 1e3 - mu) ** 2) / sigma)


COMBINED.register(AGGREGATE)(Combined(AGGREGATE, log_rank_sum, DEFAULT_COMPONENTS, fixed_components=False))
COMBINED.register("reg_swap")(Combined("reg_swap", regularised_swap, ("swap", "params"), fixed_components=True,
                                       options=("mu", "sigma")))


class CombinedMetric:
    """A metric source (`__call__(archs) -> {arch: {name: value}}`) that adds the combined metric `name` of
    `components` to what `source` gives, computed over `population` (None: over the architectures of each
    call). `names`: the other metrics passed through from `source`."""

    def __init__(self, source, name, combine, components, names=(), population=None):
        self.source, self.name, self.combine, self.components = source, name, combine, list(components)
        self.names = [n for n in names if n != name]
        self.population = None if population is None else list(dict.fromkeys(population))
        self._values = None  # {arch: value} over the population, computed once

    @property
    def metric_seconds(self):
        return getattr(self.source, "metric_seconds", 0.0)

    def _combined(self, archs):
        values = self.source(archs)
        column = self.combine([[values[a][c] for c in self.components] for a in archs])
        return dict(zip(archs, np.asarray(column, dtype=float).tolist())), values

    def __call__(self, archs):
        archs = list(archs)
        if self.population is None:
            combined, values = self._combined(list(dict.fromkeys(archs)))
        else:
            if self._values is None:
                self._values = self._combined(self.population)[0]
            outside = [a for a in archs if a not in self._values]
            if outside:
                raise ValueError(f"{len(outside)} architectures are outside the population the metric "
                                 f"{self.name} is computed over, e.g. {outside[0]}")
            combined, values = self._values, self.source(archs)
        return {a: {self.name: combined[a], **{n: values[a][n] for n in self.names}} for a in archs}
