"""Search algorithms over a benchmark oracle: HNAS, RoBoT and the baselines (random, REA, REINFORCE, training-free).

`run_search(cfg, problem)` runs the algorithm named by `cfg.name` (one of `SEARCHES.names()`); the search
stage (hnas.stages.search) builds the problem from a Hydra config and writes the run's outputs.
"""

from hnas.search.core import SEARCHES, Problem, SearchResult, run_search, search_config
from hnas.search.oracle import QueryLog, SearchStopped
from hnas.search.space import Universe

# Importing the algorithm modules registers them.
from hnas.search import baselines, hnas, robot  # noqa: E402,F401  isort: skip
from hnas.search.hnas import hnas_score  # noqa: E402

__all__ = [
    "SEARCHES", "Problem", "SearchResult", "run_search", "search_config", "QueryLog", "SearchStopped",
    "Universe", "hnas_score",
]
