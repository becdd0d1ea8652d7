"""The official NAS-Bench-101 graph hash of a pruned cell (its `module_hash`), bit for bit.

A Weisfeiler-Lehman style hash (nasbench `graph_util.hash_module`): every vertex starts as the md5 of the text
of (out-degree, in-degree, label), then for as many rounds as there are vertices it becomes the md5 of its
in-neighbours' sorted hashes, its out-neighbours' sorted hashes and its own; the cell's hash is the md5 of the
text of the sorted vertex hashes. Labels: input -1, output -2, interior vertices their op's position in OPS.
Degrees are plain ints: with numpy 2 scalars the text would read "np.int64(3)" and every hash would change.
"""

import hashlib

OPS = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")  # the official `available_ops`, in its order


def _md5(text):
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def spec_hash(matrix, ops):
    """The module hash of a pruned cell: `matrix` a square 0/1 upper-triangular adjacency (nested sequences of
    anything int() accepts), `ops` its vertex ops, 'input' first and 'output' last."""
    edges = [[int(value) != 0 for value in row] for row in matrix]
    n = len(edges)
    labels = [-1] + [OPS.index(op) for op in ops[1:-1]] + [-2]
    out_degree = [sum(row) for row in edges]
    in_degree = [sum(edges[w][v] for w in range(n)) for v in range(n)]
    hashes = [_md5(str((out_degree[v], in_degree[v], labels[v]))) for v in range(n)]
    for _ in range(n):
        hashes = [_md5("".join(sorted(hashes[w] for w in range(n) if edges[w][v])) + "|"
                       + "".join(sorted(hashes[w] for w in range(n) if edges[v][w])) + "|" + hashes[v])
                  for v in range(n)]
    return _md5(str(sorted(hashes)))
