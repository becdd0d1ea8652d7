"""Search spaces, each a class registered where it is defined (hnas.spaces.registry).

    from hnas.spaces import create_space, list_spaces
    space = create_space("nb201", layout="reference")
"""

from hnas.spaces.registry import SPACES, create_space, list_spaces, register_space, space_options
from hnas.spaces import nb201  # noqa: E402,F401  (registers nb201)
from hnas.spaces import nb101  # noqa: E402,F401  (registers nb101)
from hnas.spaces import darts  # noqa: E402,F401  (registers darts)

__all__ = ["SPACES", "create_space", "list_spaces", "register_space", "space_options"]
