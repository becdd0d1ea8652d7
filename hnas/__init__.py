"""Training-free neural architecture search: metrics, HNAS search, baselines and reports."""

from hnas.errors import HnasError

__all__ = ["HnasError"]
