"""Training found architectures to convergence: not built yet."""

from hnas.errors import HnasError


def run(cfg, out_dir):
    raise HnasError(
        "stage=train is not built yet. Available stages: precompute (metric tables), search (HNAS and "
        "baselines), report (correlation and search reports)."
    )
