"""Where data and results live.

The data folder holds benchmark tables and datasets (read-only is fine); the results folder holds metric
tables that later runs reuse. Both default from environment variables so tests, CI and users can point them
anywhere without editing configs. The package ships a read-only fallback of its own (`embedded_dir`, see
hnas/embedded/PROVENANCE.md): the NB201 benchmark table and the project's full-space metric tables.
"""

import os
from pathlib import Path

from hnas.errors import HnasError

DATA_ENV = "HNAS_DATA_DIR"
RESULTS_ENV = "HNAS_RESULTS_DIR"


def data_dir():
    return Path(os.environ.get(DATA_ENV, "data")).expanduser().resolve()


def embedded_dir():
    """The data shipped inside the package (read-only): the NB201 benchmark table and metric tables."""
    return Path(__file__).resolve().parent / "embedded"


def results_dir():
    default = data_dir() / "results"
    return Path(os.environ.get(RESULTS_ENV, default)).expanduser().resolve()


def require_file(path, what, how_to_get):
    """Return `path` as a Path if it exists, else fail with a message naming the file and how to obtain it."""
    path = Path(path)
    if not path.exists():
        raise HnasError(
            f"{what} not found: {path}\n"
            f"How to get it: {how_to_get}\n"
            f"(The data folder is {data_dir()}; set ${DATA_ENV} or paths.data_dir to change it.)"
        )
    return path
