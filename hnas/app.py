"""What `run.py` does with a composed config: check it, point the library at its folders, run the stage."""

import importlib
import logging
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from hnas import paths
from hnas.errors import HnasError

log = logging.getLogger(__name__)


def _export_paths(config):
    # Library code reads the folders from the environment, so configs, env vars and tests agree on one source.
    os.environ[paths.DATA_ENV] = str(Path(config.paths.data_dir).expanduser().resolve())
    os.environ[paths.RESULTS_ENV] = str(Path(config.paths.results_dir).expanduser().resolve())


def execute(cfg):
    """Run the stage of a composed config: checked and turned into typed objects (hnas.config.validate)."""
    from hnas.allocator import keep_freed_memory
    from hnas.config import validate

    keep_freed_memory()
    try:
        config = validate(cfg)
        _export_paths(config)
        stage = importlib.import_module(f"hnas.stages.{config.stage.name}")
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        log.info("stage %s, output folder %s", config.stage.name, out_dir)
        return stage.run(config, out_dir)
    except HnasError as error:
        log.error("%s", error)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # not SystemExit: the sweep's other jobs still run, and the summary lists this one (callbacks)
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        log.error("interrupted; everything finished so far is saved, and a rerun resumes")
        sys.exit(130)


def run_overrides():
    """The command-line overrides (key=value strings) of the Hydra run in progress, or [] outside one
    (tests, library use): result files record them."""
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # HydraConfig was not set: no Hydra run
        return []
