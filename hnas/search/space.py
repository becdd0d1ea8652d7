"""What search algorithms need from a cell search space, behind one small adapter.

An architecture is a string; the adapter knows the list of all of them (for uniform sampling), the edges and
their candidate ops (for REINFORCE's policy and REA's mutation), and how to turn op choices into a string.
"""


class CellSpace:
    """A space of cells with one op per edge, every combination allowed.

    `archs`: every architecture string, in the order uniform draws index into. `edges`: (to node, from node)
    pairs in the order `decode` expects; `ops`: the candidate ops of every edge; `decode(choices)` turns a
    tuple of ops (one per edge) into a string, `encode(arch)` back.
    """

    def __init__(self, name, archs, edges, ops, encode, decode):
        self.name = name
        self.archs = list(archs)
        self.edges = tuple(edges)
        self.ops = tuple(ops)
        self.encode = encode
        self.decode = decode

    def __len__(self):
        return len(self.archs)

    def sample(self, n, rng):
        """`n` uniform draws with replacement (numpy RandomState `rng`), as the HNAS reference samples.

        Drawing indices with `rng.choice(len(archs), n)` over the official index order reproduces the
        reference's candidate pools for the same seed.
        """
        return [self.archs[i] for i in rng.choice(len(self.archs), n)]

    def sample_distinct(self, n, rng):
        """`n` distinct architectures drawn uniformly (all of them if the space is smaller)."""
        n = min(n, len(self.archs))
        return [self.archs[i] for i in rng.choice(len(self.archs), n, replace=False)]

    def mutate(self, arch, rng):
        """Change the op of one edge to a different op, as NAS-Bench-201's REA does.

        The edge is chosen as NB201 chooses it: a node uniformly, then one of that node's input edges
        uniformly (so an edge into node 1 is picked more often than one into node 3).
        """
        choices = list(self.encode(arch))
        nodes = sorted({to for to, _ in self.edges})
        node = nodes[rng.randint(len(nodes))]
        inputs = [e for e, (to, _) in enumerate(self.edges) if to == node]
        edge = inputs[rng.randint(len(inputs))]
        others = [op for op in self.ops if op != choices[edge]]
        choices[edge] = others[rng.randint(len(others))]
        return self.decode(tuple(choices))


def nb201_space(archs=None):
    """The NAS-Bench-201 cell space; `archs` in the benchmark's official index order when available."""
    from hnas.spaces import nb201

    # A partial benchmark table gives fewer: sampling stays within it, but REA / REINFORCE may propose an
    # architecture the table lacks (the table then raises an error naming it).
    archs = list(archs) if archs is not None else nb201.all_archs()
    return CellSpace(nb201.NAME, archs, nb201.EDGES, nb201.OPS, nb201.parse, nb201.to_string)
