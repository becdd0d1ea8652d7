"""Cell spaces: one op chosen per edge of a fixed DAG, every combination allowed (NAS-Bench-201, toy spaces).

An architecture is a string; `encode` turns it into a tuple of ops (one per edge), `decode` back. The class
gives what every such space shares: enumeration, seeded sampling, the per-architecture seed of its network,
the categorical decisions REINFORCE's policy samples, and NAS-Bench-201's one-edge mutation for REA.
"""

import itertools
import random

import torch

from hnas.errors import HnasError


class CellSpace:
    """Subclasses set `name`, `edges` ((to node, from node) pairs in encoding order) and `ops`, and define
    `encode(arch) -> tuple of ops` (raising HnasError on a malformed string), `decode(ops) -> arch` and,
    for metrics, `build(arch, num_classes) -> nn.Module`."""

    name = ""
    edges = ()
    ops = ()

    @property
    def size(self):
        return len(self.ops) ** len(self.edges)

    @property
    def decisions(self):
        """The options of every decision, in encoding order (for a policy over the space)."""
        return tuple(tuple(self.ops) for _ in self.edges)

    def validate(self, arch):
        """The canonical string of a valid architecture; HnasError naming the problem otherwise."""
        return self.decode(self.encode(arch))

    def all_archs(self):
        """Every architecture, in the order of itertools.product over the edges' ops."""
        return [self.decode(ops) for ops in itertools.product(self.ops, repeat=len(self.edges))]

    def sample_distinct(self, n, seed):
        """`n` distinct architectures drawn uniformly without replacement, reproducibly from `seed`: the first
        `n` of one seeded shuffle, so a larger sample extends a smaller one with the same seed (a metric table
        of `stage.limit=1000` is the start of `stage.limit=5000`)."""
        if not 0 <= n <= self.size:
            raise HnasError(f"cannot sample {n} {self.name} architectures: the space has {self.size}")
        archs = self.all_archs()
        random.Random(seed).shuffle(archs)
        return archs[:n]

    def arch_seed(self, run_seed, arch):
        """The seed of `arch`'s network: depends only on (run seed, architecture), not on the order in which
        architectures are built: the ops as the digits of a number in base len(ops), offset by the run seed."""
        index = sum(self.ops.index(op) * len(self.ops) ** i for i, op in enumerate(self.encode(arch)))
        return (int(run_seed) * 1_000_003 + index) % (2**63 - 1)

    def build_seeded(self, arch, run_seed, num_classes):
        """`build` with weights drawn from the architecture's own seed, leaving the global RNG state alone."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.arch_seed(run_seed, arch))
            return self.build(arch, num_classes)

    def _nodes(self):
        return sorted({to for to, _ in self.edges})

    def _input_edges(self, node):
        return [e for e, (to, _) in enumerate(self.edges) if to == node]

    def mutate(self, arch, rng):
        """NAS-Bench-201's mutation: a node uniformly, one of its input edges uniformly (so an edge into node 1
        is picked more often than one into node 3), then a different op uniformly (numpy RandomState `rng`)."""
        choices = list(self.encode(arch))
        nodes = self._nodes()
        node = nodes[rng.randint(len(nodes))]
        inputs = self._input_edges(node)
        edge = inputs[rng.randint(len(inputs))]
        others = [op for op in self.ops if op != choices[edge]]
        choices[edge] = others[rng.randint(len(others))]
        return self.decode(tuple(choices))

    def mutations(self, arch):
        """[(child, probability)] of `mutate(arch)`: every one-edge change with NB201's probability."""
        choices = tuple(self.encode(arch))
        nodes = self._nodes()
        out = []
        for node in nodes:
            inputs = self._input_edges(node)
            for edge in inputs:
                for op in self.ops:
                    if op != choices[edge]:
                        child = self.decode(choices[:edge] + (op,) + choices[edge + 1:])
                        out.append((child, 1.0 / (len(nodes) * len(inputs) * (len(self.ops) - 1))))
        return out
