"""NAS-Bench-101 (Ying et al., ICML 2019) without TensorFlow: cell specs and their canonical form (spec), the
official hash (hashing) and the registered search space `nb101` (space)."""

from hnas.spaces.nb101.space import NB101Config, NB101Space

__all__ = ["NB101Config", "NB101Space"]
