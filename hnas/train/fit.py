"""Train one architecture from scratch in a folder, resuming from its checkpoint: the code both the train
stage (hnas.stages.train) and the training oracle (hnas.oracles.TrainingOracle) run.

Writes into `out_dir` (rank 0 only, under torchrun):
- `checkpoint.pt` after every epoch (hnas.train.checkpoint). A rerun in the same folder with the same
  settings resumes from it and ends with bitwise the same weights as a run never stopped; a finished run
  trains nothing;
- `metrics.csv`: one row per epoch (lr, drop-path probability, train loss, accuracy and images, evaluation
  loss, top-1 / top-5 accuracy and images, images/s, seconds), rewritten from the checkpoint's history. The
  evaluation split is the test set, or with `train.holdout` the held-out part of the training set; with
  `train.eval_every_epoch=false` only the last epoch has evaluation values (the others NaN);
- `tb/`: TensorBoard scalars per epoch.
"""

import logging
import math
import random
import time
from dataclasses import dataclass

import numpy as np
import torch

from hnas.errors import HnasError
from hnas.io import atomic_write_text
from hnas.train import checkpoint
from hnas.train.counting import count_macs, count_parameters
from hnas.train.data import input_size, make_loaders
from hnas.train.loop import Steps, evaluate, train_epoch
from hnas.train.schedule import lr_at, set_lr

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "lr", "drop_path_prob", "train_loss", "train_top1", "train_images", "test_loss",
                  "test_top1", "test_top5", "test_images", "images_per_s", "seconds")
NOT_EVALUATED = {"loss": math.nan, "top1": math.nan, "top5": math.nan, "images": 0}


@dataclass
class Fitted:
    history: list  # one row (METRIC_COLUMNS) per epoch
    params_m: float  # without the auxiliary head, as DARTS counts
    macs: float  # multiply-adds of one image
    elapsed_s: float  # training and evaluation time, summed over every run that trained this folder
    loader_images: tuple  # (training images, evaluation images)
    trained_epochs: int  # epochs this call trained (0: the folder's checkpoint was already finished)


def protocol_settings(tcfg):
    """The values of protocol `tcfg` a checkpoint must have been trained with to be resumed (plain JSON
    values). Not `workers`: other loader processes only draw other augmentations (so a resumed run is then
    not bitwise the uninterrupted one)."""
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(OmegaConf.structured(tcfg), enum_to_str=True)
    settings.pop("workers")
    return settings


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(arch, space, tcfg, dataset, num_classes, seed, out_dir, world, run_settings, progress=True):
    """Train `arch` of `space` with protocol `tcfg` on `dataset` from seed `seed` in `out_dir`; `run_settings`
    (plain values) are what a checkpoint must have been written with to be resumed."""
    torch.backends.cudnn.deterministic = tcfg.deterministic
    torch.backends.cudnn.benchmark = not tcfg.deterministic
    side = input_size(dataset)
    seed_all(seed)  # the same initial weights on every process
    model = space.build_for_training(arch, num_classes, init_channels=tcfg.init_channels, layers=tcfg.layers,
                                     auxiliary=tcfg.auxiliary, input_size=side)
    params_m, macs = count_parameters(model) / 1e6, count_macs(model, (3, side, side))
    steps = Steps(tcfg, world.device)
    model.to(world.device, memory_format=steps.memory_format)
    optimizer = torch.optim.SGD(model.parameters(), tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    scaler = torch.amp.GradScaler(world.device.type, enabled=steps.amp)
    seed_all(seed + world.rank)  # each process its own augmentation and drop-path draws
    loaders = make_loaders(tcfg, dataset, seed, world)
    history, elapsed = _resume(out_dir / checkpoint.FILE, run_settings, model, optimizer, scaler, world)
    start = len(history)
    log.info("train %s (%s, %.3fM parameters, %.1fM multiply-adds) on %s, protocol %s: epochs %d..%d of %d, "
             "%d processes on %s, %d training / %d evaluation images", arch, space.name, params_m, macs / 1e6,
             dataset, tcfg.name, start + 1, tcfg.epochs, tcfg.epochs, world.size, world.device,
             loaders.train_images, loaders.test_images)
    net = model
    if world.size > 1:
        # find_unused_parameters: a cell may hold ops whose output nothing uses (NB201's zeroed edges)
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[world.local_rank] if world.device.type == "cuda" else None,
            find_unused_parameters=True)
    writer = None
    if world.main and start < tcfg.epochs:
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
                                  desc=f"epoch {epoch + 1}/{tcfg.epochs}", progress=progress)
            world.share_buffers(model)
            last = epoch + 1 == tcfg.epochs
            tested = evaluate(model, loaders.test, steps, world) if tcfg.eval_every_epoch or last else NOT_EVALUATED
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
                log.info("epoch %d/%d lr %.5g: train loss %.4f top-1 %.2f | eval loss %.4f top-1 %.2f top-5 %.2f | "
                         "%.0f images/s, %.1f s", epoch + 1, tcfg.epochs, lr, row["train_loss"], row["train_top1"],
                         row["test_loss"], row["test_top1"], row["test_top5"], row["images_per_s"], seconds)
    finally:
        if writer is not None:
            writer.close()
    return Fitted(history, params_m, macs, elapsed, (loaders.train_images, loaders.test_images),
                  len(history) - start)


def _resume(path, run_settings, model, optimizer, scaler, world):
    """Load the folder's checkpoint into the model, optimizer, scaler and generators; (history, seconds)
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
        if math.isfinite(row[key]):
            writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train", "test")) else key, row[key], step)
    writer.flush()
