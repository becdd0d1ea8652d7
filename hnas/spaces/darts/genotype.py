"""DARTS genotypes (darts.md §1): the op names, the `Genotype` record, its string form and the named cells.

A genotype holds two cells, `normal` and `reduce`, each 8 `(op, input)` genes: genes 2i and 2i+1 feed node
i+2 (i = 0..3), whose value is their sum; input 0 and 1 are the cell's two inputs, j >= 2 an earlier node.
The cell outputs the channel concat of its `*_concat` nodes (2..5 in every DARTS-style genotype).

The string form writes a cell as `op@input,op@input|...` (node 2 | node 3 | node 4 | node 5, the notation of
darts.md §1.2), and the genotype as `normal=<cell>;reduce=<cell>`, adding `;normal_concat=2,3,4` (or
`reduce_concat`) only where a concat is not 2..5. Gene order is kept as written: it is the order in which a
network creates its ops, hence their random init, and the reference's pool keys on it (darts.md §2.1).
`parse_genotype` also reads the form DARTS and HNAS print, `Genotype(normal=[('sep_conv_3x3', 0), ...], ...)`,
and the names of `NAMED`.
"""

import ast
from typing import NamedTuple, Tuple

from hnas.errors import HnasError

# The order is the column order of the reference's architecture weights (darts.md §2.2).
PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
              "dil_conv_3x3", "dil_conv_5x5")
NODES = 4  # intermediate nodes per cell: 2..5
GENES = 2 * NODES
STANDARD_CONCAT = tuple(range(2, 2 + NODES))
CELLS = ("normal", "reduce")
FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


class Genotype(NamedTuple):
    normal: Tuple[Tuple[str, int], ...]
    normal_concat: Tuple[int, ...]
    reduce: Tuple[Tuple[str, int], ...]
    reduce_concat: Tuple[int, ...]


def node_of(gene):
    """The node (2..5) that gene number `gene` (0..7) of a cell feeds."""
    return gene // 2 + 2


def _malformed(text, why):
    return HnasError(
        f"malformed DARTS genotype {text!r}: {why}.\n"
        "Expected normal=<cell>;reduce=<cell>, a cell being 4 nodes separated by '|', each two genes op@input "
        "separated by ',' (node k = 2..5 takes inputs 0..k-1; 0 and 1 are the cell inputs), with op one of "
        f"{', '.join(PRIMITIVES)}; for example\n  {EXAMPLE}\n"
        "or Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...], "
        f"reduce_concat=range(2, 6)) as DARTS logs print it, or a name: {', '.join(NAMED)}")


def _checked(text, fields):
    """The Genotype of {field: value} (concats optional), or HnasError naming what is wrong."""
    values = {}
    for cell in CELLS:
        genes = fields.get(cell)
        if not isinstance(genes, (tuple, list)):
            raise _malformed(text, f"the {cell} cell is missing" if genes is None
                             else f"the {cell} cell {genes!r} is not a list of (op, input) pairs")
        if len(genes) != GENES:
            raise _malformed(text, f"the {cell} cell has {len(genes)} (op, input) genes, expected {GENES} "
                                   f"(2 for each of the nodes 2..{NODES + 1})")
        for g, gene in enumerate(genes):
            if not (isinstance(gene, (tuple, list)) and len(gene) == 2):
                raise _malformed(text, f"gene {gene!r} of the {cell} cell is not an (op, input) pair")
            op, source = gene
            if op not in PRIMITIVES:
                raise _malformed(text, f"unknown op {op!r} in the {cell} cell")
            if type(source) is not int or not 0 <= source < node_of(g):
                raise _malformed(text, f"input {source!r} of {op} on node {node_of(g)} of the {cell} cell is out "
                                       f"of range: node {node_of(g)} takes inputs 0..{node_of(g) - 1}")
        concat = fields.get(cell + "_concat", STANDARD_CONCAT)
        concat = tuple(concat) if isinstance(concat, (tuple, list, range)) else concat
        if not (isinstance(concat, tuple) and concat and all(type(c) is int for c in concat)
                and list(concat) == sorted(set(concat)) and set(concat) <= set(STANDARD_CONCAT)):
            raise _malformed(text, f"{cell}_concat {concat!r} must be increasing node numbers among "
                                   f"2..{NODES + 1}")
        values[cell] = tuple((op, source) for op, source in genes)
        values[cell + "_concat"] = concat
    return Genotype(**values)


def _cell_string(genes):
    return "|".join(",".join(f"{op}@{source}" for op, source in genes[i:i + 2]) for i in range(0, GENES, 2))


def genotype_string(genotype):
    """The string form of a Genotype (module docstring); parse_genotype reads it back exactly."""
    g = _checked(genotype, genotype._asdict())
    parts = []
    for cell in CELLS:
        parts.append(f"{cell}={_cell_string(getattr(g, cell))}")
        concat = getattr(g, cell + "_concat")
        if concat != STANDARD_CONCAT:
            parts.append(f"{cell}_concat={','.join(map(str, concat))}")
    return ";".join(parts)


def _is_number(text):
    return text.isascii() and text.isdigit()


def _parse_cell(text, cell, value):
    nodes = value.split("|")
    if len(nodes) != NODES:
        raise _malformed(text, f"the {cell} cell has {len(nodes)} nodes separated by '|', expected {NODES}")
    genes = []
    for i, node in enumerate(nodes):
        pairs = node.split(",")
        if len(pairs) != 2:
            raise _malformed(text, f"node {i + 2} of the {cell} cell has {len(pairs)} genes, expected 2")
        for pair in pairs:
            op, at, source = pair.strip().partition("@")
            if not at or not _is_number(source.strip()):
                raise _malformed(text, f"gene {pair.strip()!r} of the {cell} cell should read op@input")
            genes.append((op.strip(), int(source)))
    return genes


def _parse_concat(text, key, value):
    items = [item.strip() for item in value.split(",")]
    if not all(_is_number(item) for item in items):
        raise _malformed(text, f"{key}={value!r} should list node numbers separated by ','")
    return [int(item) for item in items]


def _parse_short(text):
    fields = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in FIELDS:
            raise _malformed(text, f"{part.strip()!r} is not one of {', '.join(k + '=...' for k in FIELDS)}")
        if key in fields:
            raise _malformed(text, f"{key} is given twice")
        fields[key] = _parse_cell(text, key, value) if key in CELLS else _parse_concat(text, key, value)
    return _checked(text, fields)


def _literal(text, node):
    """The value of one keyword of the repr form: a Python literal, or range(a, b) of two integers."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        bounds = [arg.value for arg in node.args if isinstance(arg, ast.Constant)]
        if node.keywords or len(bounds) != len(node.args) or not 1 <= len(bounds) <= 2 \
                or not all(type(b) is int for b in bounds):
            raise _malformed(text, f"{ast.unparse(node)} is not range(start, stop) of two integers")
        return range(*bounds)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        raise _malformed(text, f"{ast.unparse(node)} is not a literal list of (op, input) pairs or node numbers") \
            from None


def _parse_repr(text):
    """The `Genotype(normal=[...], ...)` form, read without evaluating it (only literals and range)."""
    try:
        call = ast.parse(text, mode="eval").body
    except SyntaxError as error:
        raise _malformed(text, f"it is not valid Genotype(...) syntax ({error.msg})") from None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"):
        raise _malformed(text, "it is not a single Genotype(...) expression")
    if call.args:
        raise _malformed(text, "Genotype(...) takes keyword arguments only (normal=..., reduce=...)")
    fields = {}
    for keyword in call.keywords:
        if keyword.arg not in FIELDS:
            raise _malformed(text, f"unknown field {keyword.arg!r}; the fields are {', '.join(FIELDS)}")
        if keyword.arg in fields:
            raise _malformed(text, f"{keyword.arg} is given twice")
        fields[keyword.arg] = _literal(text, keyword.value)
    return _checked(text, fields)


def parse_genotype(text):
    """The Genotype of its string form, of the `Genotype(...)` form DARTS and HNAS print, or of a name in
    NAMED; HnasError saying what is wrong and what a valid string looks like otherwise."""
    if not isinstance(text, str):
        raise _malformed(text, f"expected a string, got {type(text).__name__}")
    text = text.strip()
    if text in NAMED:
        return NAMED[text]
    if text.startswith("Genotype"):
        return _parse_repr(text)
    return _parse_short(text)


def _named(normal, reduce):
    """A genotype written as darts.md §1.2 writes it (the short cell form with spaces), concats 2..5."""
    return _checked(normal, {"normal": _parse_cell(normal, "normal", normal),
                             "reduce": _parse_cell(reduce, "reduce", reduce)})


NAMED = {
    # DARTS first and second order [quark0/darts cnn/genotypes.py]
    "DARTS_V1": _named(
        "sep_conv_3x3@1, sep_conv_3x3@0 | skip_connect@0, sep_conv_3x3@1 | skip_connect@0, sep_conv_3x3@1 "
        "| sep_conv_3x3@0, skip_connect@2",
        "max_pool_3x3@0, max_pool_3x3@1 | skip_connect@2, max_pool_3x3@0 | max_pool_3x3@0, skip_connect@2 "
        "| skip_connect@2, avg_pool_3x3@0"),
    "DARTS_V2": _named(
        "sep_conv_3x3@0, sep_conv_3x3@1 | sep_conv_3x3@0, sep_conv_3x3@1 | sep_conv_3x3@1, skip_connect@0 "
        "| skip_connect@0, dil_conv_3x3@2",
        "max_pool_3x3@0, max_pool_3x3@1 | skip_connect@2, max_pool_3x3@1 | max_pool_3x3@0, skip_connect@2 "
        "| skip_connect@2, max_pool_3x3@1"),
    # P-DARTS [chenxin061/pdarts genotypes.py]
    "PDARTS": _named(
        "skip_connect@0, dil_conv_3x3@1 | skip_connect@0, sep_conv_3x3@1 | sep_conv_3x3@1, sep_conv_3x3@3 "
        "| sep_conv_3x3@0, dil_conv_5x5@4",
        "avg_pool_3x3@0, sep_conv_5x5@1 | sep_conv_3x3@0, dil_conv_5x5@2 | max_pool_3x3@0, dil_conv_3x3@1 "
        "| dil_conv_3x3@1, dil_conv_5x5@3"),
    # TE-NAS [chenwydj/DARTS_evaluation genotypes.py]
    "TENAS_cifar10": _named(
        "dil_conv_3x3@0, sep_conv_5x5@1 | sep_conv_3x3@0, sep_conv_3x3@2 | skip_connect@0, dil_conv_5x5@1 "
        "| sep_conv_3x3@1, sep_conv_5x5@3",
        "sep_conv_5x5@0, sep_conv_5x5@1 | sep_conv_5x5@1, sep_conv_5x5@2 | sep_conv_3x3@1, sep_conv_3x3@3 "
        "| sep_conv_5x5@2, sep_conv_3x3@4"),
    "TENAS_imagenet": _named(
        "sep_conv_3x3@0, skip_connect@1 | dil_conv_5x5@1, sep_conv_3x3@2 | sep_conv_3x3@0, dil_conv_5x5@3 "
        "| sep_conv_3x3@0, dil_conv_3x3@4",
        "dil_conv_3x3@0, sep_conv_5x5@1 | dil_conv_3x3@0, sep_conv_3x3@2 | sep_conv_3x3@0, dil_conv_3x3@1 "
        "| sep_conv_3x3@0, sep_conv_5x5@4"),
    # RoBoT, found with HNAS's sampler (so no dil_conv_5x5) [hzf1174/RoBoT darts_space/genotypes.py]
    "ROBOT_cifar10": _named(
        "dil_conv_3x3@1, skip_connect@0 | dil_conv_3x3@2, max_pool_3x3@1 | avg_pool_3x3@0, sep_conv_5x5@1 "
        "| sep_conv_5x5@2, sep_conv_5x5@3",
        "max_pool_3x3@0, avg_pool_3x3@1 | avg_pool_3x3@2, skip_connect@0 | max_pool_3x3@2, max_pool_3x3@0 "
        "| sep_conv_5x5@4, skip_connect@3"),
    "ROBOT_cifar100": _named(
        "sep_conv_3x3@1, skip_connect@0 | avg_pool_3x3@2, max_pool_3x3@0 | sep_conv_3x3@1, sep_conv_3x3@3 "
        "| skip_connect@1, sep_conv_3x3@4",
        "sep_conv_5x5@1, avg_pool_3x3@0 | dil_conv_3x3@2, avg_pool_3x3@1 | max_pool_3x3@1, dil_conv_3x3@3 "
        "| avg_pool_3x3@1, avg_pool_3x3@4"),
    "ROBOT_imagenet": _named(
        "avg_pool_3x3@1, sep_conv_5x5@0 | dil_conv_3x3@2, sep_conv_3x3@0 | sep_conv_5x5@3, avg_pool_3x3@0 "
        "| skip_connect@1, sep_conv_3x3@0",
        "sep_conv_5x5@1, max_pool_3x3@0 | sep_conv_5x5@0, dil_conv_3x3@2 | max_pool_3x3@2, skip_connect@3 "
        "| sep_conv_3x3@3, sep_conv_3x3@0"),
}
NAMED["DARTS"] = NAMED["DARTS_V2"]  # as DARTS's genotypes.py aliases it
EXAMPLE = genotype_string(NAMED["DARTS_V2"])
