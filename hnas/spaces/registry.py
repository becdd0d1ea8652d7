"""The registry of search spaces: `@register_space(name)` on the class where it is defined. Each class names
its config dataclass (`schema`: a `name` field and the class's constructor arguments), which
hnas.config.register_configs stores as `schema/space/<name>` for the space's config option to start from."""

from dataclasses import fields

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
    """The options of a typed `space` config (its schema dataclass): every field but `name`, in the schema's
    order, enums as their values."""
    return {f.name: getattr(getattr(space_cfg, f.name), "value", getattr(space_cfg, f.name))
            for f in fields(space_cfg) if f.name != "name"}
