"""Training-free neural architecture search: metrics, HNAS search, baselines and reports."""

from hnas.errors import HnasError

__version__ = "0.1.0"
__all__ = ["HnasError", "__version__"]
