"""NAS-Bench-101 benchmark without TensorFlow.

- the compact table: table.py (queries), schema.py (its arrays), table_file.py (its .npz), build.py (aggregation)
- the official files: official.py (SHA-256, file to table) over tfrecord.py, model_metrics.py and checksum.py
- NASLib's files: naslib.py (its pickle and its zero-cost JSON)
- the converter: convert.py, the `hnas-nb101-convert` command

The names are re-exported here so that callers import `hnas.benchmarks.nb101` without knowing which module
holds what.
"""

from hnas.benchmarks.nb101.naslib import read_zc_proxies, table_from_naslib_pickle
from hnas.benchmarks.nb101.official import OFFICIAL_SHA256, check_sha256, table_from_tfrecord
from hnas.benchmarks.nb101.schema import BUDGETS, NUM_CELLS, NUM_REPEATS, OP_NAMES, REPEATS, RUN_FIELDS, SPLITS
from hnas.benchmarks.nb101.table import HOW_TO_GET, NB101Table
from hnas.benchmarks.nb101.table_file import FORMAT_VERSION, default_path, load_table, save_table
from hnas.benchmarks.nb101.tfrecord import Record, read_records

__all__ = [
    "BUDGETS",
    "FORMAT_VERSION",
    "HOW_TO_GET",
    "NUM_CELLS",
    "NUM_REPEATS",
    "OFFICIAL_SHA256",
    "OP_NAMES",
    "REPEATS",
    "RUN_FIELDS",
    "SPLITS",
    "NB101Table",
    "Record",
    "check_sha256",
    "default_path",
    "load_table",
    "read_records",
    "read_zc_proxies",
    "save_table",
    "table_from_naslib_pickle",
    "table_from_tfrecord",
]
