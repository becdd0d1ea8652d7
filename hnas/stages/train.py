"""Train stage: train one architecture from scratch with a protocol of the `train` group (conf/train/) and
report its test accuracy.

    python run.py stage=train space=darts stage.arch=DARTS_V2 train=darts_cifar10 dataset=cifar10
    python run.py stage=train stage.from_result=outputs/search/<time> train=darts_cifar10 train.auxiliary=false
    torchrun --nproc_per_node=8 run.py stage=train space=darts stage.arch=DARTS_V2 train=darts_imagenet \
        dataset=imagenet hydra.run.dir=<folder>

The space builds the network (`build_for_training`); the protocol sets everything else. The run folder gets
what hnas.train.fit writes (`checkpoint.pt` after every epoch, so a rerun in the same folder,
`hydra.run.dir=<folder>`, resumes bitwise exactly; `metrics.csv`; `tb/`) and, rank 0 only, `result.json` at
the end: the architecture, space, dataset, protocol, final and best test accuracy,
  parameters (in millions, without the auxiliary head, as DARTS counts), multiply-adds of one image, wall
  time, images/s, device and number of processes.
"""

import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from hnas.app import run_overrides
from hnas.errors import HnasError
from hnas.io import atomic_write_json
from hnas.spaces import create_space, space_options
from hnas.train import distributed
from hnas.train.fit import fit, protocol_settings

log = logging.getLogger(__name__)


def run(cfg, out_dir):
    world = distributed.start(cfg.device, cfg.jobs_per_gpu)
    try:
        # Every process reads the checkpoint of rank 0's folder (Hydra may time-stamp the others differently).
        return train(cfg, Path(world.from_main(str(out_dir))), world)
    finally:
        distributed.stop(world)


def resolve_arch(stage, space):
    """The architecture to train, in the space's canonical form: `stage.arch`, or the one a search run chose
    (`stage.from_result`: its result.json or its folder)."""
    if stage.arch is None and stage.from_result is None:
        raise HnasError("stage=train needs an architecture: stage.arch=<arch string or named genotype> or "
                        "stage.from_result=<a search run's folder or its result.json>")
    if stage.arch is not None:
        return space.validate(stage.arch)
    path = Path(stage.from_result).expanduser()
    path = path / "result.json" if path.is_dir() else path
    try:
        result = json.loads(path.read_text())
        arch, searched_in = result["arch"], result.get("space", space.name)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise HnasError(f"stage.from_result={stage.from_result!r}: cannot read a search result's 'arch' from "
                        f"{path} ({type(error).__name__}: {error}); name a search run's folder or its "
                        "result.json") from None
    if searched_in != space.name:
        raise HnasError(f"{path} holds an architecture of space {searched_in!r}, not {space.name!r}: "
                        f"add space={searched_in}")
    return space.validate(arch)


def settings(cfg, arch):
    """What a checkpoint must have been trained with to be resumed (plain values)."""
    return {"space": cfg.space.name, "space_options": {k: str(v) for k, v in space_options(cfg.space).items()},
            "arch": arch, "dataset": cfg.dataset.name, "seed": cfg.seed, "train": protocol_settings(cfg.train)}


def train(cfg, out_dir, world):
    space = create_space(cfg.space.name, **space_options(cfg.space))
    arch = resolve_arch(cfg.stage, space)
    fitted = fit(arch, space, cfg.train, cfg.dataset.name, cfg.dataset.num_classes, cfg.seed, out_dir, world,
                 settings(cfg, arch))
    result = _result(cfg, arch, fitted, world)
    if world.main:
        atomic_write_json(out_dir / "result.json", result)
        log.info("trained %s: test top-1 %.2f (best %.2f), top-5 %.2f after %d epochs; %.3fM parameters; %.0f s",
                 arch, result["test_top1"], result["best_test_top1"], result["test_top5"], cfg.train.epochs,
                 fitted.params_m, fitted.elapsed_s)
    world.barrier()
    result.pop("config")
    return result


def _result(cfg, arch, fitted, world):
    """result.json's content."""
    history = fitted.history
    return {
        "arch": arch, "space": cfg.space.name, "dataset": cfg.dataset.name, "protocol": cfg.train.name,
        "epochs": cfg.train.epochs, "test_top1": history[-1]["test_top1"], "test_top5": history[-1]["test_top5"],
        "best_test_top1": max(r["test_top1"] for r in history), "train_loss": history[-1]["train_loss"],
        "params_m": fitted.params_m, "macs": fitted.macs, "wall_s": fitted.elapsed_s,
        "images_per_s": float(np.mean([r["images_per_s"] for r in history])), "device": str(world.device),
        "world_size": world.size, "seed": cfg.seed, "overrides": run_overrides(),
        "config": OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True),
    }
