"""NAS-Bench-201 benchmark: the compact table (table.py), the official-file readers (official.py) and the
converter between them (convert.py, the `hnas-nb201-convert` command).

The names are re-exported here so that callers import `hnas.benchmarks.nb201` without knowing which module
holds what.
"""

from hnas.benchmarks.nb201.official import HOW_TO_GET_OFFICIAL, compact_params, read_nats, read_nb201_pth
from hnas.benchmarks.nb201.table import (
    ACCURACY_COLUMNS,
    COLUMNS,
    DATASETS,
    HOW_TO_GET,
    NUM_ARCHS,
    TIME_COLUMNS,
    VALUE_COLUMNS,
    NB201Table,
    default_path,
    load_table,
    read_table,
    write_table,
)

__all__ = [
    "ACCURACY_COLUMNS",
    "COLUMNS",
    "DATASETS",
    "HOW_TO_GET",
    "HOW_TO_GET_OFFICIAL",
    "NUM_ARCHS",
    "TIME_COLUMNS",
    "VALUE_COLUMNS",
    "NB201Table",
    "compact_params",
    "default_path",
    "load_table",
    "read_nats",
    "read_nb201_pth",
    "read_table",
    "write_table",
]
