"""The universe of a search: the architectures of a space that a search may propose, behind one adapter.

The universe is the whole space (in the order uniform draws index into: a benchmark's official index order,
which reproduces the reference's candidate pools) or a subset, such as the architectures of a metric table.
Every algorithm draws, mutates and samples its policy through it, so none proposes an architecture outside.
"""

from functools import cached_property

import numpy as np


class Universe:
    """`space`: a search space (hnas.spaces: `encode`, `decode`, `decisions`, `size`, `mutate`, `mutations`);
    `archs`: the universe, every architecture a search may propose, in draw order."""

    def __init__(self, space, archs):
        self.space = space
        self.archs = list(archs)

    def __len__(self):
        return len(self.archs)

    @property
    def decisions(self):
        return self.space.decisions

    def decode(self, choices):
        return self.space.decode(choices)

    @cached_property
    def members(self):
        """The universe as a set, for membership tests."""
        return frozenset(self.archs)

    @cached_property
    def is_whole(self):
        """True when the universe is every architecture of the space (then nothing needs restricting)."""
        return len(self.members) == self.space.size

    @cached_property
    def choice_indices(self):
        """(len(archs), decisions) int array: row i holds the option index of every decision of archs[i]."""
        position = [{option: k for k, option in enumerate(options)} for options in self.decisions]
        return np.array([[position[d][c] for d, c in enumerate(self.space.encode(arch))] for arch in self.archs],
                        dtype=np.int64)

    def sample(self, n, rng):
        """`n` uniform draws with replacement (numpy RandomState `rng`), as the HNAS reference samples.

        Drawing indices with `rng.choice(len(archs), n)` over the official index order reproduces the
        reference's candidate pools for the same seed.
        """
        return [self.archs[i] for i in rng.choice(len(self.archs), n)]

    def sample_distinct(self, n, rng):
        """`n` distinct architectures drawn uniformly (all of them if the universe is smaller)."""
        n = min(n, len(self.archs))
        return [self.archs[i] for i in rng.choice(len(self.archs), n, replace=False)]

    def mutate(self, arch, rng):
        """The space's mutation (NB201's: a node, one of its input edges, a different op), within the universe.

        Over the whole space that is exactly what is drawn. Within a smaller universe the child is drawn from
        that distribution conditioned on the child being in the universe: each neighbour in the universe is
        weighted by its probability under the space's mutation. When no neighbour is in the universe, the
        child is a uniform draw among the universe members (other than `arch`) at the smallest Hamming
        distance (number of differing decisions); a universe of `arch` alone leaves `arch` as the only child.
        """
        if self.is_whole:
            return self.space.mutate(arch, rng)
        neighbours = [(child, p) for child, p in self.space.mutations(arch) if child in self.members]
        if neighbours:
            weights = np.array([p for _, p in neighbours])
            return neighbours[rng.choice(len(neighbours), p=weights / weights.sum())][0]
        row = [options.index(c) for options, c in zip(self.decisions, self.space.encode(arch))]
        distance = (self.choice_indices != np.array(row)).sum(axis=1)
        distance[distance == 0] = len(self.decisions) + 1  # `arch` itself is no mutation: only if nothing else
        nearest = np.flatnonzero(distance == distance.min())
        return self.archs[nearest[rng.randint(len(nearest))]]
