"""Search algorithms over a benchmark oracle: HNAS and the baselines (random, REA, REINFORCE, training-free).

`run_search(cfg, problem)` runs the algorithm named by `cfg.name` (one of `SEARCHES.names()`); the search
stage (hnas.stages.search) builds the problem from a Hydra config and writes the run's outputs.
"""

from hnas.search.core import SEARCHES, Problem, SearchResult, run_search, search_config
from hnas.search.oracle import TEST_DATASETS, BenchmarkOracle, QueryLog, SearchStopped, test_column
from hnas.search.space import CellSpace, nb201_space

# Importing the algorithm modules registers them.
from hnas.search import baselines, hnas  # noqa: E402,F401  isort: skip
from hnas.search.hnas import hnas_score  # noqa: E402

__all__ = [
    "SEARCHES", "Problem", "SearchResult", "run_search", "search_config", "BenchmarkOracle", "QueryLog",
    "SearchStopped", "TEST_DATASETS", "test_column", "CellSpace", "nb201_space", "hnas_score",
]
