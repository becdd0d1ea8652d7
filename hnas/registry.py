"""A small name -> object registry, shared by metrics, spaces and search algorithms."""

from hnas.errors import HnasError


class Registry:
    def __init__(self, kind):
        self.kind = kind
        self._items = {}

    def register(self, name):
        """Decorator: `@REGISTRY.register("name")` adds the decorated object under `name`."""

        def add(obj):
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name):
        try:
            return self._items[name]
        except KeyError:
            raise HnasError(
                f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self):
        return sorted(self._items)

    def __contains__(self, name):
        return name in self._items
