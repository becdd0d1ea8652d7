"""Train stage: train one architecture from scratch with a protocol of the `train` group (conf/train/) and
report its test accuracy.

    python run.py stage=train space=darts stage.arch=DARTS_V2 train=darts_cifar10 dataset=cifar10
    python run.py stage=train stage.from_result=outputs/search/<time> train=darts_cifar10 train.auxiliary=false
    torchrun --nproc_per_node=8 run.py stage=train space=darts stage.arch=DARTS_V2 train=darts_imagenet \
        dataset=imagenet hydra.run.dir=<folder>

The space builds the network (`build_for_training`); the protocol sets everything else. Writes into the run
folder (rank 0 only, under torchrun):
- `checkpoint.pt` after every epoch (hnas.train.checkpoint). A rerun in the same folder
  (`hydra.run.dir=<folder>`) with the same settings resumes from it and ends with bitwise the same weights
  as a run never stopped; a finished run only rewrites result.json;
- `metrics.csv`: one row per epoch (lr, drop-path probability, train loss, accuracy and images, test loss,
  top-1 / top-5 accuracy and images, images/s, seconds), rewritten from the checkpoint's history;
- `tb/`: TensorBoard scalars per epoch;
- `result.json` at the end: the architecture, space, dataset, protocol, final and best test accuracy,
  parameters (in millions, without the auxiliary head, as DARTS counts), multiply-adds of one image, wall
  time, images/s, device and number of processes.
"""

import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from hnas.errors import HnasError
from hnas.app import run_overrides
from hnas.io import atomic_write_json, atomic_write_text
from hnas.spaces import create_space, space_options
from hnas.train import checkpoint, distributed
from hnas.train.counting import count_macs, count_parameters
from hnas.train.data import input_size, make_loaders
from hnas.train.loop import Steps, evaluate, train_epoch
from hnas.train.schedule import lr_at, set_lr

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "lr", "drop_path_prob", "train_loss", "train_top1", "train_images", "test_loss",
                  "test_top1", "test_top5", "test_images", "images_per_s", "seconds")


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
    """What a checkpoint must have been trained with to be resumed (plain values). Not train.workers: other
    workers only draw other augmentations (so the resumed run is not bitwise the uninterrupted one)."""
    train = OmegaConf.to_container(OmegaConf.structured(cfg.train), enum_to_str=True)
    train.pop("workers")
    return {"space": cfg.space.name, "space_options": {k: str(v) for k, v in space_options(cfg.space).items()},
            "arch": arch, "dataset": cfg.dataset.name, "seed": cfg.seed, "train": train}


def _seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg, out_dir, world):
    tcfg = cfg.train
    space = create_space(cfg.space.name, **space_options(cfg.space))
    arch = resolve_arch(cfg.stage, space)
    torch.backends.cudnn.deterministic = tcfg.deterministic
    torch.backends.cudnn.benchmark = not tcfg.deterministic
    side = input_size(cfg.dataset.name)
    _seed_all(cfg.seed)  # the same initial weights on every process
    model = space.build_for_training(arch, cfg.dataset.num_classes, init_channels=tcfg.init_channels,
                                     layers=tcfg.layers, auxiliary=tcfg.auxiliary, input_size=side)
    params_m, macs = count_parameters(model) / 1e6, count_macs(model, (3, side, side))
    steps = Steps(tcfg, world.device)
    model.to(world.device, memory_format=steps.memory_format)
    optimizer = torch.optim.SGD(model.parameters(), tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    scaler = torch.amp.GradScaler(world.device.type, enabled=steps.amp)
    _seed_all(cfg.seed + world.rank)  # each process its own augmentation and drop-path draws
    loaders = make_loaders(tcfg, cfg.dataset.name, cfg.seed, world)
    run_settings = settings(cfg, arch)
    history, elapsed = _resume(out_dir / checkpoint.FILE, run_settings, model, optimizer, scaler, world)
    start = len(history)
    log.info("train %s (%s, %.3fM parameters, %.1fM multiply-adds) on %s, protocol %s: epochs %d..%d of %d, "
             "%d processes on %s, %d training / %d test images", arch, space.name, params_m, macs / 1e6,
             cfg.dataset.name, tcfg.name, start + 1, tcfg.epochs, tcfg.epochs, world.size, world.device,
             loaders.train_images, loaders.test_images)
    net = model
    if world.size > 1:
        # find_unused_parameters: a cell may hold ops whose output nothing uses (NB201's zeroed edges)
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[world.local_rank] if world.device.type == "cuda" else None,
            find_unused_parameters=True)
    writer = None
    if world.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(out_dir / "tb"), purge_step=start)  # drops a killed run's extra points
    try:
        for epoch in range(start, tcfg.epochs):
            began = time.perf_counter()
            lr = lr_at(tcfg, epoch)
            set_lr(optimizer, lr)
            drop = tcfg.drop_path_prob * epoch / tcfg.epochs
            if hasattr(model, "drop_path_prob"):
                model.drop_path_prob = drop
            loaders.sampler.set_epoch(epoch)
            trained = train_epoch(net, loaders.train, optimizer, scaler, steps, world, tcfg.steps_per_epoch,
                                  desc=f"epoch {epoch + 1}/{tcfg.epochs}")
            world.share_buffers(model)
            tested = evaluate(model, loaders.test, steps, world)
            seconds = max(world.gather(time.perf_counter() - began))
            elapsed += seconds
            row = {"epoch": epoch + 1, "lr": lr, "drop_path_prob": drop, "train_loss": trained["loss"],
                   "train_top1": trained["top1"], "train_images": trained["images"], "test_loss": tested["loss"],
                   "test_top1": tested["top1"], "test_top5": tested["top5"], "test_images": tested["images"],
                   "images_per_s": trained["images_per_s"], "seconds": seconds}
            history.append(row)
            rng = world.gather(checkpoint.rng_state())  # a collective: every process takes part
            if world.main:
                checkpoint.save(out_dir / checkpoint.FILE, {
                    "settings": run_settings, "history": history, "elapsed_s": elapsed, "world_size": world.size,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "rng": rng})
                _write_metrics(out_dir / "metrics.csv", history)
                _tensorboard(writer, row)
                log.info("epoch %d/%d lr %.5g: train loss %.4f top-1 %.2f | test loss %.4f top-1 %.2f top-5 %.2f | "
                         "%.0f images/s, %.1f s", epoch + 1, tcfg.epochs, lr, row["train_loss"], row["train_top1"],
                         row["test_loss"], row["test_top1"], row["test_top5"], row["images_per_s"], seconds)
    finally:
        if writer is not None:
            writer.close()
    result = _result(cfg, arch, history, params_m, macs, elapsed, world)
    if world.main:
        atomic_write_json(out_dir / "result.json", result)
        log.info("trained %s: test top-1 %.2f (best %.2f), top-5 %.2f after %d epochs; %.3fM parameters; %.0f s",
                 arch, result["test_top1"], result["best_test_top1"], result["test_top5"], tcfg.epochs, params_m,
                 elapsed)
    world.barrier()
    result.pop("config")
    return result


def _result(cfg, arch, history, params_m, macs, elapsed, world):
    """result.json's content."""
    return {
        "arch": arch, "space": cfg.space.name, "dataset": cfg.dataset.name, "protocol": cfg.train.name,
        "epochs": cfg.train.epochs, "test_top1": history[-1]["test_top1"], "test_top5": history[-1]["test_top5"],
        "best_test_top1": max(r["test_top1"] for r in history), "train_loss": history[-1]["train_loss"],
        "params_m": params_m, "macs": macs, "wall_s": elapsed,
        "images_per_s": float(np.mean([r["images_per_s"] for r in history])), "device": str(world.device),
        "world_size": world.size, "seed": cfg.seed, "overrides": run_overrides(),
        "config": OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True),
    }


def _resume(path, run_settings, model, optimizer, scaler, world):
    """Load the run folder's checkpoint into the model, optimizer, scaler and generators; (history, seconds)
    so far, or ([], 0.0) without one."""
    saved = checkpoint.load(path)
    if saved is None:
        return [], 0.0
    if saved["settings"] != run_settings:
        differ = _differences(saved["settings"], run_settings)
        raise HnasError(f"{path} was trained with other settings ({'; '.join(differ)}), so this run cannot "
                        "resume it: set them back, or run in a new folder (hydra.run.dir=...)")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scaler.load_state_dict(saved["scaler"])
    states = saved["rng"]
    if len(states) != world.size:
        log.warning("%s was written by %d processes, this run has %d: it resumes, but not bitwise as the "
                    "uninterrupted run would have gone on", path, len(states), world.size)
    checkpoint.set_rng_state(states[world.rank % len(states)])
    log.info("resuming from %s after epoch %d", path, len(saved["history"]))
    return saved["history"], saved["elapsed_s"]


def _differences(old, new, prefix=""):
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return out


def _write_metrics(path, history):
    lines = [",".join(METRIC_COLUMNS)] + [",".join(repr(row[c]) for c in METRIC_COLUMNS) for row in history]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _tensorboard(writer, row):
    step = row["epoch"] - 1
    for key in ("train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "lr", "images_per_s"):
        writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train", "test")) else key, row[key], step)
    writer.flush()
