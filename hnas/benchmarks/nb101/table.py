"""The compact NAS-Bench-101 table: one row per cell (module hash), looked up instead of training the cell.

Built once from the official `.tfrecord` (or NASLib's pickle) by `hnas-nb101-convert` (convert.py) and saved as
one compressed `.npz` (table_file.py); a search never reads the official files. Per row it keeps what the
official API keeps (nasbench/api.py): the cell as stored in the file (its canonical, pruned form), its
trainable parameters, and for every epoch budget the file holds (108 only, or 4/12/36/108) the 3 repeated
training runs, each with the 8 values of RUN_FIELDS exactly as the file has them (accuracies as fractions).

Queries report accuracies in percent, like the NB201 table, and times in seconds. Which run is meant is always
explicit: `repeat="mean"` (the mean of the 3 runs, the README's convention), 0, 1 or 2 (one run, in file
order), or "random" (one run drawn from the caller's seeded `rng`, as the official `query` does).
"""

import numpy as np

from hnas.benchmarks.nb101.schema import NUM_CELLS, NUM_REPEATS, OP_NAMES, REPEATS, RUN_FIELDS, SPLITS
from hnas.errors import HnasError

HOW_TO_GET = (
    "download nasbench_only108.tfrecord (or nasbench_full.tfrecord for the 4/12/36-epoch budgets too) from "
    "https://github.com/google-research/nasbench (links in its README) and convert it once: "
    "`hnas-nb101-convert --tfrecord nasbench_only108.tfrecord --out <this path>`"
)


class NB101Table:
    """The compact NB101 table held as numpy arrays (schema.py), rows sorted by module hash.

    Made by the converter (build.py) or read from a file (table_file.py), both of which check the arrays
    (schema.check_arrays); they are trusted here.
    """

    def __init__(self, arrays, path=None):
        self.path = path
        self._hashes = arrays["hashes"]
        self._num_vertices = arrays["num_vertices"]
        self._adjacency = arrays["adjacency"]
        self._ops = arrays["ops"]
        self._params = arrays["params"]
        self._runs = arrays["runs"]
        self.epochs = tuple(int(e) for e in arrays["epochs"])
        self._hash_strings = None

    def arrays(self):
        """The table's arrays, as the constructor takes them (what table_file.save_table writes)."""
        return {
            "hashes": self._hashes,
            "num_vertices": self._num_vertices,
            "adjacency": self._adjacency,
            "ops": self._ops,
            "params": self._params,
            "epochs": np.asarray(self.epochs, dtype=np.int64),
            "runs": self._runs,
        }

    def __len__(self):
        return len(self._hashes)

    def __repr__(self):
        return f"NB101Table({len(self)} cells, epochs {self.epochs}, path={self.path})"

    @property
    def partial(self):
        """True when the table holds fewer cells than the official space (a fixture or a partial file)."""
        return len(self) != NUM_CELLS

    @property
    def hashes(self):
        """The module hashes of the rows, in row order (sorted)."""
        if self._hash_strings is None:
            self._hash_strings = tuple(h.decode("ascii") for h in self._hashes.tolist())
        return self._hash_strings

    def row(self, cell):
        """The row of a module hash (a row index is returned as it is, once checked)."""
        if isinstance(cell, str):
            key = cell.encode("ascii", "replace")
            row = int(np.searchsorted(self._hashes, key))
            if row == len(self) or self._hashes[row] != key:
                raise HnasError(
                    f"NB101 module hash {cell!r} is not in the table {self.path} ({len(self)} cells"
                    f"{', a partial table' if self.partial else ''}). A hash is the 32 hex digits of the pruned "
                    f"cell (hnas.spaces.nb101.hashing.spec_hash); table.hashes lists those it holds"
                )
            return row
        if isinstance(cell, (int, np.integer)) and not isinstance(cell, bool):
            if not 0 <= cell < len(self):
                raise HnasError(f"NB101 row {cell} is out of range: the table {self.path} has rows 0..{len(self) - 1}")
            return int(cell)
        raise HnasError(f"expected an NB101 module hash (str) or a row index (int), got {cell!r}")

    def spec(self, cell):
        """The cell as stored in the benchmark file: (matrix, ops), a tuple of 0/1 row tuples and op names."""
        row = self.row(cell)
        n = int(self._num_vertices[row])
        matrix = tuple(tuple(int(x) for x in line[:n]) for line in self._adjacency[row, :n])
        return matrix, tuple(OP_NAMES[code] for code in self._ops[row, :n])

    def params(self, cell):
        """Trainable parameters of the cell's official network (CIFAR-10, 10 classes)."""
        return int(self._params[self.row(cell)])

    def runs(self, cell, epochs=108):
        """The cell's 3 training runs at one budget, in file order: dicts of RUN_FIELDS, values as stored."""
        row, budget = self.row(cell), self._budget(epochs)
        return [dict(zip(RUN_FIELDS, map(float, run))) for run in self._runs[row, budget]]

    def accuracy(self, cell, split="valid", epochs=108, repeat="mean", rng=None):
        """Final accuracy (%) of a cell: split "valid", "test" or "train", after `epochs` of training.

        repeat="mean" averages the 3 runs' fractions (then times 100); 0/1/2 picks one run; "random" draws one
        with `rng` (a numpy Generator or RandomState, required so that the draw is reproducible).
        """
        return 100.0 * self._select(self.row(cell), _split_field(split), epochs, repeat, rng)

    def train_time(self, cell, epochs=108, repeat="mean", rng=None):
        """Training time (s) of a cell for `epochs` epochs: what querying that budget costs. repeat as in accuracy."""
        return self._select(self.row(cell), "final_training_time", epochs, repeat, rng)

    def column(self, split="valid", epochs=108, repeat="mean", rng=None):
        """The accuracies (%) of every row in row order; repeat "random" draws one run per row from `rng`."""
        values = self._runs[:, self._budget(epochs), :, RUN_FIELDS.index(_split_field(split))]
        if repeat == "random":
            picks = _draw(_require_rng(rng), len(self))
            return 100.0 * values[np.arange(len(self)), picks]
        run = _repeat(repeat)
        return 100.0 * (values.mean(axis=1) if run is None else values[:, run])

    def _select(self, row, field, epochs, repeat, rng):
        values = self._runs[row, self._budget(epochs), :, RUN_FIELDS.index(field)]
        if repeat == "random":
            return float(values[int(_draw(_require_rng(rng)))])
        run = _repeat(repeat)
        return float(values.mean() if run is None else values[run])

    def _budget(self, epochs):
        wanted = int(epochs) if isinstance(epochs, str) and epochs.isdigit() else epochs
        if not isinstance(wanted, (int, np.integer)) or isinstance(wanted, bool) or wanted not in self.epochs:
            only108 = " (the 4/12/36-epoch budgets need a table converted from nasbench_full.tfrecord)"
            raise HnasError(
                f"the NB101 table {self.path} has results after {', '.join(map(str, self.epochs))} epochs, "
                f"not {epochs!r}{only108 if len(self.epochs) == 1 else ''}"
            )
        return self.epochs.index(int(wanted))


def _split_field(split):
    if not isinstance(split, str) or split not in SPLITS:
        raise HnasError(f"unknown NB101 split {split!r}; choose one of: {', '.join(SPLITS)}")
    return SPLITS[split]


def _repeat(repeat):
    """The run index of a fixed repeat, None for the mean."""
    if isinstance(repeat, str) and repeat == "mean":
        return None
    if isinstance(repeat, (int, np.integer)) and not isinstance(repeat, bool) and 0 <= repeat < NUM_REPEATS:
        return int(repeat)
    raise HnasError(f"unknown NB101 repeat {repeat!r}; choose one of: {', '.join(map(repr, REPEATS))}")


def _require_rng(rng):
    if rng is None:
        raise HnasError('repeat="random" needs rng=<a seeded numpy Generator or RandomState>, '
                        "so that the draw is reproducible")
    return rng


def _draw(rng, size=None):
    """Run indices drawn uniformly from a numpy Generator (`integers`) or RandomState (`randint`)."""
    draw = rng.integers if hasattr(rng, "integers") else rng.randint
    return draw(NUM_REPEATS, size=size)
