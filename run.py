"""The single entry point: `python run.py stage=<stage> space=nb201 metric=snip seed=0` (see --help)."""

import hydra

from hnas.app import execute
from hnas.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    return execute(cfg)


if __name__ == "__main__":
    main()
