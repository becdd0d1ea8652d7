"""One training epoch and one evaluation: SGD steps with the protocol's loss (label smoothing, auxiliary
head), gradient clipping, mixed precision and channels-last on CUDA; accuracy and loss summed over all
processes."""

import time
from contextlib import nullcontext

import torch
from torch import nn
from tqdm import tqdm


class Steps:
    """How a batch is run on `device`: memory format, autocast, the loss."""

    def __init__(self, cfg, device):
        cuda = device.type == "cuda"
        self.device = device
        self.memory_format = torch.channels_last if cuda and cfg.channels_last else torch.contiguous_format
        self.amp = cuda and cfg.amp
        self.train_loss = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.test_loss = nn.CrossEntropyLoss()
        self.auxiliary_weight = cfg.auxiliary_weight
        self.grad_clip = cfg.grad_clip

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()

    def batch(self, images, labels):
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        return images, labels.to(self.device, non_blocking=True)


def _sums(loss, logits, labels):
    """[loss x images, top-1 correct, top-5 correct] of a batch, on its device: no copy to or from the host,
    which would wait for the GPU at every step."""
    hits = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(labels[:, None])
    return torch.stack([loss.detach().double() * len(labels), hits[:, 0].sum().double(),
                        hits.any(dim=1).sum().double()])


def _totals(world, sums, count):
    """Loss, accuracies (%) and images over all processes."""
    loss_sum, top1, top5, images = world.sum([*sums.tolist(), count])
    return {"loss": loss_sum / images, "top1": 100 * top1 / images, "top5": 100 * top5 / images,
            "images": int(images)}


def train_epoch(model, loader, optimizer, scaler, steps, world, max_steps=None, desc="train", progress=True):
    """Train one epoch; {loss, top1, top5, images, seconds, images_per_s} over all processes. `progress`: a
    progress bar of the steps (rank 0 only)."""
    model.train()
    total = len(loader) if max_steps is None else min(max_steps, len(loader))
    sums, images_done = torch.zeros(3, dtype=torch.float64, device=steps.device), 0
    bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, mininterval=1.0,
               disable=not (world.main and progress),
               leave=False)
    start = time.perf_counter()
    for step, (images, labels) in enumerate(loader):
        if step == total:
            break
        images, labels = steps.batch(images, labels)
        optimizer.zero_grad(set_to_none=True)
        with steps.autocast():
            out = model(images)
            logits, aux = out if isinstance(out, tuple) else (out, None)
            loss = steps.train_loss(logits, labels)
            if aux is not None:
                loss = loss + steps.auxiliary_weight * steps.train_loss(aux, labels)
        scaler.scale(loss).backward()
        if steps.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), steps.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        sums += _sums(loss, logits.detach(), labels)
        images_done += len(labels)
        bar.update()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sums[0].item() / images_done:.3f}")
    bar.close()
    if steps.device.type == "cuda":
        torch.cuda.synchronize(steps.device)
    seconds = time.perf_counter() - start
    totals = _totals(world, sums, images_done)
    seconds = max(world.gather(seconds))  # the slowest process sets the pace of the whole run
    return {**totals, "seconds": seconds, "images_per_s": totals["images"] / seconds}


@torch.no_grad()
def evaluate(model, loader, steps, world):
    """Loss (plain cross-entropy) and top-1 / top-5 accuracy in % on the test set, over all processes."""
    model.eval()
    sums, images_done = torch.zeros(3, dtype=torch.float64, device=steps.device), 0
    for images, labels in loader:
        images, labels = steps.batch(images, labels)
        with steps.autocast():
            out = model(images)
        logits = (out[0] if isinstance(out, tuple) else out).float()
        sums += _sums(steps.test_loss(logits, labels), logits, labels)
        images_done += len(labels)
    return _totals(world, sums, images_done)
