"""Search spaces. A space is a module exposing validate, parse, all_archs, sample, build and build_seeded."""

from hnas.registry import Registry
from hnas.spaces import nb201

SPACES = Registry("search space")
SPACES.register(nb201.NAME)(nb201)


def get_space(name):
    return SPACES.get(name)


def list_spaces():
    return SPACES.names()
