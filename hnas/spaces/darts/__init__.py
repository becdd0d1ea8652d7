"""The DARTS search space (darts.md): genotypes and their strings (genotype), HNAS's candidate pool
(sampling), the registered space `darts` (space), its ops and networks (ops, network)."""

from hnas.spaces.darts.space import DartsConfig, DartsSpace

__all__ = ["DartsConfig", "DartsSpace"]
