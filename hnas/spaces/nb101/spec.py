"""NAS-Bench-101 cell specs: the official ModelSpec rules, the canonical form the dataset stores, architecture
strings and the converters from the official and NASLib encodings. Pure Python (no numpy, no torch).

A spec is (matrix, ops): a square 0/1 upper-triangular adjacency as a tuple of tuples of int (matrix[x][y] = 1
for an edge x -> y) and the op of every vertex, "input" first and "output" last.

Rules (nasbench `model_spec.py`, `api.py`). Pruning drops every vertex that lies on no input -> output path;
the rest keep their order and their edges. A cell is valid when, after pruning, an input -> output path
exists, it has at most 7 vertices and 9 edges, and its interior ops are official (ops on pruned vertices are
never looked at). Two deliberate differences: every invalid spec is an HnasError naming the rule (the
official code raises ValueError for a malformed matrix, and TypeError instead of "invalid" for a cell that
still has more than 7 vertices after pruning, from a bug in its message); and matrix entries must be 0 or 1
(the official code accepts any number above the diagonal).

Canonical form. nasbench `scripts/generate_graphs.py` made the dataset: for 2..7 vertices, every matrix in
the order of its edge bit mask (edge x -> y is bit x + y(y-1)/2, `graph_util.gen_is_edge_fn`) that pruning
leaves whole with at most 9 edges, then every labelling of its interior vertices in itertools.product order
over OPS, keeping the first graph of each hash. The hash separates exactly the isomorphism classes of this
space (its docstring: checked exhaustively), and a relabelling that keeps a pruned cell upper-triangular
fixes input (the only source) and output (the only sink). So the stored form of a cell is its relabelling,
by a permutation of the interior vertices, that comes first in that order: smallest bit mask, then smallest
op labels (c3 < c1 < mp). Checked on the 30 cells of NASLib's nb101_dummy.pkl and on the README cell; the
enumeration below equals the generator's output over the whole space (tests/test_space_nb101.py).

Architecture string: `<interior op codes joined by '-'>_<matrix rows as 0/1 strings joined by '.'>`, codes
c3, c1, mp; e.g. `_01.00` is input straight to output.
"""

import ast
import itertools
import math
from functools import lru_cache

from hnas.errors import HnasError
from hnas.spaces.nb101.hashing import OPS

INPUT, OUTPUT = "input", "output"
CODES = {"c3": OPS[0], "c1": OPS[1], "mp": OPS[2]}  # arch-string code -> official op name
CODE_OF = {op: code for code, op in CODES.items()}
MAX_VERTICES = 7
MAX_EDGES = 9
NUM_CELLS = 423_624  # unique cells (nasbench README and generate_graphs.py)
NASLIB_OPS = (INPUT, OUTPUT, OPS[2], OPS[1], OPS[0])  # NASLib's op codes 0..4 (nasbench101/conversions.py)
EXAMPLE = "c3-c1-mp-c3-c3_0111100.0000001.0000001.0000001.0000010.0000001.0000000"


# ----------------------------------------------------------------------------------------------------------
# Specs and the official rules


def as_spec(matrix, ops):
    """The plain spec of (matrix, ops) as the official code takes them: `matrix` nested sequences or a numpy
    array of 0/1 (bool or int), `ops` a sequence of op names (a ModelSpec's `original_matrix` /
    `original_ops`, or the dataset's `module_adjacency` / `module_operations`). HnasError unless the matrix
    is square, 0/1 and upper-triangular with one op per vertex; nothing is pruned or checked beyond that."""
    try:
        rows = tuple(tuple(row) for row in matrix)
        values = {value for row in rows for value in row}
        ops = tuple(ops)
    except TypeError:
        raise HnasError(f"an NB101 cell is a square 0/1 matrix (a sequence of rows) and a sequence of ops; "
                        f"got {matrix!r} and {ops!r}") from None
    if not values <= {0, 1}:  # True, numpy ints and bools compare (and hash) equal to 0 or 1
        raise HnasError(f"an NB101 cell matrix holds only 0 and 1; found {sorted(map(repr, values - {0, 1}))} "
                        f"in {matrix!r}")
    rows = tuple(tuple(map(int, row)) for row in rows)
    n = len(rows)
    if n < 2 or any(len(row) != n for row in rows):
        raise HnasError(f"an NB101 cell matrix must be square with at least 2 rows (input and output); got "
                        f"{[len(row) for row in rows]} entries per row")
    if any(any(row[:x + 1]) for x, row in enumerate(rows)):
        raise HnasError(f"an NB101 cell matrix must be upper-triangular (edges go from a lower to a higher "
                        f"vertex, nothing on or below the diagonal); got {rows}")
    if len(ops) != n or not all(isinstance(op, str) for op in ops):
        raise HnasError(f"an NB101 cell needs one op name per vertex: {n} vertices, got ops {ops!r}")
    return rows, ops


def _reached(start, neighbours):
    seen, todo = {start}, [start]
    while todo:
        for w in neighbours(todo.pop()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def prune(matrix, ops):
    """The cell without the vertices that lie on no input -> output path (official ModelSpec pruning); the
    kept vertices keep their order and every edge between them. HnasError when no such path exists."""
    matrix, ops = as_spec(matrix, ops)
    n = len(matrix)
    from_input = _reached(0, lambda v: [w for w in range(v + 1, n) if matrix[v][w]])
    to_output = _reached(n - 1, lambda v: [w for w in range(v) if matrix[w][v]])
    keep = sorted(from_input & to_output)
    if not keep:
        raise HnasError(f"invalid NB101 cell (disconnected): no path from the input (vertex 0) to the output "
                        f"(vertex {n - 1}) in {matrix}")
    return tuple(tuple(matrix[x][y] for y in keep) for x in keep), tuple(ops[v] for v in keep)


def check_spec(matrix, ops):
    """The pruned spec of a valid cell; HnasError naming the rule it breaks otherwise (module docstring)."""
    matrix, ops = prune(matrix, ops)
    n, edges = len(matrix), sum(map(sum, matrix))
    if n > MAX_VERTICES:
        raise HnasError(f"invalid NB101 cell (too many vertices): {n} after pruning, at most {MAX_VERTICES} "
                        f"(input and output included)")
    if edges > MAX_EDGES:
        raise HnasError(f"invalid NB101 cell (too many edges): {edges} after pruning, at most {MAX_EDGES}")
    if ops[0] != INPUT or ops[-1] != OUTPUT:
        raise HnasError(f"invalid NB101 cell (ops): the first op must be {INPUT!r} and the last {OUTPUT!r}; "
                        f"got {ops!r}")
    unknown = sorted({op for op in ops[1:-1] if op not in OPS})
    if unknown:
        raise HnasError(f"invalid NB101 cell (ops): unknown op {', '.join(map(repr, unknown))} on a vertex "
                        f"that pruning keeps; the ops are {', '.join(OPS)}")
    return matrix, ops


def is_valid(matrix, ops):
    """True when (matrix, ops) is a cell of the space (check_spec passes)."""
    try:
        check_spec(matrix, ops)
    except HnasError:
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# The canonical form and the enumeration of every cell


def _bit_index(x, y):
    """The position of edge x -> y in a matrix's bit mask (nasbench graph_util.gen_is_edge_fn)."""
    return x + y * (y - 1) // 2


@lru_cache(maxsize=None)
def _relabellings(n):
    """Every new position of the n vertices that keeps input and output in place: position[v] is where old
    vertex v goes; the identity comes first."""
    return tuple((0,) + order + (n - 1,) for order in itertools.permutations(range(1, n - 1)))


def _moved_bits(edges, position):
    """The bit mask of the relabelled edges, or None when an edge would point backwards."""
    bits = 0
    for x, y in edges:
        if position[x] > position[y]:
            return None
        bits |= 1 << _bit_index(position[x], position[y])
    return bits


def _moved_labels(labels, position):
    moved = [0] * len(labels)
    for v, label in enumerate(labels, start=1):
        moved[position[v] - 1] = label
    return tuple(moved)


@lru_cache(maxsize=None)
def _bit_positions(n):
    """Per matrix entry, the position of its edge bit (None on and below the diagonal)."""
    return tuple(tuple(_bit_index(x, y) if x < y else None for y in range(n)) for x in range(n))


def _spec_from(n, bits, labels):
    matrix = tuple(tuple(0 if i is None else bits >> i & 1 for i in row) for row in _bit_positions(n))
    return matrix, (INPUT,) + tuple(OPS[label] for label in labels) + (OUTPUT,)


def canonical(matrix, ops):
    """The form the official dataset stores for the cell (module docstring): pruned, then the relabelling of
    its interior vertices that the official generator reaches first. HnasError for an invalid cell."""
    matrix, ops = check_spec(matrix, ops)
    n = len(matrix)
    edges = [(x, y) for x in range(n) for y in range(x + 1, n) if matrix[x][y]]
    labels = tuple(OPS.index(op) for op in ops[1:-1])
    keys = ((_moved_bits(edges, position), _moved_labels(labels, position)) for position in _relabellings(n))
    return _spec_from(n, *min(key for key in keys if key[0] is not None))


def canonical_cells(max_vertices=MAX_VERTICES):
    """Every cell of at most `max_vertices` vertices in canonical form, in the official generator's order:
    423,624 of them for 7. A labelled matrix is canonical when no relabelling gives a smaller bit mask, nor
    the same matrix with smaller labels; that skips the 1.3 million hashes the generator computes."""
    for n in range(2, max_vertices + 1):
        pairs = [(x, y) for y in range(n) for x in range(y)]  # in bit order
        out_masks = [sum(1 << _bit_index(v, y) for y in range(v + 1, n)) for v in range(n - 1)]
        in_masks = [sum(1 << _bit_index(x, v) for x in range(v)) for v in range(1, n)]
        for bits in range(1 << len(pairs)):
            # pruning would remove a vertex without an out-edge (but output) or an in-edge (but input)
            if (bits.bit_count() > MAX_EDGES or not all(bits & mask for mask in out_masks)
                    or not all(bits & mask for mask in in_masks)):
                continue
            edges = [pair for i, pair in enumerate(pairs) if bits >> i & 1]
            moved = [(_moved_bits(edges, position), position) for position in _relabellings(n)]
            if any(other is not None and other < bits for other, _ in moved):
                continue
            symmetries = [position for other, position in moved[1:] if other == bits]
            for labels in itertools.product(range(len(OPS)), repeat=n - 2):
                if all(_moved_labels(labels, position) >= labels for position in symmetries):
                    yield _spec_from(n, bits, labels)


# ----------------------------------------------------------------------------------------------------------
# Architecture strings and the other encodings


def arch_string(matrix, ops):
    """The architecture string of a spec as given (nothing pruned or relabelled: see canonical)."""
    matrix, ops = as_spec(matrix, ops)
    if ops[0] != INPUT or ops[-1] != OUTPUT or not all(op in CODE_OF for op in ops[1:-1]):
        raise HnasError(f"an NB101 architecture string writes ops {INPUT!r}, then {', '.join(OPS)}, then "
                        f"{OUTPUT!r}; got {ops!r}")
    return ("-".join(CODE_OF[op] for op in ops[1:-1]) + "_"
            + ".".join("".join(map(str, row)) for row in matrix))


def _malformed(arch, why):
    return HnasError(
        f"malformed NB101 architecture string {arch!r}: {why}.\n"
        f"Expected <op codes joined by '-'>_<matrix rows of 0/1 joined by '.'>, one code per interior vertex "
        f"({', '.join(f'{code} = {op}' for code, op in CODES.items())}), for example {EXAMPLE} "
        f"(or _01.00: input straight to output)"
    )


def parse(arch):
    """Arch string -> (matrix, ops) as written (not pruned, not checked against the rules: see check_spec).
    HnasError for a malformed string."""
    if not isinstance(arch, str):
        raise _malformed(arch, f"expected a string, got {type(arch).__name__}")
    codes, sep, rows = arch.strip().partition("_")
    if not sep or "_" in rows:
        raise _malformed(arch, "expected exactly one '_' between the op codes and the matrix rows")
    rows = rows.split(".")
    n = len(rows)
    for row in rows:
        if len(row) != n or set(row) - {"0", "1"}:
            raise _malformed(arch, f"row {row!r} is not {n} characters of 0 and 1 ({n} rows make an {n}x{n} "
                                   f"matrix)")
    if n < 2:
        raise _malformed(arch, "a cell has at least 2 vertices (input and output)")
    codes = codes.split("-") if codes else []
    if len(codes) != n - 2:
        raise _malformed(arch, f"{len(codes)} op codes for {n} vertices, expected {n - 2}")
    unknown = [code for code in codes if code not in CODES]
    if unknown:
        raise _malformed(arch, f"unknown op code {unknown[0]!r}")
    matrix = tuple(tuple(int(c) for c in row) for row in rows)
    return matrix, (INPUT,) + tuple(CODES[code] for code in codes) + (OUTPUT,)


def from_labels(matrix, labels):
    """The spec of the official integer labels: -1 input, -2 output, 0/1/2 the OPS in order (the form of
    nasbench's generate_graphs.py output and of zero-cost-nas' all_graphs.json)."""
    names = {-1: INPUT, -2: OUTPUT, **dict(enumerate(OPS))}
    unknown = [label for label in labels if label not in names]
    if unknown:
        raise HnasError(f"unknown NB101 op label {unknown[0]!r}: the labels are -1 (input), -2 (output), "
                        f"{', '.join(f'{i} ({op})' for i, op in enumerate(OPS))}")
    return as_spec(matrix, [names[label] for label in labels])


def from_naslib(key):
    """The spec of NASLib's tuple encoding (nasbench101/conversions.py `convert_spec_to_tuple`): the n x n
    matrix row-major, then n op codes (0 input, 1 output, 2 maxpool3x3, 3 conv1x1, 4 conv3x3). `key` is the
    tuple or its text, as in the keys of NAS-Bench-Suite-Zero's zc_nasbench101.json."""
    try:
        values = ast.literal_eval(key) if isinstance(key, str) else key
        values = [int(v) for v in values]
    except (ValueError, TypeError, SyntaxError):
        raise HnasError(f"a NASLib NB101 key is a tuple of n*n + n ints (matrix, then op codes); got "
                        f"{key!r}") from None
    n = (math.isqrt(4 * len(values) + 1) - 1) // 2
    if n * n + n != len(values) or not all(0 <= v < len(NASLIB_OPS) for v in values[n * n:]):
        raise HnasError(f"a NASLib NB101 key is n*n matrix entries then n op codes in 0..4 "
                        f"({', '.join(NASLIB_OPS)}); got {len(values)} values: {key!r}")
    matrix = [values[i * n:(i + 1) * n] for i in range(n)]
    return as_spec(matrix, [NASLIB_OPS[v] for v in values[n * n:]])


def padded(matrix, ops):
    """A cell of fewer than 7 vertices spelled with 7, as NASLib's `convert_to_cell` does: the output moves
    to vertex 6 and the new vertices before it get conv3x3 and no edges, so pruning removes them again."""
    matrix, ops = as_spec(matrix, ops)
    n = len(matrix)
    if n > MAX_VERTICES:
        raise HnasError(f"cannot pad an NB101 cell of {n} vertices to {MAX_VERTICES}")
    position = list(range(n - 1)) + [MAX_VERTICES - 1]
    rows = [[0] * MAX_VERTICES for _ in range(MAX_VERTICES)]
    for x in range(n):
        for y in range(n):
            rows[position[x]][position[y]] = matrix[x][y]
    return as_spec(rows, ops[:-1] + (OPS[0],) * (MAX_VERTICES - n) + ops[-1:])
