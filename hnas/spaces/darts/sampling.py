"""HNAS's candidate pool in the DARTS space (darts.md §2.1-2.2): random architecture weights, parsed as DARTS
parses its supernet's weights.

The reference draws, right after `np.random.seed(seed)`, one uniform (28, 7) array per candidate: rows 0..13
are the normal cell's 14 edges, rows 14..27 the reduce cell's, node i owning the edges from inputs 0..i+1.
Each edge row is softmaxed over its columns (scipy's softmax, as the reference), and a candidate's genotype
is the parse of those weights. Column k is the weight of PRIMITIVES[k]; with 7 columns `dil_conv_5x5`
(column 7) is never chosen: the reference's quirk, which `columns=7` reproduces and `columns=8` lifts.
"""

import numpy as np

from hnas.spaces.darts.genotype import CELLS, NODES, PRIMITIVES, STANDARD_CONCAT, Genotype, genotype_string

EDGES = sum(range(2, 2 + NODES))  # 14 edges per cell: node i has i + 2 inputs
NONE = PRIMITIVES.index("none")


def parse_weights(weights):
    """The genotype of one candidate's architecture weights, shape (2, 14, columns) (the reference parses
    them softmaxed per edge row: `draw`).

    Per node: its input edges ranked by their largest weight over the ops other than `none`, the top two
    kept, strongest first (a tie goes to the lower input: a stable sort), each with its arg-max op other
    than `none` (a tie goes to the lower column) (darts.md §2.2)."""
    weights = np.asarray(weights)
    if weights.ndim != 3 or weights.shape[:2] != (len(CELLS), EDGES):
        raise ValueError(f"architecture weights have the shape ({len(CELLS)}, {EDGES}, columns), "
                         f"not {weights.shape}")
    ops = np.delete(weights, NONE, axis=-1)
    op_index = [k for k in range(weights.shape[-1]) if k != NONE]
    cells = []
    for cell in ops:
        genes, start = [], 0
        for node in range(NODES):
            rows = cell[start:start + node + 2]
            strongest = np.argsort(-rows.max(axis=1), kind="stable")[:2]
            genes.extend((PRIMITIVES[op_index[int(rows[j].argmax())]], int(j)) for j in strongest)
            start += node + 2
        cells.append(tuple(genes))
    return Genotype(cells[0], STANDARD_CONCAT, cells[1], STANDARD_CONCAT)


def draw(rng, columns):
    """One candidate's genotype from numpy RandomState `rng`, consuming 28 x `columns` uniform numbers."""
    # Imported here, not at the top: every run.py start imports this module, and scipy.special is slow to load.
    from scipy.special import softmax

    weights = rng.random_sample((len(CELLS) * EDGES, columns)).reshape(len(CELLS), EDGES, columns)
    return parse_weights(softmax(weights, axis=-1))


def first_distinct(n, seed, columns):
    """The canonical strings of the first `n` distinct genotypes the reference's pool draws with `seed`, in
    draw order (it keys its pool on the genotype's string, so duplicates keep their first place). A larger
    `n` extends a smaller one. The caller checks that the space holds `n` architectures."""
    rng = np.random.RandomState(seed)  # the same stream as the reference's np.random.seed(seed)
    pool = {}
    while len(pool) < n:
        pool.setdefault(genotype_string(draw(rng, columns)), None)
    return list(pool)
