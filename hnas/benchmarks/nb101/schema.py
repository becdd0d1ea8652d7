"""The schema of the compact NB101 table: its constants, the checks of one stored cell and of whole arrays.

The arrays (as NB101Table holds them, rows sorted by module hash):
    hashes        (N,) S32             module hashes, 32 lowercase hex digits, strictly increasing
    num_vertices  (N,) int8            vertices of the stored (pruned, canonical) cell, 2..7
    adjacency     (N, 7, 7) uint8      its 0/1 strictly upper-triangular matrix, zero past its vertices
    ops           (N, 7) int8          positions in OP_NAMES of its ops, -1 past its vertices
    params        (N,) int64           trainable parameters of its official network
    epochs        (E,) int64           the budgets the table holds, increasing, out of BUDGETS
    runs          (N, E, 3, 8) float64 row, budget, repeat (file order), RUN_FIELDS: values as the file has them
"""

import re

import numpy as np

from hnas.spaces.nb101.hashing import OPS
from hnas.spaces.nb101.spec import MAX_VERTICES, NUM_CELLS

NUM_REPEATS = 3
BUDGETS = (4, 12, 36, 108)  # the epoch budgets of nasbench_full; nasbench_only108 has 108 only
OP_NAMES = ("input",) + OPS + ("output",)  # the `ops` array holds positions in this tuple, -1 past the last vertex
# The values of one training run, in the official API's names (its `computed_statistics` entries).
RUN_FIELDS = (
    "halfway_training_time",
    "halfway_train_accuracy",
    "halfway_validation_accuracy",
    "halfway_test_accuracy",
    "final_training_time",
    "final_train_accuracy",
    "final_validation_accuracy",
    "final_test_accuracy",
)
SPLITS = {"train": "final_train_accuracy", "valid": "final_validation_accuracy", "test": "final_test_accuracy"}
REPEATS = ("mean", 0, 1, 2, "random")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_INPUT, _OUTPUT = OP_NAMES.index("input"), OP_NAMES.index("output")
_DTYPES = {"hashes": "S32", "num_vertices": "int8", "adjacency": "uint8", "ops": "int8", "params": "int64",
           "epochs": "int64", "runs": "float64"}


def check_hash(module_hash):
    """Raise ValueError unless `module_hash` is a module hash: 32 lowercase hex digits."""
    if not isinstance(module_hash, str) or not _HEX32.fullmatch(module_hash):
        raise ValueError(f"module hash {module_hash!r} is not 32 lowercase hex digits")


def check_spec(adjacency, ops):
    """Raise ValueError unless `adjacency` (row-major 0/1 string) and `ops` (op names) are a stored NB101 cell:
    square, 2..7 vertices, strictly upper triangular, input first, output last, official ops between."""
    size = len(ops)
    if not 2 <= size <= MAX_VERTICES:
        raise ValueError(f"the cell has {size} ops {list(ops)}, expected 2..{MAX_VERTICES}")
    if len(adjacency) != size * size:
        root = int(len(adjacency) ** 0.5)
        shape = f"{root}x{root}" if root * root == len(adjacency) else "not square"
        raise ValueError(f"the adjacency has {len(adjacency)} entries ({shape}); "
                         f"{size} ops need {size}x{size} = {size * size}")
    if adjacency.strip("01"):
        raise ValueError(f"the adjacency {adjacency!r} holds characters other than 0 and 1")
    if any("1" in adjacency[i * size:i * size + i + 1] for i in range(size)):
        raise ValueError(f"the adjacency {adjacency!r} is not strictly upper triangular (an edge goes backwards)")
    if ops[0] != "input" or ops[-1] != "output" or not all(op in OP_NAMES[1:-1] for op in ops[1:-1]):
        raise ValueError(f"the ops {list(ops)} are not 'input', then ops of {list(OP_NAMES[1:-1])}, then 'output'")


def check_arrays(arrays):
    """Raise ValueError naming the first array (and row) that breaks the schema above."""
    missing = [name for name in _DTYPES if name not in arrays]
    if missing:
        raise ValueError(f"array(s) {', '.join(missing)} missing")
    for name, dtype in _DTYPES.items():
        if arrays[name].dtype != np.dtype(dtype):
            raise ValueError(f"array {name} has dtype {arrays[name].dtype}, expected {dtype}")
    hashes, epochs = arrays["hashes"], arrays["epochs"]
    n = len(hashes)
    shapes = {"hashes": (n,), "num_vertices": (n,), "adjacency": (n, MAX_VERTICES, MAX_VERTICES),
              "ops": (n, MAX_VERTICES), "params": (n,), "epochs": (len(epochs),),
              "runs": (n, len(epochs), NUM_REPEATS, len(RUN_FIELDS))}
    for name, shape in shapes.items():
        if arrays[name].shape != shape:
            raise ValueError(f"array {name} has shape {arrays[name].shape}, expected {shape}")
    if n == 0:
        raise ValueError("it has no rows")
    _check_rows(arrays)
    if len(epochs) == 0 or not set(epochs.tolist()) <= set(BUDGETS) or np.any(np.diff(epochs) <= 0):
        raise ValueError(f"epochs {epochs.tolist()} are not increasing NB101 budgets out of {BUDGETS}")
    _check_values(arrays)


def _check_rows(arrays):
    hashes, nv, adjacency, ops = arrays["hashes"], arrays["num_vertices"], arrays["adjacency"], arrays["ops"]
    digits = hashes.view(np.uint8).reshape(len(hashes), 32)
    hexadecimal = ((digits >= ord("0")) & (digits <= ord("9"))) | ((digits >= ord("a")) & (digits <= ord("f")))
    _first_bad(~hexadecimal.all(axis=1), hashes, "its module hash is not 32 lowercase hex digits")
    _first_bad(np.append(hashes[1:] <= hashes[:-1], False), hashes, "rows are not sorted by strictly increasing hash")
    _first_bad((nv < 2) | (nv > MAX_VERTICES), hashes, f"the number of vertices is not 2..{MAX_VERTICES}")
    inside = np.arange(MAX_VERTICES)[None, :] < nv[:, None]  # (N, 7): the vertex exists
    above_diagonal = np.triu(np.ones((MAX_VERTICES, MAX_VERTICES), dtype=bool), k=1)
    allowed = above_diagonal[None] & inside[:, :, None] & inside[:, None, :]
    _first_bad(((adjacency > 1) | ((adjacency != 0) & ~allowed)).any(axis=(1, 2)), hashes,
               "its adjacency is not a 0/1 upper-triangular matrix of its vertices")
    last = ops[np.arange(len(ops)), nv.astype(np.int64) - 1]
    interior = inside & (np.arange(MAX_VERTICES)[None, :] > 0) & (np.arange(MAX_VERTICES)[None, :] < nv[:, None] - 1)
    ops_ok = ((ops[:, 0] == _INPUT) & (last == _OUTPUT) & np.all((ops == -1) | inside, axis=1)
              & np.all(~interior | ((ops > _INPUT) & (ops < _OUTPUT)), axis=1))
    _first_bad(~ops_ok, hashes, f"its ops are not input, interior ops of {OP_NAMES[1:-1]}, output")
    _first_bad(arrays["params"] <= 0, hashes, "its parameter count is not positive")


def _check_values(arrays):
    runs, hashes = arrays["runs"], arrays["hashes"]
    accuracy = [i for i, name in enumerate(RUN_FIELDS) if name.endswith("_accuracy")]
    time = [i for i, name in enumerate(RUN_FIELDS) if name.endswith("_time")]
    _first_bad(~np.isfinite(runs).all(axis=(1, 2, 3)), hashes, "a run value is not a finite number")
    acc = runs[..., accuracy]
    _first_bad(((acc < 0) | (acc > 1)).any(axis=(1, 2, 3)), hashes,
               "an accuracy is outside 0..1 (the table keeps the file's fractions, not percent)")
    _first_bad((runs[..., time] < 0).any(axis=(1, 2, 3)), hashes, "a training time is negative")


def _first_bad(bad, hashes, problem):
    rows = np.flatnonzero(bad)
    if len(rows):
        row = int(rows[0])
        raise ValueError(f"row {row} (hash {hashes[row].decode('ascii', 'replace')}): {problem}")
