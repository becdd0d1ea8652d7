"""The NB101 table file: one compressed `.npz` of the table's arrays, versioned, checked when read.

Plain arrays only (no pickled objects), so that loading a file cannot run code. A file of another format
version, a damaged one or one that is not an NB101 table is an HnasError naming it and the fix.
"""

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from hnas import paths
from hnas.benchmarks.nb101.schema import RUN_FIELDS, check_arrays
from hnas.benchmarks.nb101.table import HOW_TO_GET, NB101Table
from hnas.errors import HnasError

FORMAT = "hnas-nb101-table"
FORMAT_VERSION = 1


def default_path():
    """`<data folder>/nb101/nb101.npz`, where hnas-nb101-convert's output is looked for by default."""
    return paths.data_dir() / "nb101" / "nb101.npz"


def save_table(table, path):
    """Write a table as one compressed .npz (atomically: a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with open(partial, "wb") as f:  # a file object: numpy would append ".npz" to a name not ending in it
        np.savez_compressed(f, format=np.array(FORMAT), version=np.array(FORMAT_VERSION),
                            run_fields=np.array(RUN_FIELDS), **table.arrays())
    os.replace(partial, path)
    return path


_CACHE = {}


def load_table(path=None):
    """Load and check an NB101 table file (default: default_path()); cached per file, size and mtime."""
    path = Path(path if path is not None else default_path()).expanduser().resolve()
    paths.require_file(path, "NAS-Bench-101 table", HOW_TO_GET)
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        _CACHE[key] = NB101Table(_read_arrays(path), path)
    return _CACHE[key]


def _bad(path, problem):
    return HnasError(f"{path} is not a usable NAS-Bench-101 table: {problem}.\nTo make one: {HOW_TO_GET}")


def _read_arrays(path):
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise _bad(path, "it is a single .npy array, not the .npz of a table")
        with npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError) as err:
        # np.load raises ValueError for pickled content or garbage, BadZipFile / zlib.error / EOFError when truncated
        raise _bad(path, f"not a readable .npz file ({type(err).__name__}: {err})") from err
    if arrays.get("format", np.array("")).tolist() != FORMAT:
        raise _bad(path, f"it does not hold an hnas NB101 table (no format marker {FORMAT!r})")
    version = arrays.get("version", np.array(-1)).tolist()
    if version != FORMAT_VERSION:
        raise _bad(path, f"it has table format version {version}, this hnas reads version {FORMAT_VERSION}: "
                         f"convert the benchmark file again with this hnas")
    if tuple(arrays.get("run_fields", np.array([])).tolist()) != RUN_FIELDS:
        raise _bad(path, f"its runs do not hold the values {list(RUN_FIELDS)}")
    try:
        check_arrays(arrays)
    except ValueError as err:
        raise _bad(path, str(err)) from err
    return arrays
