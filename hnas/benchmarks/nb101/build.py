"""Aggregate NB101 training runs, given one at a time in any order, into an NB101Table.

The official API's rules (nasbench/api.py `NASBench.__init__`): a cell's fixed values (its stored spec and
trainable parameters) come from the first run seen for its hash, and the runs of one (hash, epochs) are
numbered in the order they arrive. Every cell must end with exactly 3 runs at every budget seen.
"""

import numpy as np

from hnas.benchmarks.nb101.schema import MAX_VERTICES, NUM_REPEATS, OP_NAMES, RUN_FIELDS, check_arrays
from hnas.benchmarks.nb101.table import NB101Table
from hnas.errors import HnasError

_OP_CODES = {name: code for code, name in enumerate(OP_NAMES)}


class TableBuilder:
    """Collects runs with `add` and makes the table with `build`.

    Memory: about 0.3 GB for nasbench_only108 and 0.6 GB for nasbench_full while adding, twice that in `build`.
    """

    def __init__(self, source):
        self.source = source  # named in errors
        self._row_of = {}  # module hash -> row, in order of first appearance
        self._fixed = []  # per row: (adjacency bits, op codes, params) of the first run seen
        self._runs = {}  # epochs -> (rows, 3, 8) float64, grown as rows arrive
        self._counts = {}  # epochs -> (rows,) int8 runs seen so far

    def add(self, module_hash, epochs, adjacency, ops, params, run):
        """One run: `adjacency` the row-major 0/1 string of the stored matrix, `ops` its op names (both passed
        by schema.check_spec), `params` its trainable parameters, `run` the 8 values of RUN_FIELDS in that order."""
        row = self._row_of.get(module_hash)
        if row is None:
            row = self._row_of[module_hash] = len(self._fixed)
            self._fixed.append((adjacency, tuple(_OP_CODES[op] for op in ops), int(params)))
        if epochs not in self._runs:
            self._runs[epochs] = np.zeros((1024, NUM_REPEATS, len(RUN_FIELDS)))
            self._counts[epochs] = np.zeros(1024, dtype=np.int8)
        runs, counts = self._runs[epochs], self._counts[epochs]
        if row >= len(counts):  # double the capacity: amortised O(1) per run
            runs = self._runs[epochs] = np.concatenate([runs, np.zeros_like(runs)])
            counts = self._counts[epochs] = np.concatenate([counts, np.zeros_like(counts)])
        repeat = int(counts[row])
        if repeat == NUM_REPEATS:
            raise HnasError(
                f"{self.source} holds more than {NUM_REPEATS} runs of cell {module_hash} at {epochs} epochs; "
                f"NAS-Bench-101 trained every cell {NUM_REPEATS} times per budget (is a file given twice?)"
            )
        runs[row, repeat] = run
        counts[row] = repeat + 1

    def build(self):
        """The table of every run added, rows sorted by hash. Raises if some cell lacks a run."""
        if not self._fixed:
            raise HnasError(f"{self.source} holds no NAS-Bench-101 runs (nothing to convert)")
        n = len(self._fixed)
        epochs = sorted(self._runs)
        hashes = np.array(list(self._row_of), dtype="S32")  # dict order = row order
        for budget in epochs:
            short = np.flatnonzero(self._counts[budget][:n] != NUM_REPEATS)
            if len(short):
                row = int(short[0])
                raise HnasError(
                    f"{self.source} is incomplete: cell {hashes[row].decode()} has {self._counts[budget][row]} of "
                    f"{NUM_REPEATS} runs at {budget} epochs ({len(short)} cells lack runs there). A damaged or "
                    f"partial download? Check it with `hnas-nb101-convert --sha256`"
                )
        order = np.argsort(hashes, kind="stable")
        num_vertices, adjacency, ops = _specs(self._fixed)
        arrays = {
            "hashes": hashes[order],
            "num_vertices": num_vertices[order],
            "adjacency": adjacency[order],
            "ops": ops[order],
            "params": np.array([params for _, _, params in self._fixed], dtype=np.int64)[order],
            "epochs": np.array(epochs, dtype=np.int64),
            "runs": np.stack([self._runs[budget][:n][order] for budget in epochs], axis=1),
        }
        try:
            check_arrays(arrays)
        except ValueError as err:  # e.g. a NaN or a percentage in NASLib's pickle
            raise HnasError(f"{self.source} gives values an NB101 table cannot hold: {err}") from err
        return NB101Table(arrays)


def _specs(fixed):
    """(num_vertices, adjacency padded to 7x7, op codes padded with -1) arrays of the fixed values."""
    n = len(fixed)
    num_vertices = np.array([len(ops) for _, ops, _ in fixed], dtype=np.int8)
    adjacency = np.zeros((n, MAX_VERTICES, MAX_VERTICES), dtype=np.uint8)
    ops_codes = np.full((n, MAX_VERTICES), -1, dtype=np.int8)
    for row, (bits, ops, _) in enumerate(fixed):
        size = len(ops)
        digits = np.frombuffer(bits.encode("ascii"), dtype=np.uint8).reshape(size, size)
        adjacency[row, :size, :size] = digits - ord("0")
        ops_codes[row, :size] = ops
    return num_vertices, adjacency, ops_codes
