"""The universe of a search: the architectures of a space that a search may propose, behind one adapter.

The universe is the whole space (in the order uniform draws index into: a benchmark's official index order,
which reproduces the reference's candidate pools) or a subset, such as the architectures of a metric table.
A space too large to list (DARTS) is a universe without a list: its draws come from the space's own sampler
(`space.sample(n, rng)`). Every algorithm draws, mutates and samples its policy through it, so none proposes
an architecture outside.
"""

from functools import cached_property

import numpy as np


class Universe:
    """`space`: a search space (hnas.spaces: `encode`, `decode`, `decisions`, `size`, `mutate`, `mutations`);
    `archs`: the universe, every architecture a search may propose, in draw order; None: the whole space,
    unlisted (then the space has `sample(n, rng)`)."""

    def __init__(self, space, archs=None):
        self.space = space
        self.archs = None if archs is None else list(archs)

    def __len__(self):
        if self.archs is None:  # 2.3e19 for DARTS: more than len() can return
            raise TypeError(f"the universe of all of {self.space.name} is not listed; its size is space.size")
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
        return self.archs is None or len(self.members) == self.space.size

    @cached_property
    def choice_indices(self):
        """(len(archs), decisions) int array: row i holds the option index of every decision of archs[i]."""
        position = [{option: k for k, option in enumerate(options)} for options in self.decisions]
        return np.array([[position[d][c] for d, c in enumerate(self.space.encode(arch))] for arch in self.archs],
                        dtype=np.int64)

    def sample(self, n, rng):
        """`n` uniform draws with replacement (numpy RandomState `rng`), as the HNAS reference samples.

        Drawing indices with `rng.choice(len(archs), n)` over the official index order reproduces the
        reference's candidate pools for the same seed. An unlisted space draws as its reference does
        (DARTS: HNAS's random architecture weights).
        """
        if self.archs is None:
            return self.space.sample(n, rng)
        return [self.archs[i] for i in rng.choice(len(self.archs), n)]

    def distinct_draws(self, rng):
        """Distinct uniform draws, one at a time, until the universe is exhausted: a seeded permutation of a
        listed universe; the space's own draws, repeats skipped, of an unlisted one."""
        if self.archs is not None:
            for i in rng.permutation(len(self.archs)):
                yield self.archs[i]
            return
        seen = set()
        while len(seen) < self.space.size:
            [arch] = self.space.sample(1, rng)
            if arch not in seen:
                seen.add(arch)
                yield arch

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
