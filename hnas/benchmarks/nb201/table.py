"""The compact NAS-Bench-201 table: its schema, reading and validating it, and looking values up.

One CSV row per architecture in the official index order (schema in docs/benchmark-table.md). Searches read
only this table: the official files need the `nats_bench` / `nas-bench-201` packages and, for NB201 v1.0, about
28 GB of RAM, so they are converted once (`hnas-nb201-convert`, see hnas/benchmarks/nb201/convert.py) and never
read during a search.

Every value is addressed by (dataset, split, epochs), never by a bare "accuracy": `cifar10-valid` (trained on
25k images, validated on the other 25k) is not `cifar10` (trained on 50k, tested on 10k), and the 12-epoch
results HNAS queries are not the 200-epoch results papers report.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from hnas import paths
from hnas.errors import HnasError
from hnas.spaces import nb201 as space

NUM_ARCHS = space.NUM_ARCHS
DATASETS = ("cifar10-valid", "cifar10", "cifar100", "ImageNet16-120")

# (dataset, split, epochs) -> column. Only these combinations exist in the compact table.
ACCURACY_COLUMNS = {
    ("cifar10-valid", "valid", 12): "cifar10_valid_acc_12ep",
    ("cifar100", "valid", 12): "cifar100_valid_acc_12ep",
    ("ImageNet16-120", "valid", 12): "imagenet16_valid_acc_12ep",
    ("cifar10-valid", "valid", 200): "cifar10_valid_acc_200ep",
    ("cifar10", "test", 200): "cifar10_test_acc_200ep",
    ("cifar100", "test", 200): "cifar100_test_acc_200ep",
    ("ImageNet16-120", "test", 200): "imagenet16_test_acc_200ep",
}
# (dataset, epochs) -> column of the total training time in seconds.
TIME_COLUMNS = {
    ("cifar10-valid", 12): "cifar10_valid_time_12ep",
    ("cifar10-valid", 200): "cifar10_valid_time_200ep",
}
COLUMNS = (
    "index",
    "arch",
    "params_m",
    "cifar10_valid_acc_12ep",
    "cifar10_valid_time_12ep",
    "cifar100_valid_acc_12ep",
    "imagenet16_valid_acc_12ep",
    "cifar10_valid_acc_200ep",
    "cifar10_valid_time_200ep",
    "cifar10_test_acc_200ep",
    "cifar100_test_acc_200ep",
    "imagenet16_test_acc_200ep",
)
VALUE_COLUMNS = COLUMNS[2:]

HOW_TO_GET = (
    "hnas ships this table (hnas/embedded/nb201.csv.gz; reinstall hnas if it is damaged). For a table of your "
    "own, copy nb201.csv (the compact NAS-Bench-201 table, schema in docs/benchmark-table.md) there, or convert the "
    "official benchmark files you downloaded: "
    "`hnas-nb201-convert --nats <NATS-tss-v1_0-3ffb9-simple folder> --out <this path>` "
    "(NATS-Bench, https://github.com/D-X-Y/NATS-Bench) or "
    "`hnas-nb201-convert --nb201-pth <NAS-Bench-201-v1_1-096897.pth> --out <this path>`"
)


def default_path():
    """`<data folder>/nb201/nb201.csv` where the data folder has one, else the table shipped with hnas."""
    local = paths.data_dir() / "nb201" / "nb201.csv"
    return local if local.exists() else paths.embedded_dir() / "nb201.csv.gz"


# ----------------------------------------------------------------------------------------------------------
# Addressing values by (dataset, split, epochs)

# Accept the spellings configs use (imagenet16_120, cifar10_valid) but never merge cifar10 with cifar10-valid.
_DATASET_NAMES = {name.lower().replace("_", "-"): name for name in DATASETS}


def _dataset(name):
    key = str(name).lower().replace("_", "-")
    if key not in _DATASET_NAMES:
        raise HnasError(f"unknown NB201 dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return _DATASET_NAMES[key]


def _epochs(epochs):
    if str(epochs) not in ("12", "200"):
        raise HnasError(f"NB201 has results after 12 or 200 training epochs, not {epochs!r}")
    return int(epochs)


def _accuracy_column(dataset, split, epochs):
    key = (_dataset(dataset), str(split), _epochs(epochs))
    if key not in ACCURACY_COLUMNS:
        available = ", ".join(f"({d}, {s}, {e})" for d, s, e in ACCURACY_COLUMNS)
        raise HnasError(
            f"the NB201 table has no accuracy for dataset={key[0]}, split={split}, epochs={key[2]}. "
            f"Available (dataset, split, epochs): {available}. "
            f"(cifar10-valid trains on 25k images and reports 'valid'; cifar10 trains on 50k and reports 'test'.)"
        )
    return ACCURACY_COLUMNS[key]


def _time_column(dataset, epochs):
    key = (_dataset(dataset), _epochs(epochs))
    if key not in TIME_COLUMNS:
        available = ", ".join(f"({d}, {e})" for d, e in TIME_COLUMNS)
        raise HnasError(
            f"the NB201 table has no training time for dataset={key[0]}, epochs={key[1]}. "
            f"Available (dataset, epochs): {available}"
        )
    return TIME_COLUMNS[key]


# ----------------------------------------------------------------------------------------------------------
# The table


class NB201Table:
    """The compact NB201 table. Accuracies are in percent, times in seconds, `params_m` in millions.

    A full table has all 15,625 architectures (row i = official index i); a partial one (converted from a
    partial official file, loaded with `partial=True`) has a subset, still addressed by official index.
    """

    def __init__(self, frame, path=None):
        self.frame = frame
        self.path = path
        self.archs = frame["arch"].tolist()
        self.indices = frame["index"].to_numpy(dtype=np.int64)
        self.partial = len(frame) != NUM_ARCHS
        self._position_of_index = {int(i): pos for pos, i in enumerate(self.indices)}
        self._position_of_arch = {arch: pos for pos, arch in enumerate(self.archs)}
        self._values = {col: frame[col].to_numpy(dtype=np.float64) for col in VALUE_COLUMNS}

    def __len__(self):
        return len(self.archs)

    def __repr__(self):
        return f"NB201Table({len(self)} architectures, path={self.path})"

    def index_of(self, arch):
        """Official index of an arch string."""
        arch = space.validate(arch)
        if arch not in self._position_of_arch:
            raise HnasError(f"architecture {arch} is not in the NB201 table {self.path} (a partial table?)")
        return int(self.indices[self._position_of_arch[arch]])

    def _position(self, arch_or_index):
        if isinstance(arch_or_index, str):
            return self._position_of_index[self.index_of(arch_or_index)]
        if isinstance(arch_or_index, (int, np.integer)) and not isinstance(arch_or_index, bool):
            if int(arch_or_index) not in self._position_of_index:
                raise HnasError(
                    f"NB201 index {arch_or_index} is not in the table {self.path}: "
                    f"it holds {len(self)} architectures with indices {self.indices.min()}..{self.indices.max()}"
                )
            return self._position_of_index[int(arch_or_index)]
        raise HnasError(f"expected an NB201 arch string or index, got {arch_or_index!r}")

    def _value(self, arch_or_index, col, what):
        pos = self._position(arch_or_index)
        value = self._values[col][pos]
        if np.isnan(value):
            raise HnasError(
                f"the NB201 table {self.path} has no {what} for index {self.indices[pos]} "
                f"(column {col} is empty there: the official file it was converted from lacks it)"
            )
        return float(value)

    def accuracy(self, arch_or_index, dataset, split, epochs):
        """Accuracy (%) of an architecture, e.g. accuracy(arch, "cifar10-valid", "valid", 12)."""
        col = _accuracy_column(dataset, split, epochs)
        return self._value(arch_or_index, col, f"{dataset} {split} accuracy after {epochs} epochs")

    def train_time(self, arch_or_index, dataset, epochs):
        """Total training time (s) of an architecture, e.g. train_time(arch, "cifar10-valid", 12)."""
        col = _time_column(dataset, epochs)
        return self._value(arch_or_index, col, f"{dataset} training time for {epochs} epochs")

    def column(self, dataset, split, epochs):
        """Accuracies (%) of every row, in index order (NaN where the table has no value)."""
        return self._values[_accuracy_column(dataset, split, epochs)].copy()

    def time_column(self, dataset, epochs):
        """Training times (s) of every row, in index order."""
        return self._values[_time_column(dataset, epochs)].copy()


_CACHE = {}


def load_table(path=None, partial=False):
    """Load and validate a compact NB201 table (default: <data dir>/nb201/nb201.csv); cached per file.

    `partial=True` accepts a table holding only some architectures (as converted from a partial official file).
    """
    path = Path(path if path is not None else default_path()).expanduser().resolve()
    paths.require_file(path, "NAS-Bench-201 table", HOW_TO_GET)
    stat = path.stat()
    # The key includes the file's size and mtime so that a rewritten file (e.g. by the converter) is re-read.
    key = (str(path), bool(partial), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        _CACHE[key] = NB201Table(read_table(path, partial), path)
    return _CACHE[key]


def _malformed(path, problem):
    return HnasError(f"malformed NAS-Bench-201 table {path}: {problem}.\nTo get a good one: {HOW_TO_GET}")


def read_table(path, partial=False):
    """Read and validate a compact table file into a DataFrame (no cache). Raises HnasError naming the problem."""
    try:
        # Only an empty cell means "no value"; text such as "n/a" must be reported, not read as missing.
        frame = pd.read_csv(path, dtype={"arch": str}, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as err:
        raise _malformed(path, f"not a readable CSV file ({err})") from err
    missing = [col for col in COLUMNS if col not in frame.columns]
    if missing:
        raise _malformed(path, f"missing column(s) {', '.join(missing)}; expected columns {', '.join(COLUMNS)}")
    frame = frame[list(COLUMNS)].copy()
    frame["index"] = _check_indices(path, frame["index"], partial)
    frame["arch"] = _check_archs(path, frame["arch"], frame["index"])
    for col in VALUE_COLUMNS:
        frame[col] = _check_numbers(path, frame, col)
    return frame.reset_index(drop=True)


def _check_indices(path, column, partial):
    numbers = pd.to_numeric(column, errors="coerce")
    bad = numbers.isna() | (numbers != numbers.round())
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise _malformed(path, f"row {row + 1}: index {column.iloc[row]!r} is not an integer")
    indices = numbers.to_numpy(dtype=np.int64)
    if not partial:
        if len(indices) != NUM_ARCHS:
            raise _malformed(
                path,
                f"it has {len(indices)} rows, expected {NUM_ARCHS} (one per architecture). "
                f"A table converted from a partial official file loads with load_table(path, partial=True)",
            )
        wrong = np.flatnonzero(indices != np.arange(NUM_ARCHS))
        if len(wrong):
            row = int(wrong[0])
            raise _malformed(path, f"row {row + 1} has index {indices[row]}, expected {row}: indices must be 0..{NUM_ARCHS - 1} in order")
    else:
        if len(indices) == 0:
            raise _malformed(path, "it has no rows")
        if indices.min() < 0 or indices.max() >= NUM_ARCHS:
            raise _malformed(path, f"indices must lie in 0..{NUM_ARCHS - 1}, found {indices.min()}..{indices.max()}")
        if np.any(np.diff(indices) <= 0):
            raise _malformed(path, "indices must be strictly increasing (official index order, no duplicates)")
    return indices


def _check_archs(path, column, indices):
    archs = []
    for row, (arch, index) in enumerate(zip(column, indices)):
        try:
            archs.append(space.validate(arch))
        except HnasError as err:
            raise _malformed(path, f"row {row + 1} (index {index}): {err}") from err
    if len(set(archs)) != len(archs):
        raise _malformed(path, "some architecture appears in more than one row")
    return archs


def _check_numbers(path, frame, col):
    raw = frame[col]
    numbers = pd.to_numeric(raw, errors="coerce").astype(np.float64)
    # An empty cell means "the source has no such value" (e.g. NB201 v1.0 has no 12-epoch CIFAR-100 run);
    # anything else that is not a number is an error.
    bad = numbers.isna() & raw.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise _malformed(path, f"row {row + 1} (index {frame['index'].iloc[row]}): {col} = {raw.iloc[row]!r} is not a number")
    values = numbers.to_numpy()
    if "_acc_" in col:
        # Catches fractions written instead of percent.
        wrong = (values < 0) | (values > 100)
        why = "an accuracy in percent must lie in 0..100"
    else:
        wrong = values <= 0 if col == "params_m" else values < 0
        why = f"{col} must be positive"
    wrong = (wrong & ~np.isnan(values)) | np.isinf(values)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise _malformed(path, f"row {row + 1} (index {frame['index'].iloc[row]}): {col} = {values[row]}: {why}")
    return numbers


def write_table(frame, path):
    """Write a compact table CSV (full float precision; an empty cell for a missing value)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[list(COLUMNS)].to_csv(path, index=False)
    return path
