"""What search algorithms need from a cell search space, behind one small adapter.

An architecture is a string; the adapter knows the list of the architectures a search may use (its
universe: the whole space, or a subset such as the architectures of a metric table), the edges and their
candidate ops (for REINFORCE's policy and REA's mutation), and how to turn op choices into a string.
"""

from functools import cached_property

import numpy as np


class CellSpace:
    """A space of cells with one op per edge, every combination allowed, searched within a universe.

    `archs`: the universe, every architecture a search may propose, in the order uniform draws index into
    (all len(ops) ** len(edges) of them, or a subset). `edges`: (to node, from node) pairs in the order
    `decode` expects; `ops`: the candidate ops of every edge; `decode(choices)` turns a tuple of ops (one per
    edge) into a string, `encode(arch)` back.
    """

    def __init__(self, name, archs, edges, ops, encode, decode):
        self.name = name
        self.archs = list(archs)
        self.edges = tuple(edges)
        self.ops = tuple(ops)
        self.encode = encode
        self.decode = decode
        self._op_position = {op: k for k, op in enumerate(self.ops)}
        self._nodes = sorted({to for to, _ in self.edges})  # the nodes that have input edges

    def __len__(self):
        return len(self.archs)

    @cached_property
    def members(self):
        """The universe as a set, for membership tests."""
        return frozenset(self.archs)

    @cached_property
    def is_whole(self):
        """True when the universe is every architecture of the space (then nothing needs restricting)."""
        return len(self.members) == len(self.ops) ** len(self.edges)

    @cached_property
    def op_indices(self):
        """(len(archs), len(edges)) int array: row i holds the op index of every edge of archs[i]."""
        return np.array([self._codes(self.encode(arch)) for arch in self.archs], dtype=np.int64)

    def _codes(self, choices):
        return [self._op_position[op] for op in choices]

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

    def _input_edges(self, node):
        return [e for e, (to, _) in enumerate(self.edges) if to == node]

    def mutate(self, arch, rng):
        """Change the op of one edge to a different op, as NAS-Bench-201's REA does, within the universe.

        NB201's one-edge mutation: a node uniformly, then one of that node's input edges uniformly (so an
        edge into node 1 is picked more often than one into node 3), then a different op uniformly. Over the
        whole space that is exactly what is drawn. Within a smaller universe the child is drawn from that
        distribution conditioned on the child being in the universe: each one-edge neighbour in the universe
        is weighted by its NB201 probability. When no one-edge neighbour is in the universe, the child is a
        uniform draw among the universe members (other than `arch`) at the smallest Hamming distance (number
        of differing edges); a universe of `arch` alone leaves `arch` as the only child.
        """
        if not self.is_whole:
            return self._mutate_within_universe(arch, rng)
        choices = list(self.encode(arch))
        node = self._nodes[rng.randint(len(self._nodes))]
        inputs = self._input_edges(node)
        edge = inputs[rng.randint(len(inputs))]
        others = [op for op in self.ops if op != choices[edge]]
        choices[edge] = others[rng.randint(len(others))]
        return self.decode(tuple(choices))

    def _mutate_within_universe(self, arch, rng):
        choices = tuple(self.encode(arch))
        neighbours, weights = [], []
        for node in self._nodes:
            inputs = self._input_edges(node)
            for edge in inputs:
                for op in self.ops:
                    child = self.decode(choices[:edge] + (op,) + choices[edge + 1:])
                    if op != choices[edge] and child in self.members:
                        # NB201's probability of this child: node, then input edge, then one of the other ops.
                        neighbours.append(child)
                        weights.append(1.0 / (len(self._nodes) * len(inputs) * (len(self.ops) - 1)))
        if neighbours:
            weights = np.array(weights)
            return neighbours[rng.choice(len(neighbours), p=weights / weights.sum())]
        distance = (self.op_indices != np.array(self._codes(choices))).sum(axis=1)
        distance[distance == 0] = len(self.edges) + 1  # `arch` itself is no mutation: only if nothing else
        nearest = np.flatnonzero(distance == distance.min())
        return self.archs[nearest[rng.randint(len(nearest))]]


def nb201_space(archs=None):
    """The NAS-Bench-201 cell space; `archs` (the universe) in the benchmark's official index order when
    available. A universe smaller than the space (a partial benchmark table, or a metric table's
    architectures) restricts every algorithm, REA's mutation and REINFORCE's policy included, to it."""
    from hnas.spaces import nb201

    archs = list(archs) if archs is not None else nb201.all_archs()
    return CellSpace(nb201.NAME, archs, nb201.EDGES, nb201.OPS, nb201.parse, nb201.to_string)
