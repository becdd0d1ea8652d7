"""The registry of search spaces: `@register_space(name)` on the class where it is defined."""

from hnas.registry import Registry

SPACES = Registry("search space")


def register_space(name):
    return SPACES.register(name)


def create_space(name, **options):
    """The space `name` with its options (NB201: layout)."""
    return SPACES.get(name)(**options)


def list_spaces():
    return SPACES.names()


def space_options(space_cfg):
    """The options of a `space` config group (every key but `name`, enums as their values)."""
    return {key: getattr(value, "value", value) for key, value in space_cfg.items() if key != "name"}
